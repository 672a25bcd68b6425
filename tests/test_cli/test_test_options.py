"""The shipped test options ``options/test_{AdFlow,BaseFlow,ESRGAN}_x{4,6,8}.yml``.

Every file is checked against its training options (the same ``network_g``, the checkpoint that training
writes), the paper's temperatures and the metric set. ``basicsr test`` then runs the real
``options/test_AdFlow_x4.yml`` and ``options/test_ESRGAN_x4.yml``, unmodified, in a folder laid out as the
repository: data made by ``basicsr prepare-data`` from three small photographs standing for DIV2K val,
BSD100 and Urban100, a tiny checkpoint where the options expect the trained one, and only ``num_gpu`` and
the network size overridden on the command line (``--force_yml``). LPIPS reads a RANDOMLY initialised
AlexNet put where torchvision caches the real one (the real weights cannot be downloaded here): its values
are not LPIPS, the run only shows that every metric is computed.
"""
import glob
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
import yaml

from adflow_plugin.apps.compare import parse_log
from adflow_plugin.cli import main
from adflow_plugin.data.demo import TRAIN_PHOTOS, VAL_PHOTOS, read_photo
from adflow_plugin.metrics.lr_psnr_metric import calculate_lr_psnr
from tests.conftest import OPTIONS

METHODS = ('AdFlow', 'BaseFlow', 'ESRGAN')
SCALES = (4, 6, 8)
SETS = ('DIV2K_val', 'BSD100', 'Urban100')
TINY = dict(num_feat=8, num_block=1, num_grow_ch=4)
TINY_FLOW = dict(TINY, embed_blocks=[0], flow_depth=1, num_transition=1, hidden_channels=8)


def load(name):
    with open(osp.join(OPTIONS, name)) as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('scale', SCALES)
def test_options_match_training_and_paper(method, scale):
    test, train = load(f'test_{method}_x{scale}.yml'), load(f'train_{method}_x{scale}.yml')
    assert test['name'] == f'test_{method}_x{scale}' and test['scale'] == scale
    assert test['model_type'] == train['model_type']
    # the network trained, except the embedding's initialisation file, which the checkpoint supersedes
    expected = dict(train['network_g'])
    if 'pretrained_embed' in expected:
        expected['pretrained_embed'] = None
    assert test['network_g'] == expected
    ckpt = 'net_g_best.pth' if method == 'AdFlow' else 'net_g_latest.pth'
    assert test['path']['pretrain_network_g'] == f'experiments/{train["name"]}/models/{ckpt}'
    assert test['path']['param_key_g'] == 'params_ema' and train['train']['ema_decay'] > 0
    if method == 'AdFlow':
        assert train['val']['best_metric'] == 'lpips'  # training keeps net_g_best.pth by LPIPS

    sets = test['datasets']
    assert [d['name'] for d in sets.values()] == list(SETS)
    for d in sets.values():
        assert d['dataroot_gt'] == f'datasets/{d["name"]}/GT'
        assert d['dataroot_lq'] == f'datasets/{d["name"]}/LRbicx{scale}'

    val = test['val']
    metrics = val['metrics']
    for name in ('psnr', 'ssim'):
        assert metrics[name]['crop_border'] == scale and metrics[name]['test_y_channel'] is False
    assert metrics['lpips'] == {'type': 'calculate_lpips', 'better': 'lower'}
    if method == 'ESRGAN':
        assert metrics['lr_psnr'] == {'type': 'calculate_lr_psnr', 'variant': 'ntire', 'scale': scale}
        assert 'temperature' not in val
    else:
        assert val['temperature'] == {'AdFlow': 1.0, 'BaseFlow': 0.9}[method]
        assert val['num_samples'] == 10
        assert metrics['lr_psnr'] == {'type': 'calculate_lr_psnr'}  # the model passes lq and scale
        assert metrics['lr_psnr_mean']['reduction'] == 'mean' and metrics['lr_psnr_worst']['reduction'] == 'worst'
        assert metrics['diversity']['type'] == 'calculate_diversity'
        assert not any('scale' in m for m in metrics.values())


@pytest.fixture(scope='module')
def repo_like(tmp_path_factory):
    """A working folder with datasets/ made by ``basicsr prepare-data`` (4x) and a random AlexNet for LPIPS."""
    root = tmp_path_factory.mktemp('test_options')
    downloads = root / 'datasets' / 'downloads'
    photos = {'DIV2K_valid_HR': VAL_PHOTOS[0], 'BSD100': VAL_PHOTOS[1], 'Urban100': TRAIN_PHOTOS[0]}
    for folder, photo in photos.items():
        (downloads / folder).mkdir(parents=True)
        img = read_photo(photo)
        cv2.imwrite(str(downloads / folder / (osp.splitext(photo)[0] + '.png')), img[:100, :92])  # -> 96 x 88
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(['prepare-data', '--sets', *SETS, '--scales', '4', '--workers', '1']) == 0
    finally:
        os.chdir(cwd)
    torch_home = root / 'torch'
    (torch_home / 'hub' / 'checkpoints').mkdir(parents=True)
    import torchvision
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(),
               torch_home / 'hub' / 'checkpoints' / 'alexnet-owt-7be5be79.pth')
    return dict(root=root, env={'TORCH_HOME': str(torch_home)})


def test_ntire_lr_psnr_is_the_lr_psnr_on_prepared_sets(repo_like):
    """Why the ESRGAN options may use the NTIRE variant: on prepared data the LR input is bicubic(GT)."""
    rng = np.random.default_rng(0)
    for name in SETS:
        for gt_path in glob.glob(str(repo_like['root'] / 'datasets' / name / 'GT' / '*.png')):
            gt = cv2.imread(gt_path)
            lq = cv2.imread(gt_path.replace(f'{os.sep}GT{os.sep}', f'{os.sep}LRbicx4{os.sep}'))
            assert gt.shape == (96, 88, 3) and lq.shape == (24, 22, 3)
            sr = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
            assert calculate_lr_psnr(sr, lq=lq) == calculate_lr_psnr(sr, img2=gt, variant='ntire', scale=4)


@pytest.mark.parametrize('method', ['AdFlow', 'ESRGAN'])
def test_basicsr_test_runs_the_real_options(method, repo_like, cli):
    from basicsr.archs.rrdbnet_arch import RRDBNet

    from adflow_plugin.archs.adflow_arch import AdFlowNet

    root = repo_like['root']
    opt = load(f'test_{method}_x4.yml')
    ckpt = root / opt['path']['pretrain_network_g']
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if method == 'AdFlow':
        sizes = TINY_FLOW
        net_opt = {k: v for k, v in dict(opt['network_g'], **sizes).items() if k != 'type'}
        net = AdFlowNet(**net_opt)
    else:
        sizes = TINY
        net = RRDBNet(3, 3, **sizes)
    torch.save({'params': net.state_dict(), 'params_ema': net.state_dict()}, ckpt)

    force = ['num_gpu=0'] + [f'network_g:{k}={v}'.replace(' ', '') for k, v in sizes.items()]
    proc = cli(['test', '-opt', osp.join(OPTIONS, f'test_{method}_x4.yml'), '--force_yml', *force], cwd=root,
               env=repo_like['env'])
    logs = glob.glob(str(root / 'results' / opt['name'] / f'test_{opt["name"]}_*.log'))
    assert len(logs) == 1, proc.stdout[-2000:]
    _, values = parse_log(logs[0])
    assert sorted(values) == sorted(SETS)
    for name in SETS:
        assert sorted(values[name]) == sorted(opt['val']['metrics']), values[name]
        assert all(np.isfinite(v) for v in values[name].values())
        if method == 'AdFlow':
            assert values[name]['diversity'] > 0  # 10 different samples
            assert values[name]['lr_psnr_worst'] <= values[name]['lr_psnr_mean']
    images = glob.glob(str(root / 'results' / opt['name'] / 'visualization' / '*' / '*.png'))
    assert len(images) == 3 * (10 if method == 'AdFlow' else 1)
    if method == 'AdFlow':
        assert any(p.endswith(f'_t1_s9_{opt["name"]}.png') for p in images)
