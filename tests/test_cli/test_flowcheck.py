"""``basicsr flowcheck`` on the shipped paper options, and on a broken checkpoint."""
import json
import os

import pytest
import torch
import yaml

from tests.conftest import OPTIONS, TINY_G


@pytest.mark.parametrize('scale', [4, 6, 8])
def test_flowcheck_passes_on_shipped_adflow_options(cli, tmp_path, scale):
    proc = cli(['flowcheck', '-opt', os.path.join(OPTIONS, f'train_AdFlow_x{scale}.yml'), '--allow-untrained'],
               cwd=tmp_path)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report['ok'] and report['scale'] == scale
    assert report['roundtrip_max_abs_err'] < 1e-4 and report['logdet_max_rel_err'] < 1e-3
    assert report['params'] > 2e7 and report['sample_nonfinite'] == 0
    assert report['hr_size'] == (144 if scale == 6 else 160)
    assert 3 < report['nll_bits_per_dim'] < 6  # untrained: a few bits per dimension


def test_flowcheck_fails_on_a_broken_checkpoint(cli, tmp_path):
    from basicsr.archs import build_network
    net = build_network(dict(TINY_G, scale=4))
    state = net.state_dict()
    key = next(k for k in state if k.endswith('coupling.net.4.weight'))
    state[key] = torch.full_like(state[key], float('nan'))
    ckpt = tmp_path / 'broken.pth'
    torch.save({'params': state}, ckpt)
    opt = {'name': 'broken', 'network_g': dict(TINY_G, scale=4),
           'path': {'pretrain_network_g': str(ckpt), 'param_key_g': 'params'}}
    path = tmp_path / 'broken.yml'
    path.write_text(yaml.safe_dump(opt))
    proc = cli(['flowcheck', '-opt', path, '--hr-size', '32'], cwd=tmp_path, check=False)
    assert proc.returncode == 1
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not report['ok'] and report['weights'] == str(ckpt)


def test_flowcheck_refuses_a_non_flow_generator(cli, tmp_path):
    proc = cli(['flowcheck', '-opt', os.path.join(OPTIONS, 'train_ESRGAN_x4.yml')], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and 'needs network_g.type: AdFlowNet' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_flowcheck_amp_bf16_on_trained_weights(cli, tmp_path):
    """--amp bf16 on weights whose flow networks are not zero: the round trip and the log-det still pass."""
    from basicsr.archs import build_network
    torch.manual_seed(0)
    net = build_network(dict(TINY_G, scale=4))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    ckpt = tmp_path / 'net.pth'
    torch.save({'params': net.state_dict()}, ckpt)
    opt = {'name': 'amp', 'network_g': dict(TINY_G, scale=4), 'path': {'pretrain_network_g': str(ckpt)}}
    path = tmp_path / 'amp.yml'
    path.write_text(yaml.safe_dump(opt))
    proc = cli(['flowcheck', '-opt', path, '--hr-size', '32', '--amp', 'bf16'], cwd=tmp_path)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report['ok'] and report['amp'] == 'bf16' and 'float32 under bfloat16 autocast' in report['logdet_check']
    assert report['roundtrip_max_abs_err'] < 1e-4 and report['logdet_max_rel_err'] < 1e-3
    from adflow_plugin.apps.flowcheck import load_options, run_flowcheck
    nll32 = run_flowcheck(load_options(path), hr_size=32)['nll_bits_per_dim']  # in process, float32
    assert report['nll_bits_per_dim'] != nll32 and abs(report['nll_bits_per_dim'] - nll32) < 0.01 * abs(nll32)
