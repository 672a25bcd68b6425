"""A stage-2 run killed with SIGKILL and resumed with --auto_resume, against the same run uninterrupted.

Three runs of BasicSR's trainer (``basicsr train``): the reference runs 6 iterations; the second is killed
once it has saved its training state at iteration 3 and validated; the third resumes it. The resumed
networks, EMA and Adam states are the saved ones, the resumed run ends with the reference's weights
bit for bit (the data sampler continues the epoch, the random states are restored), and net_g_best.pth
keeps the better checkpoint of before the kill.
"""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import assert_same, cli_command, tiny_flow_options, write_options

TOTAL, FREQ = 6, 3  # epochs of 5 batches (10 images, batch 2): the resume is mid-epoch, the run crosses an epoch


def options(demo_data, name, better):
    opt = tiny_flow_options(demo_data, name, stage=2, total_iter=TOTAL)
    opt['datasets']['train']['dataset_enlarge_ratio'] = 1
    opt['logger']['save_checkpoint_freq'] = FREQ
    opt['val'].update(val_freq=FREQ, save_img=False, temperature=0.8, num_samples=1, best_metric='lr_psnr',
                      metrics={'lr_psnr': {'type': 'calculate_lr_psnr', 'better': better}})
    return opt


def cli(args, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    return cli_command(args), dict(cwd=cwd, env=env)


def run(args, cwd):
    cmd, kw = cli(args, cwd)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, proc.stderr[-3000:]


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def runs(demo_data, tmp_path_factory):
    root = tmp_path_factory.mktemp('resume')
    # the reference, uninterrupted; its validations tell which direction makes the first one the best
    run(['train', '-opt', write_options(root, options(demo_data, 'ref', 'higher'))], root)
    ref = root / 'experiments' / 'ref'
    with open(next(ref.glob('train_*.log'))) as f:
        values = [float(v) for v in re.findall(r'# lr_psnr: ([\d.]+)', f.read())]
    assert len(values) == 3 and abs(values[0] - values[1]) > 1e-3, values  # iterations 3, 6, and the final one
    better = 'higher' if values[0] > values[1] else 'lower'

    # the same run (but for which value is better), killed after the state and the validation at iteration 3
    path = write_options(root, options(demo_data, 'killed', better))
    exp = root / 'experiments' / 'killed'
    cmd, kw = cli(['train', '-opt', path], root)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    deadline = time.time() + 300
    while not (exp / 'models' / 'net_g_best.pth').is_file():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:] if proc.stderr else ''
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    states = sorted(int(p.stem) for p in (exp / 'training_states').glob('*.state'))
    assert states == [FREQ], f'the run was not killed in time: states {states}'
    killed = {name: load(exp / 'models' / f'net_{name}_{FREQ}.pth') for name in ('g', 'd')}
    killed.update(state=load(exp / 'training_states' / f'{FREQ}.state'), best=load(exp / 'models' / 'net_g_best.pth'))

    run(['train', '-opt', path, '--auto_resume'], root)
    return dict(root=root, ref=ref, exp=exp, killed=killed, path=path)


def test_saved_state_is_the_uninterrupted_runs(runs):
    """What the killed run saved at iteration 3 is what the uninterrupted run saved there; the state holds
    the best-metric table and the random states."""
    ref, killed = runs['ref'], runs['killed']
    for name in ('g', 'd'):
        assert_same(killed[name], load(ref / 'models' / f'net_{name}_{FREQ}.pth'), f'net_{name}')
    state, ref_state = killed['state'], load(ref / 'training_states' / f'{FREQ}.state')
    for key in ('epoch', 'iter', 'optimizers', 'schedulers', 'rng'):
        assert_same(state[key], ref_state[key], key)
    table = state['best_metric_results']['demo_val']['lr_psnr']
    assert table['iter'] == FREQ and table['val'] not in (float('inf'), float('-inf'))


def test_resumed_model_is_the_saved_one(runs, monkeypatch):
    """BasicSR's own resume path (load_resume_state, build_model, resume_training) gives back the saved G,
    D, EMA, both Adam states, the schedulers and the best-metric table; a state without the added entries
    (written before they existed) still loads."""
    import copy

    from basicsr.models import build_model
    from basicsr.train import load_resume_state
    from basicsr.utils.options import parse_options

    from adflow_plugin import resume
    monkeypatch.chdir(runs['root'])
    monkeypatch.setattr(sys, 'argv', ['train', '-opt', runs['path']])
    opt, _ = parse_options(str(runs['root']), is_train=True)
    opt['path']['resume_state'] = str(runs['exp'] / 'training_states' / f'{FREQ}.state')  # the one resumed from
    try:
        state = load_resume_state(opt)
    finally:
        resume.disarm()  # no training sampler here
    model = build_model(opt)
    model.resume_training(state)
    killed = runs['killed']
    assert_same(model.net_g.state_dict(), dict(killed['g']['params']), 'G')
    assert_same(model.net_g_ema.state_dict(), dict(killed['g']['params_ema']), 'EMA')
    assert_same(model.net_d.state_dict(), dict(killed['d']['params']), 'D')
    assert_same(model.optimizer_g.state_dict(), killed['state']['optimizers'][0], 'optimizer_g')
    assert_same(model.optimizer_d.state_dict(), killed['state']['optimizers'][1], 'optimizer_d')
    assert_same([s.state_dict() for s in model.schedulers], killed['state']['schedulers'], 'schedulers')
    assert_same(model.best_metric_results, killed['state']['best_metric_results'], 'best_metric_results')

    old = {k: v for k, v in copy.deepcopy(state).items() if k not in ('rng', 'best_metric_results')}
    fresh = build_model(opt)
    fresh.resume_training(old)
    assert not hasattr(fresh, 'best_metric_results')


def test_resumed_run_ends_as_the_uninterrupted_one(runs):
    ref, exp = runs['ref'], runs['exp']
    for name in ('g', 'd'):
        assert_same(load(exp / 'models' / f'net_{name}_latest.pth'), load(ref / 'models' / f'net_{name}_latest.pth'),
                    f'net_{name}_latest')
    end, ref_end = load(exp / 'training_states' / f'{TOTAL}.state'), load(ref / 'training_states' / f'{TOTAL}.state')
    for key in ('epoch', 'iter', 'optimizers', 'schedulers', 'rng'):
        assert_same(end[key], ref_end[key], key)


def test_resume_keeps_the_better_checkpoint(runs):
    """The validation before the kill was the best: the resumed run's validations must not replace it."""
    best = load(runs['exp'] / 'models' / 'net_g_best.pth')
    assert_same(best, runs['killed']['g'], 'net_g_best')
    with open(sorted(runs['exp'].glob('train_*.log'))[-1]) as f:
        log = f.read()
    assert 'Resuming training from epoch: 0, iter: 3' in log and 'New best' not in log


@pytest.mark.parametrize('epoch,it,expect_skip', [(0, 3, 3), (1, 7, 2), (1, 10, 5), (0, 9, 0)],
                         ids=['mid_epoch', 'second_epoch', 'end_of_epoch', 'not_in_epoch'])
def test_sampler_continues_the_resumed_epoch(epoch, it, expect_skip):
    """BasicSR's sampler (10 images, batch 2: 5 batches an epoch) after a resume from iteration ``it`` of
    ``epoch``: the batches already trained on are skipped once, and the random states come back before the
    first batch is read. An iteration outside the epoch (a changed data set) starts the epoch over."""
    import random

    from basicsr.data.data_sampler import EnlargedSampler

    from adflow_plugin import resume
    sampler = EnlargedSampler(list(range(10)), num_replicas=1, rank=0, ratio=1)
    sampler.set_epoch(epoch)
    full = list(iter(sampler))
    torch.manual_seed(5)
    random.seed(5)
    saved = resume.rng_state()
    expected_draw = (torch.rand(1), random.random())
    torch.manual_seed(0)
    random.seed(0)
    opt = {'datasets': {'train': {'batch_size_per_gpu': 2}}, 'dist': False, 'num_gpu': 0, 'world_size': 1}
    resume.arm(opt, {'epoch': epoch, 'iter': it, 'rng': saved})
    try:
        assert list(iter(sampler)) == full[expect_skip * 2:]
        assert torch.equal(torch.rand(1), expected_draw[0]) and random.random() == expected_draw[1]
        assert list(iter(sampler)) == full  # once only
    finally:
        resume.disarm()
