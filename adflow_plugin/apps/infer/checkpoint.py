"""The network ``basicsr infer`` runs: built from an options file or a checkpoint, its weights loaded safely.

``model`` is either an options YAML (``network_g`` is built from it; the weights come from its
``path.pretrain_network_g``, key ``path.param_key_g``, as ``basicsr test`` loads them) or a checkpoint
``.pth``. A BasicSR checkpoint holds only the weights (``params`` / ``params_ema``), not the
architecture, so a checkpoint needs ``arch``: an options YAML whose ``network_g`` it was trained with.
Without ``arch``, an ESRGAN (RRDBNet) checkpoint is recognised from its keys and shapes (width, blocks,
growth channels, number of upsampling stages); 2 upsampling stages mean 4x (BasicSR's ``RRDBNet``) or
6x (``MultiScaleRRDBNet``), so a 6x one needs ``scale=6``. A flow checkpoint without ``arch`` is an
error that says so. Every checkpoint is read with ``torch.load(..., weights_only=True)``: a downloaded
file cannot run code; one that needs full unpickling is refused.
"""
import os
import os.path as osp
import re
from copy import deepcopy
from dataclasses import dataclass

import torch
import yaml

from adflow_plugin.apps.infer.errors import InferError
from adflow_plugin.utils.options_check import OptionsError, check_temperatures


@dataclass
class SRNetwork:
    """A loaded generator, in eval mode, on its device.

    Attributes:
        net (nn.Module): The network.
        scale (int): Upscaling factor.
        stochastic (bool): A flow (has ``condition`` and ``decode``): sampled at temperatures.
        lr_multiple (int): LR height and width are padded to a multiple of this.
        description (str): One line saying what was loaded from where.
        temperatures (list[float] | None): ``val.temperature`` of the options file, if any.
        amp (torch.dtype | None): Mixed precision (bfloat16): a flow's embedding and networks (see
            ``AdFlowNet.condition``), or the whole of a deterministic network, under autocast.
    """
    net: torch.nn.Module
    scale: int
    stochastic: bool
    lr_multiple: int = 1
    description: str = ''
    temperatures: list = None
    amp: torch.dtype = None

    @property
    def device(self):
        return next(self.net.parameters()).device

    @torch.no_grad()
    def run(self, lq, jobs):
        """SR of one LR batch for each ``(temperature, seed)`` in ``jobs`` (a flow's embedding computed once);
        a deterministic network returns its one output, whatever ``jobs`` holds."""
        if not self.stochastic:
            with torch.autocast(lq.device.type, dtype=self.amp or torch.bfloat16, enabled=self.amp is not None):
                return [self.net(lq).to(lq.dtype)]
        last = self.__dict__.get('_last_condition')
        if last is None or last[0] is not lq:  # the same tile again (the next chunk of samples): reuse
            last = (lq, self.net.condition(lq, amp=self.amp))
            self._last_condition = last
        return [self.net.decode(cond=last[1], temperature=t, seed=seed) for t, seed in jobs]

    def forget(self):
        """Drop the embedding kept for the last tile."""
        self.__dict__.pop('_last_condition', None)


def _load_checkpoint(path):
    if not osp.isfile(path):
        raise InferError(f'checkpoint not found: {path}')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # pickle.UnpicklingError for objects other than tensors and containers, others if corrupt
        text = re.sub(r'\x1b\[[0-9;]*m', '', str(e))
        found = re.search(r'Unsupported global: GLOBAL (\S+)', text)
        if found:
            reason = f'it holds a Python object of type {found.group(1)}, which only full unpickling (able to run ' \
                     'code) could load'
        else:
            reason = f'not a PyTorch checkpoint, or damaged ({type(e).__name__}: {text.strip()[:200]})'
        raise InferError(f'cannot load {path} with torch.load(weights_only=True), which infer requires so that a '
                         f'checkpoint cannot run code: {reason}') from None


def select_params(ckpt, param_key=None, path='checkpoint'):
    """The state dict inside a loaded checkpoint: ``ckpt[param_key]`` when given (BasicSR's fallback from
    ``params_ema`` to ``params``), else ``params_ema``, else ``params``, else ``ckpt`` itself when it is a
    plain state dict. Strips DataParallel's ``module.`` prefixes. Returns ``(state_dict, key)``."""
    if not isinstance(ckpt, dict):
        raise InferError(f'{path} holds a {type(ckpt).__name__}, not a checkpoint dict')
    if param_key is not None:
        if param_key not in ckpt and param_key == 'params_ema' and 'params' in ckpt:
            param_key = 'params'
        if param_key not in ckpt:
            raise InferError(f'{path} has no {param_key!r} entry; it has {sorted(map(str, ckpt))[:8]}')
        key = param_key
    else:
        key = next((k for k in ('params_ema', 'params') if k in ckpt), None)
    state = ckpt[key] if key is not None else ckpt
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise InferError(f'{path} is not a BasicSR checkpoint: expected "params_ema" or "params" holding a state '
                         f'dict, found keys {sorted(map(str, ckpt))[:8]}')
    return {k[7:] if k.startswith('module.') else k: v for k, v in state.items()}, key


def rrdbnet_options(state, scale=None):
    """``network_g`` options of an ESRGAN generator recognised from a state dict, or None if it is not one.

    BasicSR's ``RRDBNet`` (x4; x2 and x1 read pixel-unshuffled input) and this plugin's ``MultiScaleRRDBNet``
    (x6, x8, ...) share their parameter names; the shapes give the width, growth channels, block count and
    upsampling stages. Two upsampling stages fit 4x and 6x: 4x unless ``scale`` is 6.

    Returns:
        (dict, list[int]): the options and the scales the checkpoint fits, or None.
    """
    need = ('conv_first.weight', 'body.0.rdb1.conv1.weight', 'conv_body.weight', 'conv_last.weight')
    if not all(k in state for k in need):
        return None
    num_feat, in_ch = state['conv_first.weight'].shape[:2]
    out_ch = state['conv_last.weight'].shape[0]
    num_grow_ch = state['body.0.rdb1.conv1.weight'].shape[0]
    num_block = 1 + max(int(k.split('.')[1]) for k in state if k.startswith('body.'))
    num_up = sum(1 for k in state if k.startswith('conv_up') and k.endswith('.weight'))
    common = dict(num_out_ch=int(out_ch), num_feat=int(num_feat), num_block=int(num_block),
                  num_grow_ch=int(num_grow_ch))
    if in_ch == out_ch * 4 and num_up == 2:  # BasicSR RRDBNet x2 (pixel_unshuffle by 2)
        fits = {2: dict(type='RRDBNet', num_in_ch=int(out_ch), scale=2, **common)}
    elif in_ch == out_ch * 16 and num_up == 2:  # BasicSR RRDBNet x1
        fits = {1: dict(type='RRDBNet', num_in_ch=int(out_ch), scale=1, **common)}
    elif in_ch == out_ch:
        by_ups = {0: [1], 1: [2, 3], 2: [4, 6], 3: [8], 4: [16]}
        fits = {}
        for s in by_ups.get(num_up, []):
            kind = 'RRDBNet' if s == 4 else 'MultiScaleRRDBNet'
            fits[s] = dict(type=kind, num_in_ch=int(in_ch), scale=s, **common)
    else:
        return None
    if not fits:
        return None
    chosen = scale if scale is not None else next(iter(fits))
    if chosen not in fits:
        raise InferError(f'this ESRGAN (RRDBNet) checkpoint upscales by {" or ".join(map(str, fits))}, not '
                         f'--scale {scale}')
    return fits[chosen], list(fits)


def _read_options(path):
    try:
        with open(path) as f:
            opt = yaml.safe_load(f)
    except OSError as e:
        raise InferError(f'cannot read options file {path}: {e.strerror}') from None
    except yaml.YAMLError as e:
        raise InferError(f'options file {path} is not valid YAML: {str(e).splitlines()[0]}') from None
    if not isinstance(opt, dict) or not isinstance(opt.get('network_g'), dict) or 'type' not in opt['network_g']:
        raise InferError(f'options file {path} has no network_g (with a type) to build the network from')
    return opt


def _is_options_file(path):
    return path.lower().endswith(('.yml', '.yaml'))



def load_network(model, arch=None, scale=None, device='cpu'):
    """Build and load a generator for inference.

    Args:
        model (str): An options YAML (``network_g`` + ``path.pretrain_network_g``, resolved against the current
            directory as ``basicsr test`` does) or a checkpoint ``.pth``.
        arch (str | None): With a checkpoint: the options YAML whose ``network_g`` builds the network (its
            ``path`` section is ignored). Not needed for ESRGAN (RRDBNet) checkpoints.
        scale (int | None): Expected scale; an error if the network's differs. Picks 6x for an ambiguous
            ESRGAN checkpoint.
        device (str | torch.device): Where to run.

    Returns:
        SRNetwork
    """
    import adflow_plugin  # noqa: F401  (registers the plugin's architectures)
    from basicsr.archs import build_network

    opt, param_key, ckpt_path, source = None, None, model, None
    if _is_options_file(model):
        if arch is not None:
            raise InferError('--arch goes with a checkpoint (--model CKPT.pth); an options file already names '
                             'its network and weights')
        opt = _read_options(model)
        ckpt_path = (opt.get('path') or {}).get('pretrain_network_g')
        if not ckpt_path:
            raise InferError(f'options file {model} has no path.pretrain_network_g; pass the checkpoint instead: '
                             f'--model CKPT.pth --arch {model}')
        if not osp.isfile(ckpt_path):
            raise InferError(f'checkpoint {ckpt_path} (path.pretrain_network_g of {model}, relative to the current '
                             f'directory {os.getcwd()}) not found; run from the folder it is relative to, or pass '
                             f'--model CKPT.pth --arch {model}')
        param_key = opt['path'].get('param_key_g', 'params')
        source = model
    elif arch is not None:
        if not _is_options_file(arch):
            raise InferError(f'--arch takes an options YAML (.yml) with network_g, got {arch}')
        opt = _read_options(arch)
        source = arch
    state, key = select_params(_load_checkpoint(ckpt_path), param_key, ckpt_path)

    if opt is not None:
        net_opt = deepcopy(opt['network_g'])
        net_opt.pop('pretrained_embed', None)  # the full checkpoint overwrites it; the file need not exist here
        opt_scale = net_opt.get('scale', opt.get('scale'))
        how = f'network_g of {source}'
    else:
        found = rrdbnet_options(state, scale)
        if found is None:
            flow = any(k.startswith('embed.') for k in state) and any(k.startswith('levels.') for k in state)
            what = ('an AdFlow/BaseFlow (AdFlowNet) checkpoint; a flow checkpoint does not record its architecture '
                    '(levels, flow depth, widths)') if flow else 'not an ESRGAN (RRDBNet) checkpoint'
            raise InferError(f'{ckpt_path} is {what}: pass the options file it was trained or tested with, '
                             f'--model {ckpt_path} --arch OPTIONS.yml (e.g. options/test_AdFlow_x4.yml), or '
                             f'--model OPTIONS.yml')
        net_opt, fits = found
        opt_scale = net_opt['scale']
        how = (f'ESRGAN recognised from the weights: {net_opt["type"]} num_feat={net_opt["num_feat"]} '
               f'num_block={net_opt["num_block"]} num_grow_ch={net_opt["num_grow_ch"]} x{opt_scale}')
        if len(fits) > 1 and scale is None:
            how += f' (its layout also fits x{", x".join(map(str, fits[1:]))}: pass --scale to choose)'
    try:
        net = build_network(deepcopy(net_opt))
    except Exception as e:
        raise InferError(f'cannot build {net_opt.get("type")} from {how}: {e}') from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        own = net.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        shape = [k for k in own if k in state and own[k].shape != state[k].shape]
        raise InferError(f'{ckpt_path} does not fit {how}: missing {missing[:3]}, unexpected {unexpected[:3]}, '
                         f'other shapes {shape[:3]} ({len(missing)}/{len(unexpected)}/{len(shape)} in all)') from e
    net.eval().to(device)

    stochastic = callable(getattr(net, 'condition', None)) and callable(getattr(net, 'decode', None))
    net_scale = getattr(net, 'scale', None) or opt_scale
    if net_scale is None:
        raise InferError(f'cannot tell the scale of {net_opt.get("type")}: set scale in the options file')
    net_scale = int(net_scale)
    if scale is not None and int(scale) != net_scale:
        raise InferError(f'--scale {scale} but the network upscales by {net_scale}')
    if hasattr(net, 'lr_multiple'):
        multiple = int(net.lr_multiple)
    elif net_opt.get('type') == 'RRDBNet':  # BasicSR's RRDBNet pixel-unshuffles its input at x2 and x1
        multiple = {2: 2, 1: 4}.get(net_scale, 1)
    else:
        multiple = 1
    temps = None
    if opt is not None and (opt.get('val') or {}).get('temperature') is not None:
        try:
            temps = check_temperatures(opt['val']['temperature'], f'val.temperature of {source}')
        except OptionsError as e:
            raise InferError(str(e)) from None
    description = f'{net_opt.get("type")} x{net_scale} from {ckpt_path}' + (f' [{key}]' if key else '') + f'; {how}'
    return SRNetwork(net, net_scale, stochastic, multiple, description, temps)
