"""Exact resume: what BasicSR's training state lacks for a resumed run to continue as if it had not stopped.

BasicSR 1.4.2 saves the epoch, the iteration, the optimizers and the schedulers. A resumed run also needs:

* the best-metric table (``best_metric_results``): without it the first validation after a resume is
  always a "new best" and replaces ``net_g_best.pth`` whatever the earlier validations measured;
* the random states at the save (torch CPU and CUDA, numpy, python ``random``): they draw the
  dequantisation noise, the training samples' latents and the crops and flips;
* the position in the epoch: BasicSR restarts the resumed epoch from its first batch, so the batches
  before the save would be seen twice and the rest of the epoch not at all.

:func:`extra_state` adds ``best_metric_results`` and ``rng`` to every training state; states written
without them still load. :func:`arm` (called when the trainer loads a resume state) makes the training
sampler (BasicSR's ``EnlargedSampler``) skip the batches of the resumed epoch that were already trained
on and restore the random states just before the first batch is read, which is where the uninterrupted
run stood when it saved. With ``num_worker_per_gpu: 0`` and one process a resumed run then ends with the
same weights as an uninterrupted one. Data-loader workers draw their crops and flips from seeds the
loader picks when it starts, and under torch.distributed only rank 0's states are saved; in both cases
the resumed run continues from the right batch with fresh random states (each rank keeps its own seed).
"""
import contextlib
import copy
import itertools
import random

import numpy as np
import torch

_PENDING = None  # the resume position, set by arm() and used once by the training sampler


# ------------------------------------------------------------------ random states
def rng_state():
    """The global random states: torch (CPU, and every CUDA device once CUDA is in use), numpy, python."""
    np_state = np.random.get_state(legacy=False)
    numpy_state = {  # torch.load(weights_only=True) reads tensors, not numpy arrays
        'bit_generator': np_state['bit_generator'],
        'key': torch.from_numpy(np_state['state']['key'].astype(np.int64)),
        'pos': int(np_state['state']['pos']),
        'has_gauss': int(np_state['has_gauss']),
        'gauss': float(np_state['gauss']),
    }
    state = {'torch': torch.get_rng_state(), 'numpy': numpy_state, 'python': random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore what :func:`rng_state` returned (CUDA states only when the device count matches)."""
    torch.set_rng_state(state['torch'])
    n = state['numpy']
    np.random.set_state({
        'bit_generator': n['bit_generator'],
        'state': {'key': n['key'].numpy().astype(np.uint32), 'pos': n['pos']},
        'has_gauss': n['has_gauss'],
        'gauss': n['gauss'],
    })
    random.setstate(_as_tuples(state['python']))
    cuda = state.get('cuda')
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _as_tuples(x):
    """python ``random`` states are nested tuples; a loaded state may hold lists."""
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


@contextlib.contextmanager
def preserved_rng():
    """Leave the global random states as they were (validation must not move the training's random stream)."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


# ------------------------------------------------------------------ training state
def extra_state(model, rng=None):
    """Entries added to a training state: the random states (``rng``, default: now) and the best-metric table."""
    state = {'rng': rng if rng is not None else rng_state()}
    if hasattr(model, 'best_metric_results'):
        state['best_metric_results'] = plain_numbers(model.best_metric_results)
    return state


def plain_numbers(x):
    """A copy of ``x`` with numpy scalars made Python numbers. BasicSR's ``calculate_psnr`` returns
    ``np.float64``, which ``torch.load(weights_only=True)`` refuses, so a state holding one could not be
    resumed from."""
    if isinstance(x, dict):
        return {k: plain_numbers(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(plain_numbers(v) for v in x)
    return x.item() if isinstance(x, np.generic) else copy.deepcopy(x)


def restore_extra_state(model, resume_state):
    """The model's part of :func:`extra_state` (states without it leave the model as BasicSR does)."""
    if resume_state.get('best_metric_results') is not None:
        model.best_metric_results = copy.deepcopy(resume_state['best_metric_results'])


# ------------------------------------------------------------------ position in the epoch
def arm(opt, resume_state):
    """Remember where the state was saved, for the training sampler's next pass (see the module docstring)."""
    global _PENDING
    train = opt['datasets']['train']
    num_gpu = opt.get('num_gpu', 0)
    batch_size = train['batch_size_per_gpu'] * (1 if opt['dist'] or not num_gpu else num_gpu)  # BasicSR's
    single = opt.get('world_size', 1) == 1
    _PENDING = dict(epoch=resume_state['epoch'], iter=resume_state['iter'], batch_size=batch_size,
                    rng=resume_state.get('rng') if single else None)


def disarm():
    global _PENDING
    _PENDING = None


def sampler_iter(original_iter):
    """``EnlargedSampler.__iter__`` that, once after a resume, skips the batches already trained on."""

    def __iter__(self):
        global _PENDING
        indices = original_iter(self)
        pending, _PENDING = _PENDING, None
        if pending is None or pending['epoch'] != self.epoch:
            return indices
        # BasicSR's loop: epoch e holds iterations e * L + 1 .. (e + 1) * L (L batches, the last incomplete
        # one dropped), and a resumed epoch continues where it stopped, so this holds across resumes
        per_epoch = self.num_samples // pending['batch_size']
        done = pending['iter'] - pending['epoch'] * per_epoch
        if pending['rng'] is not None:
            set_rng_state(pending['rng'])
        if 0 < done <= per_epoch:
            return itertools.islice(indices, done * pending['batch_size'], None)
        from basicsr.utils import get_root_logger
        get_root_logger().warning(f'resume: iteration {pending["iter"]} is not in epoch {pending["epoch"]} of '
                                  f'{per_epoch} batches (data set or batch size changed?); the epoch starts over')
        return indices

    __iter__.__wrapped__ = original_iter
    return __iter__


def patch_basicsr():
    """Install the sampler's resumable ``__iter__`` (idempotent)."""
    from basicsr.data.data_sampler import EnlargedSampler
    original = getattr(EnlargedSampler.__iter__, '__wrapped__', EnlargedSampler.__iter__)
    EnlargedSampler.__iter__ = sampler_iter(original)
