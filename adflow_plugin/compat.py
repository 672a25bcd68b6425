"""Fixes that make BasicSR 1.4.2 run on current torch/torchvision and without CUDA, and save safely.

Applied once by ``import adflow_plugin``; each fix is idempotent and changes no BasicSR file.
"""
import importlib
import re
import sys

_APPLIED = False


def alias_functional_tensor():
    """BasicSR 1.4.2 imports ``torchvision.transforms.functional_tensor`` (removed in torchvision 0.17).

    ``rgb_to_grayscale``, the only name it needs, lives in ``torchvision.transforms.functional``.
    Must run before the first ``import basicsr``.
    """
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
    except ImportError:
        sys.modules[name] = importlib.import_module('torchvision.transforms.functional')


def resume_map_location(opt):
    """Where a resume state's tensors go: the current CUDA device when training on GPU, else the CPU."""
    import torch
    if opt.get('num_gpu', 0) != 0 and torch.cuda.is_available():
        device_id = torch.cuda.current_device()
        return lambda storage, loc: storage.cuda(device_id)
    return 'cpu'


class ResumeError(RuntimeError):
    """No usable training state to resume from, stated in one line."""


def _numpy_scalar_globals():
    """What ``torch.load(weights_only=True)`` needs to read numpy float and integer scalars (no code runs):
    states written before the best-metric table was stored as Python numbers hold ``np.float64``."""
    import numpy as np
    return [np._core.multiarray.scalar, np.dtype] + [type(np.dtype(t)) for t in ('f2', 'f4', 'f8', 'i4', 'i8')]


def _read_state(path, map_location):
    """A training state, or the reason it cannot be used (a one-line string)."""
    import torch
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated or damaged file: zip, pickle or storage errors
        unsupported = re.search(r'Unsupported global: GLOBAL (\S+)', str(e))
        if unsupported:  # a complete file that holds a type weights-only loading refuses: not damage
            raise ResumeError(f'{path} holds {unsupported.group(1)}, which torch.load(weights_only=True) refuses; '
                              'it was not written by this version of the plugin: resume with an older state '
                              '(path:resume_state) or start over') from None
        lines = str(e).strip().splitlines()
        return None, f'{type(e).__name__}: {lines[0][:160] if lines else "unreadable"}'
    if not isinstance(state, dict) or not isinstance(state.get('iter'), int):
        return None, 'not a BasicSR training state (no iteration number)'
    return state, None


def find_resume_state(state_dir, map_location='cpu', say=None):
    """The newest ``<iter>.state`` under ``state_dir`` that loads, as ``(path, state)``; ``(None, None)``
    when there is none. Each newer one that does not load is skipped with a message saying why (a run
    killed while writing one, or a full disk)."""
    import os

    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if not os.path.isdir(state_dir):
        return None, None
    iters = sorted((int(f[:-len('.state')]) for f in os.listdir(state_dir)
                    if f.endswith('.state') and f[:-len('.state')].isdigit()), reverse=True)
    failed = []
    for it in iters:
        path = os.path.join(state_dir, f'{it}.state')
        state, reason = _read_state(path, map_location)
        if state is not None:
            for skipped, why in failed:
                say(f'auto_resume: skipped {skipped} ({why}); resuming from {path}')
            return path, state
        failed.append((path, reason))
    if failed:
        raise ResumeError(f'--auto_resume: no training state in {state_dir} can be read (newest: {failed[0][0]}: '
                          f'{failed[0][1]}); remove the damaged files to start over, or restore them')
    return None, None


def load_resume_state(opt):
    """Replacement for ``basicsr.train.load_resume_state`` that also works without CUDA and survives a damaged
    newest state.

    BasicSR maps the resume state to ``torch.cuda.current_device()`` unconditionally; this maps it to
    the CPU when ``num_gpu`` is 0 or no GPU is present. With ``--auto_resume``, the newest
    ``<iter>.state`` that loads is taken (BasicSR takes the newest and stops with a traceback when it is
    damaged); an explicit ``path.resume_state`` that does not load is a one-line error.
    """
    import os.path as osp

    from basicsr.utils import check_resume

    location = resume_map_location(opt)
    resume_state = None
    if opt['auto_resume']:
        path, resume_state = find_resume_state(osp.join('experiments', opt['name'], 'training_states'), location)
        if path is not None:
            opt['path']['resume_state'] = path
    elif opt['path'].get('resume_state'):
        path = opt['path']['resume_state']
        resume_state, reason = _read_state(path, location)
        if resume_state is None:
            raise ResumeError(f'path.resume_state {path} cannot be read ({reason})')
    if resume_state is None:
        return None
    check_resume(opt, resume_state['iter'])
    from adflow_plugin import resume
    resume.arm(opt, resume_state)  # the sampler continues the epoch where the state was saved
    return resume_state


def atomic_torch_save(obj, path, retries=3):
    """``torch.save`` to ``path.partial``, then rename: a killed run never leaves a truncated checkpoint or
    training state under its final name (``--auto_resume`` picks the newest ``<iter>.state``)."""
    import os
    import time

    import torch
    from basicsr.utils import get_root_logger

    tmp = f'{path}.partial'
    for attempt in range(retries):
        try:
            torch.save(obj, tmp)
            os.replace(tmp, path)
            return
        except OSError as e:  # BasicSR retries occasional write errors; so do we
            get_root_logger().warning(f'Save {path} failed: {e}; {retries - attempt - 1} retries left')
            time.sleep(1)
    get_root_logger().warning(f'Still cannot save {path}. Just ignore it.')


def save_network(self, net, net_label, current_iter, param_key='params'):
    """BasicSR's ``BaseModel.save_network``, written atomically (rank 0 only, as BasicSR)."""
    import os
    from basicsr.utils.dist_util import get_dist_info
    if get_dist_info()[0] != 0:
        return
    current_iter = 'latest' if current_iter == -1 else current_iter
    save_path = os.path.join(self.opt['path']['models'], f'{net_label}_{current_iter}.pth')
    nets = net if isinstance(net, list) else [net]
    keys = param_key if isinstance(param_key, list) else [param_key]
    assert len(nets) == len(keys), 'The lengths of net and param_key should be the same.'
    save_dict = {}
    for net_, key in zip(nets, keys):
        state = self.get_bare_model(net_).state_dict()
        save_dict[key] = {(k[7:] if k.startswith('module.') else k): v.cpu() for k, v in state.items()}
    atomic_torch_save(save_dict, save_path)


def save_training_state(self, epoch, current_iter, rng=None):
    """BasicSR's ``BaseModel.save_training_state``, written atomically (rank 0 only, as BasicSR), plus the
    random states (``rng``, default: now) and the best-metric table (see adflow_plugin/resume.py)."""
    import os
    from basicsr.utils.dist_util import get_dist_info

    from adflow_plugin import resume
    if get_dist_info()[0] != 0 or current_iter == -1:
        return
    state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
             'schedulers': [s.state_dict() for s in self.schedulers]}
    state.update(resume.extra_state(self, rng))
    atomic_torch_save(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))


def resume_training(self, resume_state):
    """BasicSR's ``BaseModel.resume_training`` (optimizers, schedulers) plus the best-metric table."""
    from adflow_plugin import resume
    _BASICSR_RESUME_TRAINING(self, resume_state)
    resume.restore_extra_state(self, resume_state)


_BASICSR_RESUME_TRAINING = None


def flush_denormals():
    """Treat denormal floats as zero on the CPU.

    Flow layers multiply by ``exp`` of learned log-scales and by sigmoids, whose tails put activations
    and gradients into the denormal range, where x86 CPUs compute very slowly (measured here: a 3x3
    convolution of an 8x64x64x64 denormal input took 3.4 s instead of 0.017 s, one thread). Values that
    small are zero for every purpose here. GPUs flush denormals already.
    """
    import torch
    torch.set_flush_denormal(True)


def apply():
    """Apply every fix (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    alias_functional_tensor()
    flush_denormals()
    import basicsr.train
    from basicsr.models.base_model import BaseModel
    global _BASICSR_RESUME_TRAINING
    basicsr.train.load_resume_state = load_resume_state
    BaseModel.save_network = save_network
    BaseModel.save_training_state = save_training_state
    _BASICSR_RESUME_TRAINING = BaseModel.resume_training
    BaseModel.resume_training = resume_training
    from adflow_plugin import resume
    resume.patch_basicsr()  # training sampler: continue a resumed epoch where it stopped
    from adflow_plugin import dist
    dist.patch_basicsr()  # torch.distributed on CPU (gloo) and GPU (nccl); see adflow_plugin/dist.py
    _APPLIED = True
