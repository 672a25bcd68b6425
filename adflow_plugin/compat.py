"""Fixes that make BasicSR 1.4.2 run on current torch/torchvision and without CUDA.

Applied once by ``import adflow_plugin``; each fix is idempotent and changes no BasicSR file.
"""
import importlib
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


def load_resume_state(opt):
    """Replacement for ``basicsr.train.load_resume_state`` that also works without CUDA.

    BasicSR maps the resume state to ``torch.cuda.current_device()`` unconditionally; this maps it to
    the CPU when ``num_gpu`` is 0 or no GPU is present. The state file search is BasicSR's.
    """
    import os.path as osp

    import torch
    from basicsr.utils import check_resume, scandir

    resume_state_path = None
    if opt['auto_resume']:
        state_path = osp.join('experiments', opt['name'], 'training_states')
        if osp.isdir(state_path):
            states = list(scandir(state_path, suffix='state', recursive=False, full_path=False))
            if len(states) != 0:
                states = [float(v.split('.state')[0]) for v in states]
                resume_state_path = osp.join(state_path, f'{max(states):.0f}.state')
                opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']

    if resume_state_path is None:
        return None
    resume_state = torch.load(resume_state_path, map_location=resume_map_location(opt), weights_only=True)
    check_resume(opt, resume_state['iter'])
    return resume_state


def flush_denormals():
    """Treat denormal floats as zero on the CPU.

    Flow layers multiply by ``exp`` of learned log-scales and sigmoids; activations and gradients then
    drift into the denormal range, where x86 CPUs run up to ~100x slower (measured here: a demo
    AdFlow training step took 8 s instead of 0.14 s). GPUs flush denormals already.
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
    basicsr.train.load_resume_state = load_resume_state
    from adflow_plugin import dist
    dist.patch_basicsr()  # torch.distributed on CPU (gloo) and GPU (nccl); see adflow_plugin/dist.py
    _APPLIED = True
