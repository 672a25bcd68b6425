"""Invertibility and log-determinant check of the generator an options file describes.

This is what to run when samples look wrong (NaNs, black squares, colour casts): it builds
``network_g`` (loading ``path.pretrain_network_g`` when that file exists), encodes and decodes a real
photograph, compares the log-determinant with autograd's Jacobian on a tiny input in float64, and
draws a sample.
"""
import json
import os
import time
from collections import OrderedDict

import numpy as np
import torch
import yaml

from adflow_plugin.archs.flow_layers import ActNorm, amp_dtype
from adflow_plugin.archs.jacobian_check import check_levels, check_network
from adflow_plugin.data.demo import read_photo
from adflow_plugin.losses.flow_nll_loss import FlowNLLLoss
from adflow_plugin.utils.options_check import OptionsError, check_temperatures
from adflow_plugin.utils.matlab_resize import imresize_uint8

ROUNDTRIP_TOL = 1e-4
LOGDET_REL_TOL = 1e-3
# above this many HR dimensions the whole-network Jacobian is too slow on a CPU; each level is checked
MAX_NETWORK_JACOBIAN_DIMS = 3072


class FlowCheckError(ValueError):
    """The options cannot be checked (not a flow generator, unreadable checkpoint ...)."""


def load_options(path):
    from basicsr.utils.options import ordered_yaml
    with open(path) as f:
        return yaml.load(f, Loader=ordered_yaml()[0])


def build_generator(opt, scale=None, notes=None, allow_untrained=True):
    """AdFlowNet from ``opt['network_g']``, with the checkpoint of ``path.pretrain_network_g`` if it exists
    (a named checkpoint that does not exist is an error unless ``allow_untrained``)."""
    from basicsr.archs import build_network
    net_opt = OrderedDict(opt.get('network_g') or {})
    if net_opt.get('type') != 'AdFlowNet':
        raise FlowCheckError(f"flowcheck needs network_g.type: AdFlowNet, this file has {net_opt.get('type')!r}")
    ckpt = (opt.get('path') or {}).get('pretrain_network_g')
    if ckpt and not os.path.isfile(ckpt) and not allow_untrained:
        raise FlowCheckError(f'checkpoint {ckpt} (path.pretrain_network_g) not found, relative to the current '
                             f'directory {os.getcwd()}; pass --allow-untrained to check the untrained network instead')
    if scale is not None:
        net_opt['scale'] = scale
    embed = net_opt.get('pretrained_embed')
    if embed and not os.path.isfile(embed):
        notes.append(f'pretrained_embed {embed} not found: embedding left at its initialisation')
        net_opt['pretrained_embed'] = None
    net = build_network(net_opt)
    source = 'initialisation'
    if ckpt and os.path.isfile(ckpt):
        from adflow_plugin.apps.infer import InferError
        from adflow_plugin.apps.infer.checkpoint import _load_checkpoint, select_params
        try:  # as basicsr infer loads it: weights only, BasicSR's params_ema -> params fallback
            state, _ = select_params(_load_checkpoint(ckpt), (opt.get('path') or {}).get('param_key_g', 'params'), ckpt)
        except InferError as e:
            raise FlowCheckError(str(e)) from None
        net.load_state_dict(state, strict=True)
        source = ckpt
    elif ckpt:
        notes.append(f'pretrain_network_g {ckpt} not found: checking the untrained network')
    return net, source


def photo_pair(scale, hr_size, multiple):
    """A centre crop of a real photograph (skimage's astronaut) and its MATLAB-bicubic LR, as tensors."""
    step = scale * multiple
    hr_size = max(step, hr_size // step * step)
    img = read_photo('astronaut.png')
    h, w = img.shape[:2]
    if hr_size > min(h, w):
        raise FlowCheckError(f'--hr-size {hr_size} is larger than the test photograph ({h}x{w})')
    top, left = (h - hr_size) // 2, (w - hr_size) // 2
    hr = np.ascontiguousarray(img[top:top + hr_size, left:left + hr_size, ::-1])  # BGR -> RGB
    lr = imresize_uint8(hr, 1 / scale)

    def tensor(a):
        return torch.from_numpy(a.transpose(2, 0, 1).copy()).float().unsqueeze(0) / 255.

    return tensor(lr), tensor(hr)


def run_flowcheck(opt, hr_size=None, scale=None, temperature=None, seed=0, allow_untrained=True, amp=None):
    """Returns the report dict (see ``basicsr flowcheck --help``).

    ``amp`` ('bf16'; default: the options' ``val.amp``): the round trip, NLL and sample run with the
    embedding and the flow's networks under bfloat16 autocast, and the log-determinant check runs in
    float32 under the same autocast (autocast leaves float64 alone, so float64 would not test it).
    """
    start = time.time()
    notes = []
    try:
        amp = amp_dtype(amp if amp is not None else (opt.get('val') or {}).get('amp'), '--amp / val.amp')
    except ValueError as e:
        raise FlowCheckError(str(e)) from None
    torch.manual_seed(seed)
    try:
        t = check_temperatures(temperature if temperature is not None else
                               (opt.get('val') or {}).get('temperature', 1.0),
                               '--temperature' if temperature is not None else 'val.temperature')[0]
    except OptionsError as e:
        raise FlowCheckError(str(e)) from None
    net, source = build_generator(opt, scale, notes, allow_untrained)
    scale = net.scale
    if hr_size is None:
        hr_size = ((opt.get('datasets') or {}).get('train') or {}).get('gt_size') or 160
    lr, hr = photo_pair(scale, int(hr_size), net.lr_multiple)
    nll = FlowNLLLoss(quant=32)
    actnorms = [m for m in net.modules() if isinstance(m, ActNorm)]
    if actnorms and not all(m.is_initialized for m in actnorms):
        net.train()
        with torch.no_grad():
            net(lr, nll.dequantize(hr))  # ActNorm's data-dependent initialisation, as the first training step
        notes.append('ActNorm initialised from the photograph (untrained network)')
    net.eval()
    noisy = nll.dequantize(hr)
    with torch.no_grad():
        cond = net.condition(lr, amp=amp)
        enc = net.encode(noisy, cond=cond)
        roundtrip = (net.decode(cond=cond, latents=enc['latents']) - noisy).abs().max().item()
        sample = net.decode(cond=cond, temperature=t, seed=seed)
    nll_bpd = nll.nll(enc['logp'], enc['logdet'], enc['shape']).mean().item()

    # log-det against the autograd Jacobian, float64 (float32 with amp), on the smallest LR the layout takes
    dtype = torch.float32 if amp is not None else torch.float64
    net_check = net.to(dtype)
    m = net.lr_multiple
    tiny_lr = lr.to(dtype)[:, :, :m, :m]
    tiny_hr = hr.to(dtype)[:, :, :m * scale, :m * scale]
    dims = tiny_hr.numel()
    if net.image_space or dims <= MAX_NETWORK_JACOBIAN_DIMS:
        reports = [check_network(net_check, tiny_lr, tiny_hr, amp=amp)]
        check = f'network ({dims} dims)'
    else:
        reports = check_levels(net_check, tiny_lr, amp=amp)
        check = f'each of {len(reports)} levels (network has {dims} dims at the smallest input)'
    if amp is not None:
        check += ', float32 under bfloat16 autocast'
    net.float()
    logdet_rel = max(r['logdet_rel_err'] for r in reports)
    return OrderedDict(
        roundtrip_max_abs_err=roundtrip,
        logdet_max_rel_err=logdet_rel,
        nll_bits_per_dim=nll_bpd,
        params=sum(p.numel() for p in net.parameters()),
        ok=bool(roundtrip <= ROUNDTRIP_TOL and logdet_rel <= LOGDET_REL_TOL),
        scale=scale,
        hr_size=int(hr.shape[-1]),
        logdet_check=check,
        sample_temperature=t,
        amp='bf16' if amp is not None else None,
        sample_nonfinite=int((~torch.isfinite(sample)).sum().item()),
        sample_min=float(torch.nan_to_num(sample).min().item()),
        sample_max=float(torch.nan_to_num(sample).max().item()),
        weights=source,
        notes=notes,
        seconds=round(time.time() - start, 1),
    )


def format_report(report):
    return json.dumps(report)
