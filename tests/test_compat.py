"""BasicSR 1.4.2 fixes applied by ``import adflow_plugin``."""
import os
import signal
import time

import pytest
import torch

from adflow_plugin import compat


class Unpicklable:

    def __reduce__(self):
        raise RuntimeError('cannot pickle this')


def test_atomic_save_leaves_no_truncated_file(tmp_path):
    path = str(tmp_path / 'net_g_5.pth')
    with pytest.raises(RuntimeError, match='cannot pickle'):
        compat.atomic_torch_save({'params': {'w': torch.zeros(1000)}, 'bad': Unpicklable()}, path)
    assert not os.path.exists(path)  # nothing under the final name; --auto_resume cannot pick it
    compat.atomic_torch_save({'params': {'w': torch.ones(3)}}, path)
    assert torch.equal(torch.load(path, weights_only=True)['params']['w'], torch.ones(3))
    assert not os.path.exists(path + '.partial')


def write_large_state(path):
    """A 256 MB training state, written by the project's atomic save (run in a forked child)."""
    state = {'iter': 20, 'optimizers': [{f'exp_avg_{i}': torch.full((4_000_000, ), float(i)) for i in range(16)}]}
    compat.atomic_torch_save(state, path)


def test_killed_while_saving_a_state_auto_resume_takes_the_last_complete_one(tmp_path):
    """SIGKILL a process while it writes a 256 MB training state: nothing appears under the final name, and
    ``--auto_resume``'s search (``basicsr.train.load_resume_state``) loads the previous complete state."""
    import multiprocessing
    states = tmp_path / 'experiments' / 'run' / 'training_states'
    states.mkdir(parents=True)
    compat.atomic_torch_save({'iter': 10, 'epoch': 1}, str(states / '10.state'))
    target = states / '20.state'
    partial = states / '20.state.partial'
    for attempt in range(5):  # a fast disk may finish before the kill lands; then try again
        # spawned, not forked: a child forked from a process whose OpenMP threads have run can hang in its first
        # parallel torch op (libgomp is not fork-safe), as it did late in the full suite
        proc = multiprocessing.get_context('spawn').Process(target=write_large_state, args=(str(target), ))
        proc.start()
        try:
            deadline = time.time() + 60
            while time.time() < deadline and proc.is_alive():
                if any(f.is_file() and f.stat().st_size > 1 << 20 for f in (partial, target)):
                    os.kill(proc.pid, signal.SIGKILL)  # while it writes (whichever name it writes to)
                    break
        finally:
            if proc.is_alive():
                proc.kill()
            proc.join()
        assert proc.exitcode in (0, -signal.SIGKILL), proc.exitcode
        if proc.exitcode == -signal.SIGKILL:
            assert not target.exists(), 'a killed save left a file under the final name'
            break
        target.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    else:
        pytest.skip('the state was always written completely before the kill landed')
    assert partial.is_file() and 1 << 20 < partial.stat().st_size < 256 << 20  # killed mid-write
    import basicsr.train
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        opt = {'name': 'run', 'auto_resume': True, 'num_gpu': 0, 'dist': False, 'world_size': 1,
               'datasets': {'train': {'batch_size_per_gpu': 2}},
               'path': {'resume_state': None, 'models': str(tmp_path / 'models')}}
        state = basicsr.train.load_resume_state(opt)
    finally:
        os.chdir(cwd)
        from adflow_plugin import resume
        resume.disarm()  # no training follows here
    assert state == {'iter': 10, 'epoch': 1}
    assert opt['path']['resume_state'].endswith(os.path.join('training_states', '10.state'))


def test_basicsr_is_patched():
    import basicsr.train
    from basicsr.models.base_model import BaseModel
    assert basicsr.train.load_resume_state is compat.load_resume_state
    assert BaseModel.save_network is compat.save_network
    assert BaseModel.save_training_state is compat.save_training_state
    import torchvision.transforms.functional_tensor as ft  # BasicSR 1.4.2's import works
    assert hasattr(ft, 'rgb_to_grayscale')


def test_denormals_are_flushed_on_the_cpu():
    """``import adflow_plugin`` turns on flush-to-zero: a denormal input reads as 0 and a product that would
    be denormal is 0 (torch has no getter for the flag, so the effect itself is checked)."""
    bits = torch.tensor([0x007FFFFF], dtype=torch.int32)  # float32's largest denormal, 1.1754942e-38
    denormal = bits.view(torch.float32)
    assert (denormal * 1.0).view(torch.int32).item() == 0  # without flushing: the same bits, 0x007FFFFF
    assert (denormal * 2.0).view(torch.int32).item() == 0  # 2.35e-38 would be normal: the input read as 0
    assert (torch.tensor([1e-30], dtype=torch.float32) * 1e-10).item() == 0.0
    assert (torch.tensor([1e-30], dtype=torch.float32) * 1e-5).item() != 0.0  # normal results are kept


def test_resume_state_maps_to_cpu_without_gpu():
    assert compat.resume_map_location({'num_gpu': 0}) == 'cpu'
    if not torch.cuda.is_available():
        assert compat.resume_map_location({'num_gpu': 1}) == 'cpu'


def test_states_holding_numpy_scalars_resume_and_foreign_types_stop(tmp_path):
    """States written before the best-metric table was made of Python numbers hold ``np.float64``: they
    load. A complete state holding a type weights-only loading refuses is not damage: auto_resume stops
    with one line instead of falling back to an older state."""
    import numpy as np
    import torch

    from adflow_plugin.compat import ResumeError, find_resume_state
    states = tmp_path / 'training_states'
    states.mkdir()
    table = {'val': {'psnr': {'better': 'higher', 'val': np.float64(31.5), 'iter': 4}}}
    torch.save({'epoch': 0, 'iter': 4, 'best_metric_results': table}, states / '4.state')
    path, state = find_resume_state(str(states), say=pytest.fail)
    assert path.endswith('4.state') and state['best_metric_results']['val']['psnr']['val'] == 31.5
    torch.save({'epoch': 0, 'iter': 6, 'extra': np.zeros(2)}, states / '6.state')
    with pytest.raises(ResumeError, match=r'6\.state holds numpy.*refuses'):
        find_resume_state(str(states), say=pytest.fail)
