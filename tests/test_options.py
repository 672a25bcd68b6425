"""Every shipped options file parses with BasicSR's loader and builds its networks at full size."""
import glob
import os
from collections import OrderedDict

import pytest
import torch
import yaml
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.utils.options import ordered_yaml

from tests.conftest import OPTIONS

FILES = sorted(glob.glob(os.path.join(OPTIONS, '*.yml')) + glob.glob(os.path.join(OPTIONS, 'ablation', '*.yml')))


def load(path):
    with open(path) as f:
        return yaml.load(f, Loader=ordered_yaml()[0])


def params(net):
    return sum(p.numel() for p in net.parameters())


def network_options(opt, key):
    net_opt = OrderedDict(opt[key])
    embed = net_opt.get('pretrained_embed')
    if embed and not os.path.isfile(embed):
        net_opt['pretrained_embed'] = None  # a stage-1 prerequisite users train first
    return net_opt


@pytest.mark.parametrize('path', FILES, ids=[os.path.relpath(f, OPTIONS) for f in FILES])
def test_options_file_builds(path):
    opt = load(path)
    for key in ('name', 'model_type', 'scale', 'num_gpu', 'datasets', 'network_g', 'path'):
        assert key in opt, f'{path}: missing {key}'
    nets = {key: build_network(network_options(opt, key)) for key in ('network_g', 'network_d') if key in opt}
    for key in ('nll_opt', 'gan_opt', 'pixel_opt'):
        if key in opt.get('train', {}):
            build_loss(OrderedDict(opt['train'][key]))
    g = nets['network_g']
    if opt['network_g']['type'] == 'AdFlowNet' and 'train' in opt['datasets']:
        # training patches fit the level layout exactly (no padding inside a training step)
        assert opt['datasets']['train']['gt_size'] % (opt['scale'] * g.lr_multiple) == 0
    if 'network_d' in opt and 'train' in opt['datasets']:
        d = nets['network_d']
        size = opt['datasets']['train']['gt_size']
        with torch.no_grad():
            d.eval()
            assert d(torch.zeros(1, 3, size, size)).shape == (1, 1)
    assert params(g) > 0


PAPER = {  # scale: (HR patch, stage-1 lr, adversarial weight, D lr, levels) from the paper, Sec. 3.4-3.5
    4: (160, 1e-5, 1e-2, 1e-3, 3),
    6: (144, None, 1e-2, 1e-3, 4),
    8: (160, 1e-6, 0.1, 1e-4, 4),
}


@pytest.mark.parametrize('scale', [4, 6, 8])
def test_paper_values(scale):
    patch, lr1, gan_w, d_lr, levels = PAPER[scale]
    base = load(os.path.join(OPTIONS, f'train_BaseFlow_x{scale}.yml'))
    ad = load(os.path.join(OPTIONS, f'train_AdFlow_x{scale}.yml'))
    for opt in (base, ad):
        assert opt['datasets']['train']['gt_size'] == patch
        assert opt['network_g']['num_levels'] == levels
        assert opt['network_g']['rotation'] == 'random' and opt['network_g']['coupling_scale'] == 'inv_sigmoid'
        assert opt['network_g']['embed_blocks'] == [1, 4, 6, 8]
        assert opt['train']['total_iter'] == 200000 and opt['train']['nll_opt']['quant'] == 32
        assert opt['datasets']['train']['dataroot_gt'] == 'datasets/DF2K/DF2K_HR_sub.lmdb'
        # validation (and net_g_best) on held-out training images, as the paper selects; never a test set
        assert opt['datasets']['val']['dataroot_gt'] == 'datasets/DF2K_holdout/GT'
        assert opt['datasets']['val']['dataroot_lq'] == f'datasets/DF2K_holdout/LRbicx{scale}'
    if lr1 is not None:
        assert base['train']['optim_g']['lr'] == lr1
    assert 'network_d' not in base and 'gan_opt' not in base['train']
    assert base['val']['temperature'] == 0.9 and ad['val']['temperature'] == 1.0
    assert ad['network_d']['num_feat'] == 16 and ad['network_d']['input_size'] == patch
    assert ad['train']['gan_opt']['loss_weight'] == gan_w and ad['train']['optim_d']['lr'] == d_lr
    # the paper's adversarial weight is relative to SRFlow's per-pixel NLL (tests/test_losses checks the balance)
    assert ad['train']['nll_opt']['unit'] == 'bits_per_pixel_srflow'
    assert ad['path']['pretrain_network_g'] == f'experiments/BaseFlow_x{scale}_DF2K/models/net_g_latest.pth'
    assert ad['val']['best_metric'] == 'lpips' and ad['val']['metrics']['lpips']['better'] == 'lower'


@pytest.mark.parametrize('scale', [4, 6, 8])
def test_esrgan_options_keep_basicsr_stock_keys(scale):
    """The baselines are BasicSR's stock ESRGAN recipe: same keys, same training values."""
    esr = load(os.path.join(OPTIONS, f'train_ESRGAN_x{scale}.yml'))
    psnr = load(os.path.join(OPTIONS, f'train_RRDB_PSNR_x{scale}.yml'))
    assert list(esr) == ['name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g',
                         'network_d', 'path', 'train', 'val', 'logger', 'dist_params']
    assert esr['model_type'] == 'ESRGANModel' and psnr['model_type'] == 'SRModel'
    t = esr['train']
    assert t['optim_g']['lr'] == 1e-4 and t['total_iter'] == 400000 and t['pixel_opt']['loss_weight'] == 1e-2
    assert t['gan_opt']['loss_weight'] == 5e-3 and t['perceptual_opt']['layer_weights'] == {'conv5_4': 1}
    assert psnr['train']['optim_g']['lr'] == 2e-4 and psnr['train']['total_iter'] == 1000000
    assert esr['network_g']['type'] == ('RRDBNet' if scale == 4 else 'MultiScaleRRDBNet')
    assert esr['path']['pretrain_network_g'] == f'experiments/RRDB_PSNR_x{scale}_DF2K/models/net_g_latest.pth'


ABLATION_CHANGES = {  # each ablation file against train_{AdFlow,BaseFlow}_x8.yml: network_g and train changes
    'K1': ({'flow_depth': 1}, set()),
    'K2': ({'flow_depth': 2}, set()),
    'K4': ({}, set()),  # the shipped recipe's K
    'K8': ({'flow_depth': 8}, set()),
    'K16': ({'flow_depth': 16}, set()),
    'L1': ({'flow_depth': 0, 'prior': 'laplace', 'embed_blocks': []}, {'temperature'}),
    'learned1x1_sigmoid': ({'rotation': 'learned', 'coupling_scale': 'sigmoid'}, set()),
    'random_rotation_sigmoid': ({'coupling_scale': 'sigmoid'}, set()),
    'no_coupling': ({'coupling': False}, set()),
    'perceptual': ({}, {'perceptual_opt'}),
}
ABLATIONS = sorted(glob.glob(os.path.join(OPTIONS, 'ablation', '*.yml')))


@pytest.mark.parametrize('path', ABLATIONS, ids=[os.path.basename(f) for f in ABLATIONS])
def test_ablation_file_changes_only_its_variable(path):
    """The Fig. 7 / Table 3 rungs differ from the paper configuration in exactly the studied setting."""
    name = os.path.basename(path)[:-len('.yml')]
    stage, _, variant = name[len('train_'):].partition('_x8_')
    net_change, train_change = ABLATION_CHANGES[variant]
    opt, base = load(path), load(os.path.join(OPTIONS, f'train_{stage}_x8.yml'))
    changed = {k: v for k, v in opt['network_g'].items() if base['network_g'].get(k) != v}
    assert changed == net_change and set(opt['network_g']) == set(base['network_g'])
    assert {k for k in set(opt['train']) | set(base['train']) if opt['train'].get(k) != base['train'].get(k)} == (
        train_change if stage == 'AdFlow' or variant != 'L1' else set())
    assert opt['name'] == f'{stage}_x8_{"K" if variant == "L1" else ""}{variant}_DF2K'
    assert opt['datasets'] == base['datasets'] and opt['val'].keys() == base['val'].keys()
    if stage == 'AdFlow':  # stage 2 starts from its own stage-1 rung (the perceptual row: the paper's BaseFlow)
        stage1 = 'x8_DF2K' if variant == 'perceptual' else opt['name'][len('AdFlow_'):]
        assert opt['path']['pretrain_network_g'] == f'experiments/BaseFlow_{stage1}/models/net_g_latest.pth'
    assert {os.path.basename(p)[len('train_'):].partition('_x8_')[2][:-4] for p in ABLATIONS} == set(ABLATION_CHANGES)


def test_readme_parameter_counts():
    """The parameter counts the README's model table quotes, built (on the meta device: no memory) from the
    shipped options and from SRFlow's released architecture."""
    from adflow_plugin.apps.convert_srflow import srflow_network_options

    def count(net_opt):
        with torch.device('meta'):
            return params(build_network(OrderedDict(net_opt)))

    readme = open(os.path.join(os.path.dirname(OPTIONS), 'README.md')).read()
    expected = {  # scale: (generator, its RRDB embedding, discriminator)
        4: (21834240, 16622400, 1176617), 6: (24131680, 16622400, 1061417), 8: (24168608, 16659328, 1176617)}
    for scale, (g_count, embed_count, d_count) in expected.items():
        opt = load(os.path.join(OPTIONS, f'train_AdFlow_x{scale}.yml'))
        net_opt = network_options(opt, 'network_g')
        with torch.device('meta'):
            g = build_network(OrderedDict(net_opt))
        assert (params(g), params(g.embed), count(opt['network_d'])) == (g_count, embed_count, d_count)
        base = network_options(load(os.path.join(OPTIONS, f'train_BaseFlow_x{scale}.yml')), 'network_g')
        assert dict(base, pretrained_embed=None) == dict(net_opt, pretrained_embed=None)  # the same generator
        assert f'{g_count:,}' in readme and f'{d_count:,}' in readme
    for scale, srflow_count in ((4, 39189648), (8, 50469728)):
        assert count(srflow_network_options(scale)) == srflow_count and f'{srflow_count:,}' in readme


def test_training_options_wait_for_rank_0_validation():
    """Rank 0 validates alone while the other ranks wait in a collective: every flow training file sets a
    collective timeout (seconds) well above nccl's 10-minute default, sized in its comment."""
    checked = 0
    for path in FILES:
        opt = load(path)
        if opt['model_type'] != 'AdFlowModel' or 'train' not in opt or opt['num_gpu'] == 0:
            continue
        timeout = opt['dist_params']['timeout']
        assert timeout >= 3 * 3600, path
        assert 's per megapixel' in open(path).read(), path
        checked += 1
    assert checked == 27
