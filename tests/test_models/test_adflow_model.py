"""AdFlowModel through BasicSR's real trainer (CLI) and in-process for the step-level guarantees."""
import copy
import glob
import os
import re

import pytest
import torch

from adflow_plugin.archs.flow_layers import ActNorm, RandomRotation
from tests.conftest import in_process_model, tiny_flow_options, write_options


def log_values(log_text, key):
    return [float(v) for v in re.findall(rf'{key}: (-?[\d.]+e[+-]\d+)', log_text)]


def train_log(exp_dir):
    logs = sorted(glob.glob(os.path.join(exp_dir, 'train_*.log')))
    with open(logs[-1]) as f:
        return f.read()


def batch(scale=4, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(2, 3, size * scale, size * scale, generator=g)
    return {'lq': torch.nn.functional.avg_pool2d(gt, scale), 'gt': gt}


def test_baseflow_then_adflow_through_cli(demo_data, cli, tmp_path):
    # stage 1: NLL only; the NLL falls
    stage1 = tiny_flow_options(demo_data, 'baseflow_tiny', total_iter=30, lr=None)
    stage1['train']['optim_g']['lr'] = 2e-3
    stage1['logger']['print_freq'] = 5
    cli(['train', '-opt', write_options(tmp_path, stage1)], cwd=tmp_path)
    exp1 = tmp_path / 'experiments' / 'baseflow_tiny'
    log1 = train_log(exp1)
    nll = log_values(log1, 'l_g_nll')
    assert len(nll) == 6 and nll[-1] < nll[0] - 0.5, nll
    assert 'lr_psnr_t0' in log1 and 'psnr_t0.8' in log1
    assert (exp1 / 'models' / 'net_g_latest.pth').is_file()
    # validation images name temperature and sample
    assert glob.glob(str(exp1 / 'visualization' / '*' / '*_t0.8_s1_30.png'))

    # stage 2: starts from the BaseFlow checkpoint, trains with the discriminator, validates with LR-PSNR
    stage2 = tiny_flow_options(demo_data, 'adflow_tiny', stage=2, total_iter=4,
                               pretrain=str(exp1 / 'models' / 'net_g_latest.pth'))
    stage2['val']['best_metric'] = 'lr_psnr_t0.8'
    cli(['train', '-opt', write_options(tmp_path, stage2)], cwd=tmp_path)
    exp2 = tmp_path / 'experiments' / 'adflow_tiny'
    log2 = train_log(exp2)
    assert 'Loading AdFlowNet model from' in log2 and 'net_g_latest.pth' in log2
    assert len(log_values(log2, 'l_g_gan')) == 4 and len(log_values(log2, 'l_d_real')) == 4
    # the discriminator's health numbers, in training and in validation (README: "Is the discriminator alive?")
    for key in ('d_acc_real', 'd_acc_fake', 'd_gap', 'grad_norm_g_nll', 'grad_norm_g_gan'):
        assert len(log_values(log2, key)) == 4, key
    for t in ('0', '0.8'):
        assert re.search(rf'discriminator \(T={t}, 8 tiles each\):\s+# d_acc_real_t{t}: [\d.]+\s+# d_acc_fake_t{t}: '
                         rf'[\d.]+\s+# d_gap_t{t}: -?[\d.]+', log2), log2[-3000:]
    lr_psnr = [float(v) for v in re.findall(r'# lr_psnr_t0.8: ([\d.]+)', log2)]
    assert lr_psnr and 10 < lr_psnr[-1] <= 100
    for name in ('net_g_latest.pth', 'net_d_latest.pth', 'net_g_best.pth'):
        assert (exp2 / 'models' / name).is_file(), name


def test_nan_step_is_skipped_and_weights_untouched(demo_data, tmp_path):
    torch.manual_seed(0)
    opt = tiny_flow_options(demo_data, 'nan_step', stage=2, val=False)
    model = in_process_model(opt, tmp_path)
    model.feed_data(batch())
    model.optimize_parameters(1)  # a normal step: initialises ActNorm, fills Adam's state
    g_before = copy.deepcopy(model.net_g.state_dict())
    d_before = copy.deepcopy(model.net_d.state_dict())
    adam_before = copy.deepcopy(model.optimizer_g.state_dict())

    bad = batch(seed=1)
    bad['lq'][0, 0, 0, 0] = float('nan')
    model.feed_data(bad)
    model.optimize_parameters(2)
    assert model.skipped_steps == 1 and model.log_dict['skipped_steps'] == 1
    for k, v in model.net_g.state_dict().items():
        assert torch.equal(v, g_before[k]), k
    for k, v in model.net_d.state_dict().items():  # BatchNorm statistics included
        assert torch.equal(v, d_before[k]), k
    assert model.optimizer_g.state_dict()['state'][0]['step'] == adam_before['state'][0]['step']

    model.feed_data(batch(seed=2))
    model.optimize_parameters(3)  # training goes on
    assert model.consecutive_skips == 0
    assert any(not torch.equal(v, g_before[k]) for k, v in model.net_g.state_dict().items())


def test_consecutive_skips_stop_training(demo_data, tmp_path):
    opt = tiny_flow_options(demo_data, 'nan_stop', val=False, max_consecutive_skips=2)
    model = in_process_model(opt, tmp_path)
    bad = batch()
    bad['gt'][:] = float('inf')
    model.feed_data(bad)
    model.optimize_parameters(1)
    with pytest.raises(RuntimeError, match='consecutive training steps'):
        model.optimize_parameters(2)


def test_ema_carries_actnorm_init_and_rotation_buffers(demo_data, tmp_path):
    torch.manual_seed(0)
    opt = tiny_flow_options(demo_data, 'ema', val=False, ema_decay=0.999)
    model = in_process_model(opt, tmp_path)
    net, ema = model.net_g, model.net_g_ema
    rotations = [n for n, m in net.named_modules() if isinstance(m, RandomRotation)]
    assert rotations
    model.feed_data(batch())
    model.optimize_parameters(1)
    ema_modules = dict(ema.named_modules())
    for name, m in net.named_modules():
        if isinstance(m, ActNorm):
            assert bool(m.initialized) and bool(ema_modules[name].initialized), name
            # initialised from data and copied whole (not averaged with the zeros it started from)
            assert ema_modules[name].bias.abs().sum() > 0, name
            # EMA = decay * copy + (1 - decay) * net = net: equal up to float rounding (not within 5%)
            for key in ('bias', 'logs'):
                torch.testing.assert_close(getattr(ema_modules[name], key), getattr(m, key), rtol=1e-6, atol=1e-7)
    for name in rotations:
        assert torch.equal(ema_modules[name].weight, dict(net.named_modules())[name].weight)
    # the EMA net samples like the trained one right away (no zeroed ActNorm)
    with torch.no_grad():
        sr = model.sample(batch()['lq'], 0.0)[0]
    assert torch.isfinite(sr).all() and sr.std() > 0


def test_fix_encoder_iters_keeps_embedding(demo_data, tmp_path):
    opt = tiny_flow_options(demo_data, 'fix_enc', val=False, fix_encoder_iters=2)
    model = in_process_model(opt, tmp_path)
    embed_before = copy.deepcopy(model.net_g.embed.state_dict())
    flow_before = copy.deepcopy(model.net_g.levels.state_dict())
    for it in (1, 2):
        model.feed_data(batch(seed=it))
        model.optimize_parameters(it)
    for k, v in model.net_g.embed.state_dict().items():
        assert torch.equal(v, embed_before[k]), k
    assert any(not torch.equal(v, flow_before[k]) for k, v in model.net_g.levels.state_dict().items())
    model.feed_data(batch(seed=3))
    model.optimize_parameters(3)
    assert any(not torch.equal(v, embed_before[k]) for k, v in model.net_g.embed.state_dict().items())


def test_samples_at_temperature_zero_are_the_one_mode(demo_data, tmp_path):
    opt = tiny_flow_options(demo_data, 'mode', val=False)
    model = in_process_model(opt, tmp_path)
    lq = batch()['lq']
    mode = model.sample(lq, 0.0, num_samples=3, seed=5)
    assert len(mode) == 3 and all(torch.equal(s, mode[0]) for s in mode)
    assert torch.equal(mode[0], model.sample(lq, 0.0, seed=99)[0])  # no seed changes the mode
    drawn = model.sample(lq, 0.8, num_samples=2, seed=5)
    assert not torch.equal(drawn[0], drawn[1]) and not torch.equal(drawn[0], mode[0])
    assert model.sample(lq, 0.0, num_samples=0) == [] and model.sample(lq, 0.8, num_samples=0) == []
