"""Shared fixtures: the demo data set (built once per session) and a runner for the real CLI."""
import os
import signal
import subprocess
import sys

import pytest

import adflow_plugin  # noqa: F401  (registers the plugin for in-process tests)

# A suite started in the background (`cmd &` in a script, nohup) inherits Ctrl-C ignored, and so would every
# command it starts: a Python started with SIGINT ignored keeps ignoring it. The tests that press Ctrl-C on a
# command need it the way a terminal gives it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONS = os.path.join(REPO, 'options')


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """The demo set at 4x, 6x and 8x, folders and LMDB, in a session temporary folder."""
    from adflow_plugin.data.demo import build_demo_dataset
    root = tmp_path_factory.mktemp('demo') / 'demo'
    return build_demo_dataset(str(root), scales=(4, 6, 8), lmdb=True)


def cli_command(args):
    """The argv of ``basicsr ARGS`` (the installed console command's module)."""
    return [sys.executable, '-m', 'adflow_plugin.cli'] + [str(a) for a in args]


def run_cli(args, cwd, timeout=600, check=True, env=None):
    """Run ``basicsr ARGS`` in ``cwd``; return the CompletedProcess."""
    cmd = cli_command(args)
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n'
                             f'--- stderr\n{proc.stderr[-4000:]}')
    return proc


@pytest.fixture
def cli():
    return run_cli


def write_options(folder, opt):
    """Write an options dict as YAML into ``folder``/<name>.yml; return the path."""
    import yaml
    path = os.path.join(str(folder), f'{opt["name"]}.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


TINY_G = dict(type='AdFlowNet', num_feat=8, num_block=1, num_grow_ch=4, embed_blocks=[0], flow_depth=1,
              num_transition=1, hidden_channels=8)


def tiny_flow_options(data, name, scale=4, stage=1, total_iter=6, gt_size=32, lmdb=True, pretrain=None, val=True,
                      **train):
    """A tiny AdFlowModel config on the demo data: stage 1 (BaseFlow, NLL only) or 2 (AdFlow, + GAN)."""
    tr = data['train']
    opt = {
        'name': name, 'model_type': 'AdFlowModel', 'scale': scale, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': {
                'name': 'demo', 'type': 'PairedImageDataset',
                'dataroot_gt': tr['gt_lmdb'] if lmdb else tr['gt'],
                'dataroot_lq': tr[f'lq_x{scale}_lmdb'] if lmdb else tr[f'lq_x{scale}'],
                'filename_tmpl': '{}', 'io_backend': {'type': 'lmdb' if lmdb else 'disk'},
                'gt_size': gt_size, 'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0,
                'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 10, 'prefetch_mode': None},
        },
        'network_g': dict(TINY_G, scale=scale),
        'path': {'pretrain_network_g': pretrain, 'param_key_g': 'params_ema', 'strict_load_g': True,
                 'resume_state': None},
        'train': {
            'ema_decay': 0.9,
            'optim_g': {'type': 'Adam', 'lr': 1e-3, 'weight_decay': 0, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
            'total_iter': total_iter, 'warmup_iter': -1,
            'nll_opt': {'type': 'FlowNLLLoss', 'loss_weight': 1.0, 'quant': 32},
        },
        'logger': {'print_freq': 1, 'save_checkpoint_freq': total_iter, 'use_tb_logger': False,
                   'wandb': {'project': None, 'resume_id': None}},
    }
    if stage == 2:
        opt['network_d'] = {'type': 'VGGStyleDiscriminatorAnySize', 'num_in_ch': 3, 'num_feat': 4,
                            'input_size': gt_size}
        opt['train']['optim_d'] = {'type': 'Adam', 'lr': 1e-3, 'weight_decay': 0, 'betas': [0.9, 0.99]}
        opt['train']['gan_opt'] = {'type': 'GANLoss', 'gan_type': 'vanilla', 'real_label_val': 1.0,
                                   'fake_label_val': 0.0, 'loss_weight': 0.01}
    if val:
        opt['datasets']['val'] = {'name': 'demo_val', 'type': 'PairedImageDataset',
                                  'dataroot_gt': data['val']['gt'], 'dataroot_lq': data['val'][f'lq_x{scale}'],
                                  'io_backend': {'type': 'disk'}}
        opt['val'] = {'val_freq': total_iter, 'save_img': True, 'temperature': [0.0, 0.8], 'num_samples': 2,
                      'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': scale, 'test_y_channel': False},
                                  'lr_psnr': {'type': 'calculate_lr_psnr'}}}
    opt['train'].update(train)
    return opt


def in_process_model(opt, tmp_path, dist=False):
    """A BasicSR model built from an options dict the way ``parse_options`` completes it (rank 0)."""
    import copy

    from basicsr.models import build_model
    opt = copy.deepcopy(opt)
    opt.update(dist=dist, rank=0, world_size=1, is_train=True, auto_resume=False)
    root = str(tmp_path / 'experiments' / opt['name'])
    opt['path'].update(experiments_root=root, models=os.path.join(root, 'models'),
                       training_states=os.path.join(root, 'training_states'), log=root,
                       visualization=os.path.join(root, 'visualization'))
    for phase, d in opt['datasets'].items():
        d.update(phase=phase.split('_')[0], scale=opt['scale'])
    return build_model(opt)


def assert_same(a, b, where=''):
    """Equal bit for bit: tensors (values and dtype), and the dicts/lists/numbers around them."""
    import torch
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f'{where}: {sorted(a)} != {sorted(b)}'
        for k in a:
            assert_same(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]')
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'

