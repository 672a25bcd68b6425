"""The options files of every ``basicsr reproduce`` stage, generated from one preset.

Every method gets the same training LMDB, patch size, batch, seed and encoder size (BasicSR's
RRDBNet trunk: ``num_feat``, ``num_block``, ``num_grow_ch``), and validates on the held-out crops.

=============== ============== =====================================================================
run             model          what
=============== ============== =====================================================================
L1_RRDB         SRModel        RRDBNet, L1 for ``l1 + baseflow`` iterations (the ladder's K = 0 rung, as long
                               as a BaseFlow with its pre-training); its checkpoint at ``l1`` iterations is
                               ESRGAN's pre-training and the flows' initial embedding (the paper's recipe)
ESRGAN          ESRGANModel    from L1_RRDB at ``l1``: BasicSR's L1 1e-2 + perceptual 1 + relativistic GAN 5e-3
BaseFlow_K<k>   AdFlowModel    NLL only, flow depth k
AdFlow_K<k>     AdFlowModel    from BaseFlow_K<k>'s EMA weights: NLL + relativistic GAN
=============== ============== =====================================================================
"""
import math
import os.path as osp

from adflow_plugin.utils import as_list

L1 = 'L1_RRDB'
ESRGAN = 'ESRGAN'


def baseflow(k):
    return f'BaseFlow_K{k}'


def adflow(k):
    return f'AdFlow_K{k}'


def train_runs(preset):
    """Training run names in the order they must run (each may start from an earlier one)."""
    ks = preset['ks']
    return [L1, ESRGAN] + [baseflow(k) for k in ks] + [adflow(k) for k in ks]


def needs(name):
    """The training runs whose weights run ``name`` starts from."""
    if name == L1:
        return []
    return [baseflow(flow_k(name))] if name.startswith('AdFlow') else [L1]


def run_kind(name):
    return 'l1' if name == L1 else 'esrgan' if name == ESRGAN else name.split('_')[0].lower()


def flow_k(name):
    return int(name.rsplit('_K', 1)[1]) if name.startswith(('BaseFlow', 'AdFlow')) else 0


def total_iters(name, preset):
    """Training iterations of run ``name``: the L1 rung also trains through the flows' NLL stage."""
    iters = preset['iters']
    return int(iters['l1'] + iters['baseflow']) if name == L1 else int(iters[run_kind(name)])


def pretrained_l1(preset):
    """The L1 RRDB's checkpoint at ``iters.l1``: ESRGAN's pre-training and the flows' initial embedding."""
    return checkpoint(L1, int(preset['iters']['l1']))


def checkpoint(name, which='latest'):
    """A run's generator checkpoint, relative to the working directory of the stages."""
    return osp.join('experiments', name, 'models', f'net_g_{which}.pth')


def sample_temperatures(name, preset):
    """The temperatures run ``name`` is sampled at for Table 2 and the picture (the paper's first)."""
    if name.startswith('AdFlow'):
        return [float(t) for t in as_list(preset['adflow_temperatures'])]
    if name.startswith('BaseFlow'):
        return [float(preset['baseflow_temperature'])]
    return []


def test_temperatures(name, preset):
    """Every temperature run ``name`` is tested at: its sampling temperatures, then (``test_mode``) a flow's
    mode, T = 0."""
    temps = sample_temperatures(name, preset)
    if temps and preset.get('test_mode') and 0.0 not in temps:
        temps.append(0.0)
    return temps


def embed_blocks(num_block):
    """RRDB blocks whose outputs form the flow's embedding: every block of a small trunk, else every other one
    from block 1 (the paper's 1, 4, 6, 8 of 23 are early and spread)."""
    return list(range(num_block)) if num_block <= 4 else list(range(1, num_block, 2))[:4]


def _rrdb(preset):
    return dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, num_feat=preset['num_feat'], num_block=preset['num_block'],
                num_grow_ch=preset['num_grow_ch'])


def _flow(preset, k):
    return dict(type='AdFlowNet', scale=preset['scale'], num_feat=preset['num_feat'], num_block=preset['num_block'],
                num_grow_ch=preset['num_grow_ch'], embed_blocks=embed_blocks(preset['num_block']), num_levels=3,
                flow_depth=k, num_transition=2, hidden_channels=preset['hidden'], rotation='random',
                coupling_scale='inv_sigmoid', pretrained_embed=pretrained_l1(preset))


def _discriminator(preset):
    return dict(type='VGGStyleDiscriminatorAnySize', num_in_ch=3, num_feat=preset['d_feat'],
                input_size=preset['gt_size'])


def _adam(lr):
    return dict(type='Adam', lr=float(lr), weight_decay=0, betas=[0.9, 0.99])


def _gan(weight):
    return dict(type='GANLoss', gan_type='vanilla', real_label_val=1.0, fake_label_val=0.0, loss_weight=float(weight))


def _metrics(preset, flow, samples):
    scale = preset['scale']
    m = dict(psnr=dict(type='calculate_psnr', crop_border=scale, test_y_channel=False),
             ssim=dict(type='calculate_ssim', crop_border=scale, test_y_channel=False))
    # BasicSR's SRModel does not pass the LR to metrics: the NTIRE variant, equal here since LR = bicubic(GT)
    m['lr_psnr'] = dict(type='calculate_lr_psnr') if flow else dict(type='calculate_lr_psnr', variant='ntire',
                                                                     scale=scale)
    m['lpips'] = dict(type='calculate_lpips', better='lower')
    if flow and samples > 1:
        m['lr_psnr_mean'] = dict(type='calculate_lr_psnr', reduction='mean')
        m['lr_psnr_worst'] = dict(type='calculate_lr_psnr', reduction='worst')
        m['diversity'] = dict(type='calculate_diversity')
    return m


def _paired(name, gt, lq, **extra):
    return dict(name=name, type='PairedImageDataset', dataroot_gt=gt, dataroot_lq=lq, io_backend=dict(type='disk'),
                **extra)


def train_options(name, preset, data):
    """The options dict of training run ``name``."""
    kind, k = run_kind(name), flow_k(name)
    iters = total_iters(name, preset)
    flow = kind in ('baseflow', 'adflow')
    train_set = dict(name='photos', type='PairedImageDataset', dataroot_gt=data['train_gt'],
                     dataroot_lq=data['train_lq'], filename_tmpl='{}', io_backend=dict(type='lmdb'),
                     gt_size=preset['gt_size'], use_hflip=True, use_rot=True, num_worker_per_gpu=0,
                     batch_size_per_gpu=preset['batch'], dataset_enlarge_ratio=1, prefetch_mode=None)
    val_freq = max(1, iters // preset['val_per_run'])
    opt = dict(name=name, model_type='AdFlowModel' if flow else 'ESRGANModel' if kind == 'esrgan' else 'SRModel',
               scale=preset['scale'], num_gpu=preset['num_gpu'], manual_seed=preset['seed'],
               datasets=dict(train=train_set, val=_paired('holdout', data['holdout_gt'], data['holdout_lq'])),
               network_g=_flow(preset, k) if flow else _rrdb(preset),
               path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
               train=dict(ema_decay=preset['ema_decay'], total_iter=iters, warmup_iter=-1,
                          scheduler=dict(type='MultiStepLR', milestones=[max(1, iters * 3 // 4)], gamma=0.5)),
               val=dict(val_freq=val_freq, save_img=False, metrics=_metrics(preset, flow, 1)),
               # the L1 rung also keeps its checkpoint at iters.l1, where the other methods start from it
               logger=dict(print_freq=max(1, min(100, iters // 10)), use_tb_logger=False,
                           save_checkpoint_freq=math.gcd(iters, int(preset['iters']['l1'])) if kind == 'l1' else iters,
                           wandb=dict(project=None, resume_id=None)))
    train = opt['train']
    if kind == 'l1':
        train.update(optim_g=_adam(preset['lr']), pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean'))
    elif kind == 'esrgan':
        w = preset['esrgan_weights']
        opt['network_d'] = _discriminator(preset)
        opt['path'].update(pretrain_network_g=pretrained_l1(preset), param_key_g='params_ema')
        train.update(optim_g=_adam(preset['lr_stage2']), optim_d=_adam(preset['lr_d']),
                     pixel_opt=dict(type='L1Loss', loss_weight=w['pixel'], reduction='mean'),
                     perceptual_opt=perceptual_options(w['perceptual']), gan_opt=_gan(w['gan']),
                     net_d_iters=1, net_d_init_iters=0)
    else:
        # stage 2 in SRFlow's per-pixel unit, to which the paper's adversarial weight is relative (stage 1:
        # bits per dimension; Adam does not see a constant scale of the loss)
        unit = 'bits_per_dim' if kind == 'baseflow' else 'bits_per_pixel_srflow'
        train.update(nll_opt=dict(type='FlowNLLLoss', loss_weight=1.0, quant=32, unit=unit),
                     grad_clip_norm=preset['grad_clip_norm'])
        opt['val'].update(temperature=sample_temperatures(name, preset)[:1], num_samples=1, seed=preset['seed'])
        if kind == 'baseflow':
            train.update(optim_g=_adam(preset['lr']))
        else:
            opt['network_d'] = _discriminator(preset)
            opt['path'].update(pretrain_network_g=checkpoint(baseflow(k)), param_key_g='params_ema')
            opt['network_g']['pretrained_embed'] = None  # the embedding comes with the BaseFlow weights
            train.update(optim_g=_adam(preset['lr_stage2']), optim_d=_adam(preset['lr_d']),
                         gan_opt=_gan(preset['gan_weight_adflow']), temperature=1.0)
            opt['val']['best_metric'] = 'lpips'  # the paper keeps the lowest-LPIPS checkpoint (training side)
    return opt


def perceptual_options(weight):
    """ESRGAN's perceptual term: BasicSR's VGG19 ``conv5_4`` when torchvision's VGG19 file is on disk, else the
    same term on the offline VGG16 features (``VGG16PerceptualLoss``, nothing downloaded)."""
    from basicsr.utils.registry import LOSS_REGISTRY
    import torch
    vgg19 = osp.join(torch.hub.get_dir(), 'checkpoints', 'vgg19-dcbb9e9d.pth')
    if osp.isfile(vgg19) or 'VGG16PerceptualLoss' not in LOSS_REGISTRY:
        return dict(type='PerceptualLoss', layer_weights={'conv5_4': 1}, vgg_type='vgg19', use_input_norm=True,
                    range_norm=False, perceptual_weight=float(weight), style_weight=0, criterion='l1')
    return dict(type='VGG16PerceptualLoss', perceptual_weight=float(weight), criterion='l1')


def test_options(name, preset, data, weights):
    """The options dict of ``basicsr test`` for run ``name`` on the evaluation photographs."""
    kind = run_kind(name)
    flow = kind in ('baseflow', 'adflow')
    samples = preset['num_samples'] if flow else 1
    train = train_options(name, preset, data)
    network_g = dict(train['network_g'])
    if flow:
        network_g['pretrained_embed'] = None
    opt = dict(name=f'test_{name}', model_type=train['model_type'], scale=preset['scale'], num_gpu=preset['num_gpu'],
               manual_seed=preset['seed'], datasets=dict(test_1=_paired('eval', data['eval_gt'], data['eval_lq'])),
               network_g=network_g, path=dict(pretrain_network_g=weights, param_key_g='params_ema',
                                              strict_load_g=True),
               val=dict(save_img=True, suffix=name, metrics=_metrics(preset, flow, samples)))
    if flow:
        opt['val'].update(temperature=test_temperatures(name, preset), num_samples=samples, seed=preset['seed'])
    return opt
