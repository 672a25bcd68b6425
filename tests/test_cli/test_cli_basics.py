"""The ``basicsr`` command: help, one-line errors, plugin registration, stock ESRGAN training and resume."""
import os
import re
import signal
import subprocess
import sys
import time
from collections import OrderedDict

import pytest
import yaml
from basicsr.utils.options import ordered_yaml

from tests.conftest import OPTIONS, REPO, run_cli, write_options


def test_help(cli, tmp_path):
    out = cli(['--help'], cwd=tmp_path).stdout
    for command in ('train', 'test', 'demo', 'prepare-data', 'fetch-weights', 'flowcheck', 'compare'):
        assert command in out
    out = cli(['train', '--help'], cwd=tmp_path).stdout
    for arg in ('-opt', '--launcher', '--auto_resume', '--debug', '--force_yml'):
        assert arg in out


@pytest.mark.parametrize('args,message', [
    (['fly'], "invalid choice: 'fly'"),
    (['train', '-opt', 'missing.yml'], 'options file not found: missing.yml'),
    (['test', '-opt', 'missing.yml'], 'options file not found: missing.yml'),
    (['train'], 'the following arguments are required: -opt'),
])
def test_user_errors_are_one_line(cli, tmp_path, args, message):
    proc = cli(args, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert 'Traceback' not in proc.stderr


def test_invalid_yaml_is_one_line(cli, tmp_path):
    bad = tmp_path / 'bad.yml'
    bad.write_text('name: [unclosed\n')
    proc = cli(['train', '-opt', bad], cwd=tmp_path, check=False)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1 and 'not valid YAML' in proc.stderr


def test_import_twice_and_after_basicsr_registers_once():
    code = '''
import sys, torchvision.transforms.functional as F
sys.modules['torchvision.transforms.functional_tensor'] = F   # a user's own fix, so basicsr imports first
import basicsr
from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY
import adflow_plugin
import adflow_plugin
import importlib; importlib.import_module('adflow_plugin.archs')
names = [k for k in ARCH_REGISTRY._obj_map if k in ('AdFlowNet', 'RRDBEmbedNet', 'MultiScaleRRDBNet')]
assert sorted(names) == ['AdFlowNet', 'MultiScaleRRDBNet', 'RRDBEmbedNet'], names
assert 'FlowNLLLoss' in LOSS_REGISTRY._obj_map and 'AdFlowModel' in MODEL_REGISTRY._obj_map
assert 'calculate_lr_psnr' in METRIC_REGISTRY._obj_map
print('ok')
'''
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr


def stock_esrgan_options(data, name, lmdb, scale=4):
    """BasicSR's ESRGAN options with only paths, sizes and num_gpu changed, and no VGG perceptual loss."""
    with open(os.path.join(OPTIONS, f'train_ESRGAN_x{scale}.yml')) as f:
        opt = yaml.load(f, Loader=ordered_yaml()[0])
    opt = yaml.safe_load(yaml.safe_dump(dict(_plain(opt)), sort_keys=False))  # plain dicts
    opt['name'], opt['num_gpu'] = name, 0
    train = opt['datasets']['train']
    tr = data['train']
    train['dataroot_gt'] = tr['gt_lmdb'] if lmdb else tr['gt']
    train['dataroot_lq'] = tr[f'lq_x{scale}_lmdb'] if lmdb else tr[f'lq_x{scale}']
    train['io_backend'] = {'type': 'lmdb' if lmdb else 'disk'}
    train.update(num_worker_per_gpu=0, batch_size_per_gpu=2, dataset_enlarge_ratio=1)
    opt['datasets']['val'].update(dataroot_gt=data['val']['gt'], dataroot_lq=data['val'][f'lq_x{scale}'])
    opt['network_g'].update(num_feat=8, num_block=1)
    opt['network_d'].update(num_feat=8)
    opt['path']['pretrain_network_g'] = None
    del opt['train']['perceptual_opt']  # VGG19 weights cannot be downloaded here
    opt['train']['total_iter'] = 400
    opt['val']['val_freq'] = 10**6
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    return opt


def _plain(d):
    return {k: _plain(v) if isinstance(v, (dict, OrderedDict)) else v for k, v in d.items()}


@pytest.mark.parametrize('lmdb', [False, True], ids=['disk', 'lmdb'])
def test_stock_esrgan_trains_is_killed_and_resumes_on_cpu(demo_data, tmp_path, lmdb):
    opt = stock_esrgan_options(demo_data, f'esrgan_{"lmdb" if lmdb else "disk"}', lmdb)
    path = write_options(tmp_path, opt)
    states = tmp_path / 'experiments' / opt['name'] / 'training_states'
    proc = subprocess.Popen([sys.executable, '-m', 'adflow_plugin.cli', 'train', '-opt', path], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (states.is_dir() and any(states.iterdir())):
        time.sleep(0.2)
    time.sleep(0.5)  # let the state file be written completely
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = sorted(int(p.stem) for p in states.glob('*.state'))
    assert saved and saved[-1] < 400, 'the run should have been interrupted mid-way'
    target = saved[-1] + 2
    run_cli(['train', '-opt', path, '--auto_resume', '--force_yml', f'train:total_iter={target}'], cwd=tmp_path)
    logs = sorted((tmp_path / 'experiments' / opt['name']).glob('train_*.log'))
    text = logs[-1].read_text()
    assert 'Resuming training from epoch' in text and f'iter: {saved[-1]}.' in text
    assert re.search(rf'iter:\s+{target},', text)
    assert (states / f'{target}.state').is_file()
    assert (tmp_path / 'experiments' / opt['name'] / 'models' / 'net_g_latest.pth').is_file()


def test_auto_resume_takes_the_newest_state_after_a_psnr_validation(demo_data, cli, tmp_path):
    """BasicSR's ``calculate_psnr`` returns ``np.float64``, which entered the best-metric table of every state
    after the first validation; weights-only loading refused those states and --auto_resume fell back to
    the oldest state without one, silently dropping the training in between."""
    opt = stock_esrgan_options(demo_data, 'esrgan_psnr_val', lmdb=False)
    opt['train']['total_iter'] = 4
    opt['val']['val_freq'] = 2
    opt['logger']['save_checkpoint_freq'] = 2
    path = write_options(tmp_path, opt)
    cli(['train', '-opt', path], cwd=tmp_path)
    exp = tmp_path / 'experiments' / opt['name']
    assert '# psnr:' in sorted(exp.glob('train_*.log'))[-1].read_text()
    proc = cli(['train', '-opt', path, '--auto_resume', '--force_yml', 'train:total_iter=6'], cwd=tmp_path)
    assert 'skipped' not in proc.stderr, proc.stderr
    text = sorted(exp.glob('train_*.log'))[-1].read_text()
    assert 'Resuming training from epoch' in text and 'iter: 4.' in text
    assert (exp / 'training_states' / '6.state').is_file()


def test_esrgan_x8_multiscale_rrdbnet_trains(demo_data, cli, tmp_path):
    """The 8x baseline (MultiScaleRRDBNet, BasicSR's stock ESRGAN recipe otherwise) trains and validates."""
    opt = stock_esrgan_options(demo_data, 'esrgan_x8', lmdb=True, scale=8)
    opt['train']['total_iter'] = 3
    opt['val']['val_freq'] = 3
    opt['logger']['save_checkpoint_freq'] = 3
    cli(['train', '-opt', write_options(tmp_path, opt)], cwd=tmp_path)
    exp = tmp_path / 'experiments' / 'esrgan_x8'
    text = sorted(exp.glob('train_*.log'))[-1].read_text()
    assert 'Network [MultiScaleRRDBNet] is created.' in text and 'l_g_gan' in text and '# psnr:' in text
    assert (exp / 'models' / 'net_g_3.pth').is_file() and (exp / 'models' / 'net_d_3.pth').is_file()


def test_other_basicsr_plugins_ride_the_same_command(tmp_path):
    """A package declaring a ``basicsr.plugins`` entry point is imported by the command."""
    site = tmp_path / 'site'
    (site / 'fake_sr_plugin').mkdir(parents=True)
    (site / 'fake_sr_plugin' / '__init__.py').write_text(
        'from torch import nn\nfrom basicsr.utils.registry import ARCH_REGISTRY\n\n\n'
        '@ARCH_REGISTRY.register()\nclass FakePluginNet(nn.Module):\n    pass\n')
    dist_info = site / 'fake_sr_plugin-0.1.dist-info'
    dist_info.mkdir()
    (dist_info / 'METADATA').write_text('Metadata-Version: 2.1\nName: fake-sr-plugin\nVersion: 0.1\n')
    (dist_info / 'entry_points.txt').write_text('[basicsr.plugins]\nfake = fake_sr_plugin\n')
    code = ('from adflow_plugin.cli import load_plugins; load_plugins(); '
            'from basicsr.utils.registry import ARCH_REGISTRY; '
            "assert 'FakePluginNet' in ARCH_REGISTRY._obj_map and 'AdFlowNet' in ARCH_REGISTRY._obj_map; print('ok')")
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr
