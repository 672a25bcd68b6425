"""Is there anything for stage 2's discriminator to learn? A discriminator trained alone against a frozen flow.

In stage 2 the discriminator and the generator move together, so a discriminator at chance can mean
either that the flow's samples are already indistinguishable from the real images at this size, or
that the adversarial dynamics never let it find the difference. This separates the two: it freezes a
trained generator (a BaseFlow or AdFlow checkpoint), trains the stage-2 discriminator alone with the
stage-2 loss (relativistic, as ``AdFlowModel._optimize_d``) on the training options' own data, and
measures it on crops it never saw.

* ``--fake flow`` (default): the flow's samples at ``--temperature`` from the LR patch.
* ``--fake bicubic``: the LR patch upscaled by bicubic interpolation, plus the same dequantisation noise as
  the reals: a positive control (blurry images, which any working discriminator separates).
* ``--fake real``: the HR patch with independent noise: the negative control (must stay at chance).

Real images are the dequantised HR patches (``train.real_noise: true``), or the clean HR with
``--clean-reals``. It prints the training accuracy (relativistic, as AdFlowModel logs it; mean of the
last 100 steps) every ``--every`` steps, and at the end the held-out pairwise accuracy
P(D(real crop) > D(fake of the same crop)) over ``--eval-crops`` random crops of the options'
validation images, or of ``--eval-gt``/``--eval-lq`` (eval mode), where 0.5 is chance.

    .venv/bin/python benchmarks/discriminator_probe.py -opt experiments/AdFlow_K4/train.yml \
        --weights experiments/BaseFlow_K4/models/net_g_latest.pth [--fake flow] [--iters 3000] [--lr 1e-4]
        [--num-feat 16] [--d-batch separate|joint] [--temperature 1.0] [--clean-reals]
"""
import argparse
import os
import random
import time

import numpy as np


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('-opt', required=True, help='a stage-2 (or stage-1) training options file: its network_g, '
                   'datasets.train, datasets.val and nll_opt.quant are used')
    p.add_argument('--weights', required=True, help='generator checkpoint (params_ema if present, else params)')
    p.add_argument('--fake', choices=('flow', 'bicubic', 'real'), default='flow')
    p.add_argument('--temperature', type=float, default=1.0)
    p.add_argument('--iters', type=int, default=3000)
    p.add_argument('--every', type=int, default=250)
    p.add_argument('--lr', type=float, default=None, help='discriminator lr (default: the options file\'s optim_d)')
    p.add_argument('--num-feat', type=int, default=None, help='discriminator width (default: the options file\'s)')
    p.add_argument('--d-type', help='discriminator architecture (default: the options file\'s network_d), e.g. '
                   'UNetDiscriminatorSN (Real-ESRGAN\'s per-pixel U-Net with spectral norm)')
    p.add_argument('--d-batch', choices=('separate', 'joint'), default='separate')
    p.add_argument('--clean-reals', action='store_true', help='real images without the dequantisation noise')
    p.add_argument('--min-detail', type=float, default=0.0,
                   help='train only on patches whose high-pass standard deviation (HR minus its 5x5 mean) is at '
                   'least this (the dequantisation noise has 0.009 at quant 32)')
    p.add_argument('--eval-crops', type=int, default=256)
    p.add_argument('--eval-gt', help='held-out HR folder (default: the options file\'s datasets.val)')
    p.add_argument('--eval-lq', help='its LR folder (with --eval-gt)')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args()


def load_generator(opt, weights):
    import torch
    from basicsr.archs import build_network
    net = build_network(dict(opt['network_g']))
    state = torch.load(weights, map_location='cpu', weights_only=True)
    net.load_state_dict(state['params_ema'] if 'params_ema' in state else state['params'])
    return net.eval()


def detail(gt):
    """Per-image detail of a batch in [0, 1], measured as ``basicsr reproduce`` filters its sub-images
    (``apps.reproduce.data.detail``: the standard deviation of the image minus its 5x5 mean)."""
    import torch
    from adflow_plugin.apps.reproduce.data import detail as image_detail
    images = (gt * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return torch.tensor([image_detail(img) for img in images])


def train_pairs(opt, batch, seed, min_detail=0.0):
    """Endless (gt, lq) batches from the options' training set through BasicSR's PairedImageDataset (only
    patches with at least ``min_detail``); also counts the patches seen and kept."""
    import torch
    from basicsr.data import build_dataset
    ds = build_dataset(dict(opt['datasets']['train'], phase='train', scale=opt['scale']))
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True, generator=g)
    gts, lqs = [], []
    while True:
        for data in loader:
            keep = detail(data['gt']) >= min_detail
            train_pairs.seen += len(keep)
            train_pairs.kept += int(keep.sum())
            gts.extend(data['gt'][keep])
            lqs.extend(data['lq'][keep])
            while len(gts) >= batch:
                yield torch.stack(gts[:batch]), torch.stack(lqs[:batch])
                gts, lqs = gts[batch:], lqs[batch:]


train_pairs.seen = train_pairs.kept = 0


def eval_pairs(opt, gt_size, count, seed, folders):
    """``count`` random aligned (gt, lq) crops of the options' validation images (or ``folders``' images)."""
    import torch
    from basicsr.data import build_dataset
    ds = build_dataset(dict(opt['datasets']['val'], phase='val', scale=opt['scale'], **folders))
    rng = np.random.default_rng(seed)
    images = [ds[i] for i in range(len(ds))]
    scale, lq_size = opt['scale'], gt_size // opt['scale']
    gts, lqs = [], []
    for i in range(count):
        item = images[i % len(images)]
        h, w = item['lq'].shape[1:]
        top, left = int(rng.integers(0, h - lq_size + 1)), int(rng.integers(0, w - lq_size + 1))
        lqs.append(item['lq'][:, top:top + lq_size, left:left + lq_size])
        gts.append(item['gt'][:, top * scale:(top + lq_size) * scale, left * scale:(left + lq_size) * scale])
    return torch.stack(gts), torch.stack(lqs)


def make_fakes(kind, net_g, gt, lq, noise, temperature, generator):
    import torch
    import torch.nn.functional as F
    with torch.no_grad():
        if kind == 'flow':
            return net_g.decode(temperature=temperature, cond=net_g.condition(lq), generator=generator)
        if kind == 'bicubic':
            up = F.interpolate(lq, size=gt.shape[2:], mode='bicubic', align_corners=False)
            return noise.dequantize(up)
        return noise.dequantize(gt)


def main():
    args = parse_args()
    import torch
    import yaml

    import adflow_plugin  # noqa: F401  (BasicSR's compatibility fixes and the archs; before basicsr)
    from basicsr.archs import build_network
    from basicsr.losses import build_loss
    from adflow_plugin.losses.flow_nll_loss import FlowNLLLoss
    from adflow_plugin.models.discriminator_health import discriminator_stats

    with open(args.opt) as f:
        opt = yaml.safe_load(f)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    train_opt = opt['train']
    noise = FlowNLLLoss(quant=(train_opt.get('nll_opt') or {}).get('quant', 32))
    gt_size = opt['datasets']['train']['gt_size']
    d_opt = dict(opt.get('network_d') or dict(type='VGGStyleDiscriminatorAnySize', num_in_ch=3, num_feat=16))
    if args.d_type and args.d_type != d_opt['type']:
        d_opt = dict(type=args.d_type, num_in_ch=3, num_feat=d_opt.get('num_feat', 16))
    if 'AnySize' in d_opt['type']:
        d_opt['input_size'] = gt_size
    if args.num_feat:
        d_opt['num_feat'] = args.num_feat
    lr = args.lr or (train_opt.get('optim_d') or {}).get('lr', 1e-4)
    net_g = load_generator(opt, args.weights)
    net_d = build_network(d_opt)
    gan = build_loss(dict(type='GANLoss', gan_type='vanilla', real_label_val=1.0, fake_label_val=0.0, loss_weight=1.0))
    opt_d = torch.optim.Adam(net_d.parameters(), lr, betas=(0.9, 0.99))
    batches = train_pairs(opt, opt['datasets']['train']['batch_size_per_gpu'], args.seed, args.min_detail)
    sampler = torch.Generator().manual_seed(args.seed + 1)
    history, start = [], time.time()
    for it in range(1, args.iters + 1):
        gt, lq = next(batches)
        real = gt if args.clean_reals else noise.dequantize(gt)
        fake = make_fakes(args.fake, net_g, gt, lq, noise, args.temperature, sampler)
        opt_d.zero_grad()
        if args.d_batch == 'joint':
            real_pred, fake_pred = net_d(torch.cat([real, fake])).chunk(2)
        else:
            real_pred, fake_pred = net_d(real), net_d(fake)
        l_real = gan(real_pred - fake_pred.detach().mean(), True, is_disc=True) * 0.5
        l_fake = gan(fake_pred - real_pred.detach().mean(), False, is_disc=True) * 0.5
        (l_real + l_fake).backward()
        opt_d.step()
        stats = discriminator_stats(real_pred, fake_pred)
        history.append([float((l_real + l_fake).detach()), float(stats['d_acc_real']), float(stats['d_acc_fake']),
                        float(stats['d_gap']), float(stats['d_out_std'])])
        if it % args.every == 0 or it == args.iters:
            last = np.array(history[-100:])
            print(f'iter {it:5d}: l_d {last[:, 0].mean():.4f} acc real {last[:, 1].mean():.3f} fake '
                  f'{last[:, 2].mean():.3f} gap {last[:, 3].mean():+.4f} out std {last[:, 4].mean():.2e} '
                  f'({time.time() - start:.0f} s)', flush=True)
    net_d.eval()
    folders = {}
    if args.eval_gt:
        folders = dict(dataroot_gt=args.eval_gt, dataroot_lq=args.eval_lq or args.eval_gt, io_backend={'type': 'disk'})
    gts, lqs = eval_pairs(opt, gt_size, args.eval_crops, args.seed, folders)
    held = torch.Generator().manual_seed(args.seed + 2)
    real_scores, fake_scores = [], []
    with torch.no_grad():
        for i in range(0, len(gts), 16):
            gt, lq = gts[i:i + 16], lqs[i:i + 16]
            real = gt if args.clean_reals else noise.dequantize(gt)
            real_scores.append(net_d(real).flatten())
            fake_scores.append(net_d(make_fakes(args.fake, net_g, gt, lq, noise, args.temperature, held)).flatten())
    real_scores, fake_scores = torch.cat(real_scores), torch.cat(fake_scores)
    pairwise = float((real_scores > fake_scores).float().mean())
    last = np.array(history[-100:])
    print(f'discriminator_probe: {os.path.basename(args.weights)} fake={args.fake} T={args.temperature:g} '
          f'{args.iters} iters lr {lr:g} {d_opt["type"]} num_feat {d_opt["num_feat"]} d_batch {args.d_batch} '
          f'clean_reals {args.clean_reals} min_detail {args.min_detail:g} (kept {train_pairs.kept} of '
          f'{train_pairs.seen} patches): train acc real {last[:, 1].mean():.3f} fake {last[:, 2].mean():.3f} '
          f'gap {last[:, 3].mean():+.4f} | held-out pairwise acc {pairwise:.3f} over {len(gts)} crops | '
          f'{time.time() - start:.0f} s', flush=True)


if __name__ == '__main__':
    main()
