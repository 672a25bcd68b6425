"""Stage 2's discriminator health numbers, the dead- and chance-discriminator warnings, train.stop_on_dead_d and
train.d_batch."""
import logging
import os
import random

import pytest
import torch
from basicsr.data import build_dataset

from adflow_plugin.models.discriminator_health import discriminator_accuracy, discriminator_stats
from tests.conftest import in_process_model, tiny_flow_options


class SampleIsInput(torch.nn.Module):
    """The real generator, except that its sample is the HR it was given: a perfect generator, whose
    fakes equal the discriminator's real images when ``train.real_noise`` shows D the same dequantised HR."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, lq, gt, **kwargs):
        out = self.net(lq, gt, **kwargs)
        out['sr'] = gt.clone()
        return out


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def train_steps(model, opt, steps, seed=0):
    """``steps`` training steps on the demo LMDB through BasicSR's PairedImageDataset; the logged dicts."""
    ds = build_dataset(dict(opt['datasets']['train'], phase='train', scale=opt['scale']))
    random.seed(seed)  # BasicSR's crops and flips
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=opt['datasets']['train']['batch_size_per_gpu'],
                                         shuffle=True, generator=g)
    logged, it = [], 0
    while it < steps:
        for data in loader:
            it += 1
            model.feed_data(data)
            model.optimize_parameters(it)
            if it % opt['logger']['print_freq'] == 0:
                logged.append({k: float(v) for k, v in model.log_dict.items()})
            if it == steps:
                break
    return logged


def train_steps_warnings(model, opt, steps):
    """:func:`train_steps`, and the warnings BasicSR's logger received meanwhile."""
    records = Records()
    logging.getLogger('basicsr').addHandler(records)
    try:
        return train_steps(model, opt, steps), records.messages
    finally:
        logging.getLogger('basicsr').removeHandler(records)


def test_relativistic_accuracy_by_hand():
    real, fake = torch.tensor([2.0, 0.5, -1.0, 1.0]), torch.tensor([0.0, 1.0, -2.0])
    # mean fake = -1/3: reals above it: 2, 0.5, 1 -> 3/4; mean real = 5/8: fakes below it: 0, -2 -> 2/3
    assert discriminator_accuracy(real, fake) == (0.75, pytest.approx(2 / 3))
    stats = discriminator_stats(real, fake)
    assert float(stats['d_gap']) == pytest.approx(0.625 + 1 / 3)
    assert float(stats['d_out_std']) == pytest.approx(float(torch.cat([real, fake]).std()))


def dead_d_model(demo_data, tmp_path, **train):
    """A tiny stage 2 in which D cannot learn: a perfect generator (fake = the dequantised HR) and
    train.real_noise (real = the same dequantised HR). D starts at the fixed point such training leads to,
    a constant output (last layer zero; the issue's dead D had shrunk it to norm 0.027)."""
    torch.manual_seed(0)
    opt = tiny_flow_options(demo_data, 'dead_d', stage=2, total_iter=6, val=False, ema_decay=0, real_noise=True,
                            dead_d_patience=3, **train)
    opt['logger']['print_freq'] = 1
    model = in_process_model(opt, tmp_path)
    model.net_g = SampleIsInput(model.net_g)
    torch.nn.init.zeros_(model.net_d.linear2.weight)
    return model, opt


def test_dead_discriminator_warns_once(demo_data, tmp_path):
    model, opt = dead_d_model(demo_data, tmp_path)
    logged, messages = train_steps_warnings(model, opt, 6)
    assert all(d['d_gap'] == 0 and d['d_acc_real'] == 0.5 for d in logged), logged
    # the sample does not depend on the generator: the GAN term sends it nothing, the NLL everything
    assert all(d['grad_norm_g_gan'] == 0 and d['grad_norm_g_nll'] == pytest.approx(d['grad_norm_g'], rel=1e-5)
               for d in logged), logged
    assert float(model.net_d.linear2.weight.detach().abs().max()) == 0  # nothing to learn: it stayed dead
    dead = [m for m in messages if 'discriminator is dead' in m]
    assert len(dead) == 1 and '\n' not in dead[0], messages
    assert dead[0].startswith('iter 3:') and 'stop_on_dead_d' in dead[0] and 'optim_d lr' in dead[0]


def test_stop_on_dead_d_stops_the_run(demo_data, tmp_path):
    model, opt = dead_d_model(demo_data, tmp_path, stop_on_dead_d=True)
    with pytest.raises(RuntimeError, match='discriminator is dead'):
        train_steps(model, opt, 6)


def test_blind_discriminator_warns_at_chance(demo_data, tmp_path):
    """D's outputs vary with its input (not dead), but the fakes are its real images: it stays at chance, and
    the chance warning (not the dead one) says so once, when its window is full."""
    torch.manual_seed(0)
    opt = tiny_flow_options(demo_data, 'blind_d', stage=2, total_iter=6, val=False, ema_decay=0, real_noise=True,
                            dead_d_patience=3, chance_d_window=4)
    opt['logger']['print_freq'] = 1
    model = in_process_model(opt, tmp_path)
    model.net_g = SampleIsInput(model.net_g)
    logged, messages = train_steps_warnings(model, opt, 6)
    # above the dead threshold (1e-3) on every step, and exactly at chance
    assert all(d['d_out_std'] > 1e-3 and d['d_acc_real'] + d['d_acc_fake'] == 1 for d in logged), logged
    chance = [m for m in messages if 'discriminator is at chance' in m]
    assert len(chance) == 1 and '\n' not in chance[0] and chance[0].startswith('iter 4:'), messages
    assert 'mean accuracy 0.50 over the last 4' in chance[0] and 'discriminator_probe.py' in chance[0]
    assert not any('discriminator is dead' in m for m in messages)


@pytest.mark.parametrize('d_batch', ['separate', 'joint'])
def test_live_discriminator_beats_chance(demo_data, tmp_path, d_batch):
    # an untrained flow: its samples are clearly wrong, and the discriminator soon separates them
    torch.manual_seed(0)
    opt = tiny_flow_options(demo_data, 'live_d', stage=2, total_iter=16, val=False, dead_d_patience=3,
                            d_batch=d_batch)
    opt['logger']['print_freq'] = 2
    model = in_process_model(opt, tmp_path)
    logged = train_steps(model, opt, 16)
    assert len(logged) == 8
    late = logged[4:]  # batch 2: one step's accuracy is 0, 0.5 or 1; judge the second half's mean
    balanced = sum(d['d_acc_real'] + d['d_acc_fake'] for d in late) / (2 * len(late))
    assert balanced > 0.6 and sum(d['d_gap'] for d in late) / len(late) > 0.05, logged
    assert model.dead_d_monitor.dead_steps == 0
    # the two terms' gradient norms, on logging steps: each term's own, bounded by the total's
    for d in logged:
        nll, gan, total = d['grad_norm_g_nll'], d['grad_norm_g_gan'], d['grad_norm_g']
        assert gan > 0 and abs(nll - gan) * (1 - 1e-4) <= total <= (nll + gan) * (1 + 1e-4), d


@pytest.mark.parametrize('d_batch, batches', [('separate', [2, 2, 2, 2, 2]), ('joint', [4, 4])])
def test_d_batch_sets_what_batchnorm_normalises_together(demo_data, tmp_path, d_batch, batches):
    """'separate' (as ESRGANModel): real and fake each in their own forward pass, so BatchNorm sees batches of
    2; 'joint': one pass over both, in the generator's step and in the discriminator's."""
    torch.manual_seed(0)
    opt = tiny_flow_options(demo_data, 'd_batch', stage=2, total_iter=1, val=False, d_batch=d_batch)
    model = in_process_model(opt, tmp_path)
    seen = []
    model.net_d.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    train_steps(model, opt, 1)
    assert opt['datasets']['train']['batch_size_per_gpu'] == 2 and seen == batches


def test_d_batch_is_checked(demo_data, tmp_path):
    opt = tiny_flow_options(demo_data, 'd_batch', stage=2, total_iter=1, val=False, d_batch='together')
    with pytest.raises(ValueError, match="train.d_batch must be 'separate' or 'joint', got 'together'"):
        in_process_model(opt, tmp_path)


def test_discriminator_probe_controls(demo_data, tmp_path):
    """benchmarks/discriminator_probe.py on the demo LMDB: blurry fakes (the positive control) are learned,
    and the flow path (a generator checkpoint on disk, samples from the LR) runs to its summary line."""
    import subprocess
    import sys

    from basicsr.archs import build_network

    from tests.conftest import REPO, write_options
    opt = tiny_flow_options(demo_data, 'probe', stage=2, total_iter=1)
    options = write_options(str(tmp_path), opt)
    weights = str(tmp_path / 'g.pth')
    torch.manual_seed(0)
    torch.save({'params': build_network(opt['network_g']).state_dict()}, weights)
    probe = [sys.executable, f'{REPO}/benchmarks/discriminator_probe.py', '-opt', options, '--weights', weights,
             '--eval-crops', '16', '--every', '100']
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    blurry = subprocess.run(probe + ['--fake', 'bicubic', '--iters', '300', '--lr', '4e-4'], capture_output=True,
                            text=True, env=env, check=True).stdout
    summary = blurry.strip().splitlines()[-1]
    accuracy = [float(summary.split('train acc real ')[1].split()[0]), float(summary.split(' fake ')[-1].split()[0])]
    assert summary.startswith('discriminator_probe: g.pth fake=bicubic') and min(accuracy) > 0.8, blurry
    flow = subprocess.run(probe + ['--fake', 'flow', '--iters', '5', '--min-detail', '0.001'], capture_output=True,
                          text=True, env=env, check=True).stdout
    assert 'fake=flow T=1 5 iters' in flow and 'held-out pairwise acc' in flow, flow
