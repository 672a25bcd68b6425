"""Distributed training on CPU processes (gloo) through torchrun and BasicSR's own trainer.

The multi-process tests launch ``torchrun --nproc_per_node=2`` on tiny configs over 32x32 patches
(deterministic crops, no flips or rotations, no dequantisation noise), so that two processes with
batch B see, step by step, exactly the samples one process sees with batch 2B.
"""
import glob
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import pytest
import torch

from adflow_plugin import dist as adist
from adflow_plugin.utils.matlab_resize import imresize_uint8
from tests.conftest import REPO, TINY_G, in_process_model, run_cli, tiny_flow_options, write_options
from tests.test_models.test_adflow_model import batch

PATCH = 32
SCALE = 4
NUM_PATCHES = 8
ENV = {'OMP_NUM_THREADS': '1'}
RANK_DUMP = os.path.join(REPO, 'tests', 'test_dist', 'rank_dump.py')


def torchrun(args, cwd, nproc=2, env=None, timeout=300, check=True, output=None):
    """``torchrun --standalone --nproc_per_node=N ARGS`` in ``cwd``; with ``output`` (an open file) started in
    the background, its output going to that file."""
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}']
    cmd += [str(a) for a in args]
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', **ENV, **(env or {}))
    if output is not None:
        return subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=output, stderr=subprocess.STDOUT)
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n'
                             f'--- stderr\n{proc.stderr[-6000:]}')
    return proc


@pytest.fixture(scope='module')
def patches(tmp_path_factory):
    """NUM_PATCHES 32x32 HR patches (and 8x8 MATLAB-bicubic LR) of a scikit-image photograph: each crop is
    the whole patch, so the data do not depend on a rank's random state."""
    from adflow_plugin.data.demo import read_photo
    root = tmp_path_factory.mktemp('patches')
    gt_dir, lq_dir = root / 'GT', root / f'LRbicx{SCALE}'
    gt_dir.mkdir()
    lq_dir.mkdir()
    img = read_photo('astronaut.png')
    for i in range(NUM_PATCHES):
        top, left = 64 + 40 * (i // 4), 64 + 80 * (i % 4)
        hr = img[top:top + PATCH, left:left + PATCH]
        cv2.imwrite(str(gt_dir / f'p{i}.png'), hr)
        cv2.imwrite(str(lq_dir / f'p{i}.png'), imresize_uint8(hr, 1 / SCALE))
    return {'train': {'gt': str(gt_dir), f'lq_x{SCALE}': str(lq_dir)}}


def descendants(pid):
    """Process ids below ``pid`` (torchrun starts each worker in a session of its own)."""
    found = []
    for task in glob.glob(f'/proc/{pid}/task/*/children'):
        with open(task) as f:
            for child in f.read().split():
                found += [int(child)] + descendants(int(child))
    return found


def kill_run(proc):
    """SIGKILL a torchrun launch: its workers, then torchrun."""
    for pid in descendants(proc.pid) + [proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def dist_options(patches, name, batch, stage=1, total_iter=4, pretrain=None, **train):
    """A tiny config whose data order and content do not depend on the rank or the world size."""
    opt = tiny_flow_options(patches, name, scale=SCALE, stage=stage, total_iter=total_iter, gt_size=PATCH,
                            lmdb=False, pretrain=pretrain, val=False, **train)
    opt['datasets']['train'].update(use_hflip=False, use_rot=False, batch_size_per_gpu=batch,
                                    dataset_enlarge_ratio=1)
    opt['train']['nll_opt']['quant'] = 0  # dequantisation noise is drawn from each rank's own seed
    return opt


def params(path, key='params'):
    return torch.load(path, map_location='cpu', weights_only=True)[key]


def max_abs_diff(a, b, names=None):
    names = names or a.keys()
    assert set(names) <= set(b.keys())
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in names)


BN_STATS = ('running_mean', 'running_var', 'num_batches_tracked')


def shared_keys(state):
    """Everything but BatchNorm statistics: parameters, ActNorm flags, the fixed rotations."""
    return [k for k in state if not k.endswith(BN_STATS)]


# ------------------------------------------------------------------ multi-process (torchrun, gloo)
def test_two_processes_train_baseflow_like_one(patches, tmp_path):
    """Stage 1: 2 processes x batch 2 == 1 process x batch 4, weights within 1e-5 after 4 steps (2 epochs)."""
    one_dir, two_dir = tmp_path / 'one', tmp_path / 'two'
    one_dir.mkdir()
    two_dir.mkdir()
    # Adam's first step is lr * sign(g) for every weight. Right after ActNorm's data-dependent init some
    # gradients are zero in exact arithmetic (e.g. the prior's pull on a bias whose output was just centred);
    # their rounding noise differs between a mean over 4 samples and the mean of two means over 2, and the
    # default eps (1e-8) would turn it into +-lr. eps 1e-4 keeps the step proportional to such gradients.
    optim = {'eps': 1e-4}
    one = dist_options(patches, 'baseflow_dist', batch=4)
    one['train']['optim_g'].update(optim)
    run_cli(['train', '-opt', write_options(one_dir, one)], cwd=one_dir, env=ENV)
    two = dist_options(patches, 'baseflow_dist', batch=2)
    two['train']['optim_g'].update(optim)
    proc = torchrun(['-m', 'adflow_plugin.train', '-opt', write_options(two_dir, two), '--launcher', 'pytorch'],
                    cwd=two_dir)

    ref, got = one_dir / 'experiments' / 'baseflow_dist', two_dir / 'experiments' / 'baseflow_dist'
    for key in ('params', 'params_ema'):
        a, b = params(ref / 'models' / 'net_g_latest.pth', key), params(got / 'models' / 'net_g_latest.pth', key)
        diff = max_abs_diff(a, b, shared_keys(a))
        print(f'stage 1 {key}: max |2 processes - 1 process| = {diff:.3e}')
        assert diff < 1e-5, (key, diff)
    # the same data went through: the logged NLL of each step agrees (rank 0 logs the mean over ranks)
    log_one, log_two = (open(glob.glob(str(d / 'train_*.log'))[0]).read() for d in (ref, got))
    nll_one = [float(v) for v in re.findall(r'l_g_nll: (\S+)', log_one)]
    nll_two = [float(v) for v in re.findall(r'l_g_nll: (\S+)', log_two)]
    assert len(nll_one) == len(nll_two) == 4
    assert max(abs(x - y) for x, y in zip(nll_one, nll_two)) < 1e-3, (nll_one, nll_two)
    # only rank 0 logs and saves: one log, one set of checkpoints
    assert 'World size (gpu number): 2' in log_two and 'Batch size per gpu: 2' in log_two
    assert len(glob.glob(str(got / 'train_*.log'))) == 1
    assert sorted(os.listdir(got / 'models')) == ['net_g_4.pth', 'net_g_latest.pth']
    assert sorted(os.listdir(got / 'training_states')) == ['4.state']
    assert proc.stderr.count('Start training from epoch') == 1  # rank 1's logger is silent


def test_killed_adflow_run_resumes_with_ranks_in_step(patches, tmp_path):
    """Stage 2, 2 processes: killed (SIGKILL to torchrun and its workers) after its first checkpoint, resumed with
    --auto_resume to the configured total; then both ranks hold the same generator, EMA and discriminator."""
    total, freq = 12, 4
    opt = dist_options(patches, 'adflow_dist', batch=2, stage=2, total_iter=total)
    opt['train']['ema_decay'] = 0.5
    opt['logger']['save_checkpoint_freq'] = freq
    path = write_options(tmp_path, opt)
    exp = tmp_path / 'experiments' / 'adflow_dist'
    # the basicsr command's module this time (the stage-1 test runs python -m adflow_plugin.train)
    with open(tmp_path / 'killed_run.out', 'w') as out:
        proc = torchrun(['-m', 'adflow_plugin.cli', 'train', '-opt', path, '--launcher', 'pytorch', '--auto_resume'],
                        cwd=tmp_path, output=out)
        try:
            deadline = time.time() + 240
            while time.time() < deadline and proc.poll() is None:
                logs = glob.glob(str(exp / 'train_*.log'))
                # iteration 5 logged: checkpoint 4 is complete and checkpoint 8 is three steps away
                if logs and re.search(r'iter:\s+[5-9],', open(logs[0]).read()):
                    break
                time.sleep(0.01)
            ended = proc.poll() is not None
        finally:
            kill_run(proc)
    assert not ended, 'the run ended before it could be killed:\n' + open(tmp_path / 'killed_run.out').read()[-4000:]
    states = sorted(os.listdir(exp / 'training_states'))
    assert states and f'{total}.state' not in states, states

    torchrun([RANK_DUMP, '-opt', path, '--launcher', 'pytorch', '--auto_resume'], cwd=tmp_path,
             env={'ADFLOW_RANK_DUMP': str(tmp_path)})
    log = open(sorted(glob.glob(str(exp / 'train_*.log')))[-1]).read()
    resumed_at = int(re.search(r'Resuming training from epoch: \d+, iter: (\d+)', log).group(1))
    assert resumed_at == max(int(s.split('.')[0]) for s in states)
    assert re.search(rf'iter:\s+{total},', log) and len(re.findall(r'l_g_gan: ', log)) == total - resumed_at
    assert f'{total}.state' in os.listdir(exp / 'training_states')
    assert (exp / 'models' / 'net_d_latest.pth').is_file()

    r0, r1 = (torch.load(tmp_path / f'rank{r}.pth', weights_only=True) for r in (0, 1))
    assert r0['ddp'] == r1['ddp'] == {'net_g': 'DistributedDataParallel', 'net_d': 'DistributedDataParallel'}
    for net in ('net_g', 'net_g_ema', 'net_d'):  # generator: ActNorm flags and rotations included
        diff = max_abs_diff(r0[net], r1[net], shared_keys(r0[net]))
        print(f'stage 2 {net}: max |rank 0 - rank 1| = {diff:.3e}')
        assert diff < 1e-5, (net, diff)
    # the discriminator's BatchNorm statistics are per rank (no SyncBatchNorm): each saw its own batches
    running = [k for k in r0['net_d'] if k.endswith('running_mean')]
    assert running and any(not torch.equal(r0['net_d'][k], r1['net_d'][k]) for k in running)


# ------------------------------------------------------------------ GPU (nccl), where one is present
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU (nccl)')
def test_cuda_nccl_one_process(patches, tmp_path):
    """torchrun with 1 GPU process: nccl chosen from the device, DDP on cuda:0, stage 1 as without torchrun;
    stage 2 from its checkpoint with sync_bn, resumed with --auto_resume."""
    ref_dir, run_dir = tmp_path / 'ref', tmp_path / 'run'
    ref_dir.mkdir()
    run_dir.mkdir()
    one = dist_options(patches, 'baseflow_cuda', batch=4)
    one['num_gpu'] = 1
    one['train']['optim_g']['eps'] = 1e-4  # see test_two_processes_train_baseflow_like_one
    run_cli(['train', '-opt', write_options(ref_dir, one)], cwd=ref_dir, env=ENV)
    proc = torchrun(['-m', 'adflow_plugin.train', '-opt', write_options(run_dir, one), '--launcher', 'pytorch'],
                    cwd=run_dir, nproc=1)
    assert 'Distributed: 1 processes, backend nccl, cuda:0' in proc.stdout
    latest = 'experiments/baseflow_cuda/models/net_g_latest.pth'
    a, b = params(ref_dir / latest), params(run_dir / latest)
    diff = max_abs_diff(a, b, shared_keys(a))
    print(f'cuda stage 1: max |torchrun nccl - plain| = {diff:.3e}')
    # not 1e-5: BasicSR sets cudnn.benchmark, so each run may pick other convolution kernels (TF32 by default
    # on Ampere and later), and Adam magnifies their rounding; the first step's NLL (same init, same data) agrees
    assert diff < 1e-2, diff
    nll = [re.search(r'l_g_nll: (\S+)', open(glob.glob(str(d / 'experiments/baseflow_cuda/train_*.log'))[0]).read())
           .group(1) for d in (ref_dir, run_dir)]
    assert abs(float(nll[0]) - float(nll[1])) < 1e-3, nll

    two = dist_options(patches, 'adflow_cuda', batch=2, stage=2, total_iter=4, pretrain=str(run_dir / latest))
    two.update(num_gpu=1, sync_bn=True)
    two['logger']['save_checkpoint_freq'] = 2
    path = write_options(run_dir, two)
    dump = {'ADFLOW_RANK_DUMP': str(run_dir)}
    torchrun([RANK_DUMP, '-opt', path, '--launcher', 'pytorch', '--force_yml', 'train:total_iter=2'], cwd=run_dir,
             nproc=1, env=dump)
    torchrun([RANK_DUMP, '-opt', path, '--launcher', 'pytorch', '--auto_resume'], cwd=run_dir, nproc=1, env=dump)
    r0 = torch.load(run_dir / 'rank0.pth', weights_only=True)
    assert r0['backend'] == 'nccl' and r0['device'] == 'cuda:0' and r0['device_ids'] == [0]
    assert r0['ddp'] == {'net_g': 'DistributedDataParallel', 'net_d': 'DistributedDataParallel'}
    assert r0['norm_layers'] == ['SyncBatchNorm']
    log = open(sorted(glob.glob(str(run_dir / 'experiments' / 'adflow_cuda' / 'train_*.log')))[-1]).read()
    assert 'Resuming training from epoch: 0, iter: 2' in log and re.search(r'iter:\s+4,', log)
    assert all(torch.isfinite(v).all() for v in r0['net_g'].values() if v.is_floating_point())


# ------------------------------------------------------------------ in process (a 1-process gloo group)
@pytest.fixture
def process_group(tmp_path):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "pg"}', rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize('stage', [1, 2])
def test_cpu_ddp_wraps_networks_and_calls_generator_once(patches, tmp_path, process_group, stage):
    model = in_process_model(dist_options(patches, 'inproc', batch=2, stage=stage), tmp_path, dist=True)
    nets = [model.net_g] + ([model.net_d] if stage == 2 else [])
    for net in nets:
        assert isinstance(net, torch.nn.parallel.DistributedDataParallel)
        assert net.device_ids is None and not net.find_unused_parameters
        assert getattr(net, 'forward_sync_buffers', None) is False or net.broadcast_buffers is False
    calls = []
    model.net_g.register_forward_pre_hook(lambda *a: calls.append(1))
    for it in (1, 2, 3):
        model.feed_data(batch(seed=it))
        model.optimize_parameters(it)
        assert len(calls) == it  # one generator call per step (NLL and sample together)
    assert model.skipped_steps == 0


def train_steps(net, steps=2):
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for it in range(steps):
        b = batch(seed=it)
        out = net(b['lq'], b['gt'], sample=True)
        loss = -(out['logp'] + out['logdet']).mean() + out['sr'].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize('find_unused', [False, True])
def test_find_unused_parameters_is_needed_exactly_when_a_parameter_is_unused(process_group, find_unused):
    from basicsr.archs import build_network
    device = torch.device('cpu')
    opt = {'find_unused_parameters': find_unused}
    # the real generator: every parameter gets a gradient, DDP needs no search for unused ones
    train_steps(adist.wrap_ddp(build_network(dict(TINY_G, scale=4)), opt, device))
    # the same generator with a branch the forward never calls (what find_unused_parameters is for)
    net = build_network(dict(TINY_G, scale=4))
    net.unused_head = torch.nn.Conv2d(3, 3, 3)
    ddp = adist.wrap_ddp(net, opt, device)
    if find_unused:
        train_steps(ddp)
    else:
        with pytest.raises(RuntimeError, match='find_unused_parameters'):
            train_steps(ddp)


# ------------------------------------------------------------------ options
@pytest.mark.parametrize('opt,cuda,expected', [
    ({'num_gpu': 0}, False, 'gloo'),
    ({'num_gpu': 0}, True, 'gloo'),
    ({'num_gpu': 1}, False, 'gloo'),
    ({'num_gpu': 'auto'}, True, 'nccl'),
    ({'num_gpu': 1}, True, 'nccl'),
    ({'num_gpu': 1, 'dist_params': {'backend': 'gloo', 'port': 29500}}, True, 'gloo'),
    ({'num_gpu': 0, 'dist_params': {'backend': 'nccl'}}, False, adist.DistConfigError),
    ({'num_gpu': 0, 'dist_params': {'backend': 'nccl'}}, True, adist.DistConfigError),
])
def test_backend_choice(monkeypatch, opt, cuda, expected):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: int(cuda))
    if isinstance(expected, str):
        assert adist.choose_backend(opt) == expected
    else:
        with pytest.raises(expected, match='gloo'):
            adist.choose_backend(opt)


def test_peek_options_applies_force_yml(tmp_path):
    path = write_options(tmp_path, {'name': 'x', 'num_gpu': 1, 'dist_params': {'backend': 'nccl', 'port': 29500}})
    launcher, opt = adist.peek_options(['-opt', path, '--launcher', 'pytorch', '--force_yml',
                                        'dist_params:backend=gloo', 'num_gpu=0'])
    assert launcher == 'pytorch' and opt['dist_params'] == {'backend': 'gloo', 'port': 29500} and opt['num_gpu'] == 0


def test_start_from_options_passes_dist_params(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(adist, 'init_dist', lambda launcher, **kw: calls.append((launcher, kw)))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    opt = {'name': 'x', 'num_gpu': 0, 'dist_params': {'port': 29500, 'timeout': 3600}}
    path = write_options(tmp_path, opt)
    adist.start_from_options(['-opt', path, '--launcher', 'pytorch'])
    adist.start_from_options(['-opt', path, '--launcher', 'slurm'])
    adist.start_from_options(['-opt', path])  # --launcher none: no process group
    import datetime
    hour = datetime.timedelta(hours=1)
    assert calls == [('pytorch', dict(backend='gloo', timeout=hour, use_cuda=False)),
                     ('slurm', dict(backend='gloo', port=29500, timeout=hour, use_cuda=False))]
    opt['dist_params']['bakend'] = 'gloo'
    with pytest.raises(adist.DistConfigError, match='bakend'):
        adist.start_from_options(['-opt', write_options(tmp_path, opt), '--launcher', 'pytorch'])
