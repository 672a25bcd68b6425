"""Distributed training on torch.distributed for BasicSR 1.4.2: CPU processes (gloo) and GPUs (nccl).

BasicSR's own path assumes CUDA: ``parse_options`` calls ``init_dist(launcher)`` with backend 'nccl'
(the YAML's ``dist_params`` reach only the Slurm launcher), ``_init_dist_pytorch`` and
``_init_dist_slurm`` call ``torch.cuda.set_device``, and ``BaseModel.model_to_device`` hands DDP
``device_ids=[torch.cuda.current_device()]``. :func:`patch_basicsr` (applied by ``import
adflow_plugin``) replaces these three places; nothing else of BasicSR's loop changes.

Backend: ``dist_params.backend`` when the YAML gives one, else 'nccl' when CUDA is available and
``num_gpu`` is not 0, else 'gloo'. A CUDA device is selected (``LOCAL_RANK``) only on the GPU path.
``dist_params.timeout`` (seconds) sets how long ranks wait in a collective, e.g. while rank 0 validates
alone; ``dist_params.port`` is the master port under Slurm (torchrun sets its own).

DistributedDataParallel, for every network BasicSR wraps (``net_g``; AdFlow's ``net_d``):

* ``find_unused_parameters`` from the YAML's top-level key (BasicSR's), default false. Every
  parameter of AdFlowNet gets a gradient in both stages (one call returns the NLL and the sample),
  so the AdFlow options leave it off; a network with unused parameters fails at its second
  iteration with DDP's message naming this key.
* Buffers are synchronised from rank 0 when the network is wrapped (ActNorm's ``initialized`` flags,
  the fixed random rotations: each rank builds its network from a different seed, ``manual_seed +
  rank``), not before every forward. YAML ``broadcast_buffers: true`` restores DDP's default of
  re-broadcasting them at every forward. So the discriminator's BatchNorm running statistics are per
  rank (each rank's own batches; they are used only in eval mode, which training never enters, and
  rank 0's are saved); YAML ``sync_bn: true`` converts BatchNorm to SyncBatchNorm (GPU only), which
  normalises with the statistics of the combined batch and keeps them identical on every rank.
"""
import argparse
import datetime
import inspect
import os
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn as nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

_DDP_ARGS = inspect.signature(DistributedDataParallel.__init__).parameters


class DistConfigError(ValueError):
    """Options that cannot work for distributed training (e.g. nccl without a GPU)."""


# ------------------------------------------------------------------ options
def wants_cuda(opt):
    """True when the options train on GPUs (``num_gpu`` not 0, or 'auto' with a GPU present) and CUDA is there."""
    num_gpu = opt.get('num_gpu', 1)
    if num_gpu == 'auto':
        num_gpu = torch.cuda.device_count()
    return num_gpu != 0 and torch.cuda.is_available()


def choose_backend(opt):
    """``dist_params.backend`` if given, else 'nccl' on the GPU path and 'gloo' on the CPU path."""
    backend = (opt.get('dist_params') or {}).get('backend')
    use_cuda = wants_cuda(opt)
    if backend is None:
        return 'nccl' if use_cuda else 'gloo'
    if backend == 'nccl' and not use_cuda:
        why = 'num_gpu is 0' if torch.cuda.is_available() else 'no CUDA GPU is available'
        raise DistConfigError(f"dist_params.backend is 'nccl', which needs GPUs, but {why}: set "
                              "dist_params.backend to 'gloo' for CPU processes, or delete it to choose from the "
                              'device (--force_yml dist_params:backend=gloo also works)')
    return backend


def peek_options(argv):
    """What BasicSR's ``parse_options`` will read, before it calls ``init_dist``: (launcher, options dict).

    The YAML is read as BasicSR reads it and the ``--force_yml`` overrides are applied, so
    ``--force_yml dist_params:backend=gloo num_gpu=0`` reaches the backend choice.
    """
    from basicsr.utils.options import _postprocess_yml_value, ordered_yaml
    import yaml

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt', type=str, required=True)
    parser.add_argument('--launcher', default='none')
    parser.add_argument('--force_yml', nargs='+', default=None)
    args, _ = parser.parse_known_args(argv)
    with open(args.opt) as f:
        opt = yaml.load(f, Loader=ordered_yaml()[0])
    for entry in args.force_yml or []:
        keys, value = (s.strip() for s in entry.split('='))
        node = opt
        *parents, last = keys.split(':')
        for key in parents:
            node = node.setdefault(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node[last] = _postprocess_yml_value(value)
    return args.launcher, opt


# ------------------------------------------------------------------ process group
def init_dist(launcher, backend=None, port=None, use_cuda=None, **kwargs):
    """Start the process group (idempotent), replacing ``basicsr.utils.dist_util.init_dist``.

    Args:
        launcher (str): 'pytorch' (torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in the
            environment) or 'slurm' (srun: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODELIST).
        backend (str | None): 'gloo' or 'nccl'; None: 'nccl' if ``use_cuda`` else 'gloo'.
        port (int | None): Slurm only: the master port (else MASTER_PORT, else 29500).
        use_cuda (bool | None): Select a CUDA device per process. None: whether CUDA is available.
    """
    if dist.is_initialized():
        return
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')  # as BasicSR: data-loader workers do not fork a process with a process group
    if use_cuda is None:
        use_cuda = torch.cuda.is_available()
    backend = backend or ('nccl' if use_cuda else 'gloo')
    if launcher == 'slurm':
        _slurm_environment(port)
    elif launcher != 'pytorch':
        raise ValueError(f"Invalid launcher type: {launcher} (use 'pytorch' for torchrun or 'slurm')")
    if use_cuda:
        # modulo: a Slurm task bound to one GPU sees it as device 0 whatever its local id
        local_rank = int(os.environ.get('LOCAL_RANK', os.environ['RANK']))
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group(backend=backend, **kwargs)
    if dist.get_rank() == 0:  # BasicSR's logger does not exist yet (it prints 'Disable distributed.' likewise)
        device = f'cuda:{torch.cuda.current_device()} on rank 0' if use_cuda else 'CPU'
        print(f'Distributed: {dist.get_world_size()} processes, backend {backend}, {device}.', flush=True)


def _slurm_environment(port=None):
    """torch.distributed's environment from Slurm's (as BasicSR's ``_init_dist_slurm``, without CUDA calls)."""
    node_list = os.environ['SLURM_NODELIST']
    addr = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    else:
        os.environ.setdefault('MASTER_PORT', '29500')
    os.environ['MASTER_ADDR'] = addr
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')


def start_from_options(argv):
    """Start the process group the way the options file asks (called before BasicSR's parse_options)."""
    launcher, opt = peek_options(argv)
    if launcher == 'none' or dist.is_initialized():
        return
    params = dict(opt.get('dist_params') or {})
    unknown = sorted(set(params) - {'backend', 'port', 'timeout'})
    if unknown:
        raise DistConfigError(
            f'unknown dist_params {unknown}: the keys are backend, port (Slurm) and timeout (seconds)')
    params['backend'] = choose_backend(opt)
    if launcher != 'slurm':
        params.pop('port', None)  # torchrun sets MASTER_PORT
    if params.get('timeout') is not None:
        # how long ranks wait in a collective, e.g. for rank 0 validating alone (nccl's default: 10 minutes)
        params['timeout'] = datetime.timedelta(seconds=float(params['timeout']))
    init_dist(launcher, use_cuda=wants_cuda(opt), **params)


def wrap_parse_options(parse_options):
    """BasicSR's ``parse_options`` with the process group started first (its own ``init_dist`` call is then a no-op)."""
    def wrapped(root_path, is_train=True):
        start_from_options(sys.argv[1:])
        return parse_options(root_path, is_train)

    wrapped.__wrapped__ = parse_options
    wrapped.__doc__ = parse_options.__doc__
    return wrapped


# ------------------------------------------------------------------ DDP
def ddp_kwargs(opt, device):
    """Keyword arguments of DistributedDataParallel for a network on ``device`` (see the module docstring)."""
    kwargs = dict(find_unused_parameters=bool(opt.get('find_unused_parameters', False)))
    if device.type == 'cuda':
        kwargs['device_ids'] = [torch.cuda.current_device()]
    broadcast = bool(opt.get('broadcast_buffers', False))
    if 'forward_sync_buffers' in _DDP_ARGS:  # torch >= 2.13: buffers always synced at construction
        kwargs['forward_sync_buffers'] = broadcast
    else:  # older torch: broadcast_buffers=False also skips the construction sync; wrap_ddp does it
        kwargs['broadcast_buffers'] = broadcast
    return kwargs


def wrap_ddp(net, opt, device):
    """Wrap ``net`` (already on ``device``) in DistributedDataParallel; SyncBatchNorm if ``opt['sync_bn']``."""
    if opt.get('sync_bn', False):
        if device.type != 'cuda':
            raise DistConfigError('sync_bn: true needs GPUs (torch.nn.SyncBatchNorm does not run on the CPU); '
                                  'remove it: BatchNorm statistics then stay per process')
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    kwargs = ddp_kwargs(opt, device)
    if kwargs.get('broadcast_buffers') is False:
        for buf in net.buffers():
            synced = buf.contiguous()  # nccl needs contiguous tensors (QR's rotations are column-major)
            dist.broadcast(synced, src=0)
            if synced is not buf:
                buf.copy_(synced)
    ddp = DistributedDataParallel(net, **kwargs)
    from adflow_plugin.archs.flow_layers import sync_actnorm_flags  # imported here: archs register with BasicSR
    sync_actnorm_flags(net)  # the broadcast wrote ActNorm's 'initialized' buffers; their Python mirrors follow
    return ddp


def model_to_device(self, net):
    """Replacement for ``BaseModel.model_to_device``: DDP without ``device_ids`` on the CPU."""
    net = net.to(self.device)
    if self.opt['dist']:
        return wrap_ddp(net, self.opt, self.device)
    if self.opt['num_gpu'] > 1:
        return DataParallel(net)
    return net


def patch_basicsr():
    """Install the replacements in BasicSR (idempotent)."""
    import basicsr.test
    import basicsr.train
    import basicsr.utils.dist_util
    import basicsr.utils.options
    from basicsr.models.base_model import BaseModel

    basicsr.utils.dist_util.init_dist = init_dist
    basicsr.utils.options.init_dist = init_dist
    original = getattr(basicsr.utils.options.parse_options, '__wrapped__', basicsr.utils.options.parse_options)
    wrapped = wrap_parse_options(original)
    for module in (basicsr.utils.options, basicsr.train, basicsr.test):
        module.parse_options = wrapped
    BaseModel.model_to_device = model_to_device
