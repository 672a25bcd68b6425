"""Super-resolve image files with a trained generator: AdFlow / BaseFlow (flows) or ESRGAN (``basicsr infer``).

The network
    ``model`` is either an options YAML (``network_g`` is built from it; the weights come from its
    ``path.pretrain_network_g``, key ``path.param_key_g``, as ``basicsr test`` loads them) or a checkpoint
    ``.pth``. A BasicSR checkpoint holds only the weights (``params`` / ``params_ema``), not the
    architecture, so a checkpoint needs ``arch``: an options YAML whose ``network_g`` it was trained with.
    Without ``arch``, an ESRGAN (RRDBNet) checkpoint is recognised from its keys and shapes (width, blocks,
    growth channels, number of upsampling stages); 2 upsampling stages mean 4x (BasicSR's ``RRDBNet``) or
    6x (``MultiScaleRRDBNet``), so a 6x one needs ``scale=6``. A flow checkpoint without ``arch`` is an
    error that says so. Every checkpoint is read with ``torch.load(..., weights_only=True)``: a downloaded
    file cannot run code; one that needs full unpickling is refused.

Sampling
    A flow (a network with ``condition`` and ``decode``: :class:`~adflow_plugin.archs.adflow_arch.AdFlowNet`)
    draws one output per temperature and sample: the LR embedding is computed once per tile and reused
    for every temperature and sample. Sample ``k`` uses seed ``seed + k`` (tile ``j`` of a tiled image:
    ``seed + k + 1000003 j``, so tiles draw independent noise), the same for every temperature and every
    image: an image's outputs do not depend on the other inputs. Temperature 0 is the deterministic mode.
    Any other network is called as ``net(lq)``; temperatures and samples do not apply to it.

Images
    Read with ``cv2.IMREAD_UNCHANGED``: 8- or 16-bit, grayscale, grayscale + alpha, colour or colour +
    alpha. The network sees RGB floats in [0, 1] (16-bit inputs at full precision). Grayscale is processed
    as three equal channels and converted back to one (ITU-R BT.601 luma, as ``cv2.COLOR_BGR2GRAY``);
    alpha is upscaled separately by bicubic interpolation (it is not the LR -> SR path) and re-attached;
    the bit depth is kept (a 16-bit grayscale + alpha output is stored as RGBA with three equal channels:
    OpenCV and Pillow write no 16-bit grayscale + alpha PNG). A JPEG's EXIF orientation is applied as image
    viewers apply it, so the output (which carries no EXIF) displays as the input does. A truncated PNG or
    JPEG (no end marker; OpenCV would decode it with a grey lower part) stops the run before anything is
    written, as in ``basicsr prepare-data``. The LR is padded (reflect) to a multiple of
    the network's ``lr_multiple`` and the output cropped back to ``scale`` x the input size. Outputs are
    PNG (lossless; holds 16 bits and alpha).

Tiling
    With ``tile`` > 0 the (padded) LR is cut into tiles of ``tile`` x ``tile`` LR pixels, spread evenly so
    that neighbours overlap by at least ``overlap`` pixels; tile starts are multiples of ``lr_multiple`` so
    that the flow's squeeze grid in every tile lines up with the whole image's. Each tile is run alone, so
    network memory depends on the tile size, not the image (AdFlowNet x4 at the paper's size, a 768 x 768
    LR, 2 samples: 12.6 GiB of GPU memory at its peak untiled, 1.5 GiB in tiles of 256, 0.45 GiB in tiles
    of 128), and the results are blended into the output: ``center`` keeps each pixel from the tile it lies
    deepest in (a cut in the middle of each overlap), ``ramp`` cross-fades linearly over the middle half of
    each overlap (no seam), ``auto`` (the default) takes ``center`` when the output is deterministic
    (ESRGAN, temperature 0) and ``ramp`` otherwise. Only the tile rows in progress are held in float;
    finished rows are stored at the output bit depth.

    At temperature 0 a tiled output matches the untiled one up to the influence of the tile borders, which
    falls with the overlap (``center`` is the closer: it never uses a pixel nearer than half the overlap to
    a tile border). Measured with full-size random-weight AdFlowNet x4 and ESRGAN x4 generators on a
    256 x 256 LR in 4 x 4 tiles (float32 convolutions; :func:`tiling_difference`), the largest difference
    at overlap 8 / 16 / 32 was 56 / 2.0 / 0.004 (AdFlowNet) and 1.8 / 0.001 / 0.001 (ESRGAN) grey levels of
    255 with ``center``, and 78 / 10 / 0.13 and 23 / 0.06 / 0.001 with ``ramp``; hence the default overlap
    of 32. (With TF32 convolutions, PyTorch's default on recent GPUs, tiles of another shape round
    differently: a floor near 3 / 255 remained there for the random AdFlowNet whatever the overlap.) At
    temperature > 0 each tile draws its own noise, so there is no untiled result to match: ``ramp`` fades
    from one tile's sample to the next across the overlap.
"""
import os
import os.path as osp
import re
from copy import deepcopy
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import yaml
from torch.nn import functional as F

from adflow_plugin.utils.img_check import (TAIL_BYTES, apply_orientation, exif_orientation, file_truncation,
                                           truncation)
from adflow_plugin.utils.options_check import OptionsError, check_temperatures

__all__ = [
    'BLEND_CHOICES', 'BLEND_MODES', 'DEFAULT_OVERLAP', 'IMAGE_EXTENSIONS', 'InferError', 'LRImage', 'SRNetwork',
    'blend_weights', 'check_output_folder', 'collect_inputs', 'infer', 'load_network', 'output_name', 'read_image',
    'rrdbnet_options', 'select_params', 'tile_spans', 'tiling_difference', 'upscale', 'upscale_iter'
]

#: File extensions treated as images (lower case); other files in an input folder are skipped.
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.pnm', '.jp2')
#: Default overlap of neighbouring tiles, in LR pixels.
DEFAULT_OVERLAP = 32
BLEND_MODES = ('ramp', 'center')
#: ``blend`` values of :func:`upscale` and :func:`infer`: a mode, or 'auto'.
BLEND_CHOICES = ('auto', ) + BLEND_MODES
#: Fraction of each overlap (its middle) across which ``ramp`` blending goes from one tile to the next.
RAMP_WIDTH = 0.5
#: Seed offset between tiles (sample k of tile j uses seed + k + TILE_SEED_STRIDE * j).
TILE_SEED_STRIDE = 1000003
#: Outputs made together per pass over the tiles of a tiled image (untiled, each output is made alone).
TILED_CHUNK = 4
_MAX_VALUE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


class InferError(Exception):
    """A problem with the user's input (model, images, output folder), explained in one line."""


# ---------------------------------------------------------------------------------------------------- networks
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


# ---------------------------------------------------------------------------------------------------- images
@dataclass
class LRImage:
    """An input image prepared for the network.

    Attributes:
        bgr (ndarray): float32 HxWx3 in [0, 1] (grayscale replicated to three channels).
        alpha (ndarray | None): float32 HxW in [0, 1].
        gray (bool): The file was single-channel: the output is converted back to one channel.
        dtype (np.dtype): uint8 or uint16: the output's bit depth.
    """
    bgr: np.ndarray
    alpha: np.ndarray = None
    gray: bool = False
    dtype: np.dtype = np.dtype(np.uint8)

    def describe(self):
        kind = 'grayscale' if self.gray else 'colour'
        return f'{self.bgr.shape[1]}x{self.bgr.shape[0]} {kind}{" + alpha" if self.alpha is not None else ""}, ' \
               f'{8 * self.dtype.itemsize}-bit'


def read_image(path):
    """Read an 8- or 16-bit image file (grayscale, grayscale + alpha, colour or colour + alpha) as an
    :class:`LRImage`, a JPEG turned as its EXIF orientation says."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise InferError(f'{path}: cannot be read: {e.strerror}') from None
    problem = truncation(path, data[:8], data[-TAIL_BYTES:])
    if problem:
        raise InferError(problem)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if img is None:
        raise InferError(f'{path}: cannot be decoded as an image')
    img = apply_orientation(img, exif_orientation(path))
    # PNG colour type 4 (IHDR byte 25) is grayscale + alpha, which OpenCV expands to four channels
    gray_alpha = data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 25 and data[25] == 4
    if img.dtype not in _MAX_VALUE:
        raise InferError(f'{path}: pixel type {img.dtype} is not supported (8- and 16-bit images only)')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    maxval = _MAX_VALUE[img.dtype]
    alpha = None
    if img.ndim == 2:
        gray = True
        bgr = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] in (3, 4):
        gray = gray_alpha and img.shape[2] == 4
        bgr = img[:, :, :3]
        if img.shape[2] == 4:
            alpha = img[:, :, 3].astype(np.float32) / maxval
    else:
        raise InferError(f'{path}: {img.shape[2]} channels are not supported (1, 3 or 4)')
    return LRImage(bgr.astype(np.float32) / maxval, alpha, gray, img.dtype)


def _quantize(img, dtype):
    maxval = _MAX_VALUE[np.dtype(dtype)]
    return np.round(np.clip(img, 0, 1) * maxval).astype(dtype)


def _finalizer(lr_image):
    """Float BGR rows of the SR -> stored rows: clipped, back to one channel for grayscale, quantised."""

    def finalize(rows):
        rows = np.clip(rows, 0, 1)
        if lr_image.gray:
            rows = cv2.cvtColor(np.ascontiguousarray(rows), cv2.COLOR_BGR2GRAY)
        return _quantize(rows, lr_image.dtype)

    return finalize


def _with_alpha(sr, alpha, dtype):
    """Attach the bicubic-upscaled alpha to a stored SR image."""
    if alpha is None:
        return sr
    h, w = sr.shape[:2]
    a = _quantize(cv2.resize(alpha, (w, h), interpolation=cv2.INTER_CUBIC), dtype)
    if sr.ndim == 2 and np.dtype(dtype) == np.uint8:
        return np.dstack([sr, a])  # grayscale + alpha
    color = sr if sr.ndim == 3 else cv2.cvtColor(sr, cv2.COLOR_GRAY2BGR)
    return np.dstack([color, a])


def _encode_png(img):
    if img.ndim == 3 and img.shape[2] == 2:  # 8-bit grayscale + alpha: OpenCV writes 1, 3 or 4 channels only
        import io

        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(img), 'LA').save(buf, format='PNG')
        return buf.getvalue()
    ok, buf = cv2.imencode('.png', img)
    return buf.tobytes() if ok else None


def _write_png(path, img):
    """Write a PNG whole or not at all: an interrupted run or a full disk leaves no partial file behind."""
    data = _encode_png(img)
    if data is None:
        raise InferError(f'could not encode {path} as PNG')
    partial = path + '.partial'
    try:
        with open(partial, 'wb') as f:
            f.write(data)
        os.replace(partial, path)
    except BaseException as e:
        try:
            os.remove(partial)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise InferError(f'could not write {path}: {e.strerror}; nothing partial was left') from None
        raise


def check_output_folder(output):
    """Refuse an ``--output`` that names a file, lies under a file or has a name too long to create."""
    if osp.exists(output) and not osp.isdir(output):
        raise InferError(f'--output {output} is a file, not a folder; name a folder (it is created if missing)')
    parent = output
    while not osp.exists(parent or '.'):
        name = osp.basename(parent.rstrip(os.sep)) or parent
        if len(os.fsencode(name)) > 255:
            raise InferError(f'cannot create the --output folder {output}: the name {name[:20]}... is longer than '
                             '255 bytes')
        up = osp.dirname(parent.rstrip(os.sep))
        if up == parent:
            break
        parent = up
    if parent and osp.exists(parent) and not osp.isdir(parent):
        raise InferError(f'cannot create the --output folder {output}: {parent} is a file, not a folder')


def output_name(stem, scale, temperature=None, sample=None):
    """``<stem>_x<scale>_t<T>_s<k>.png`` for a flow sample, ``<stem>_x<scale>.png`` for a deterministic network
    (T printed as ``%g``: ``t1``, ``t0.9``, ``t0``)."""
    if temperature is None:
        return f'{stem}_x{scale}.png'
    return f'{stem}_x{scale}_t{float(temperature):g}_s{sample}.png'


def collect_inputs(paths):
    """Image files named by ``paths`` (files, or folders: their files, sorted, not recursive).

    Returns:
        (list[str], list[str]): the image files, and one message per skipped folder entry.
    """
    files, skipped = [], []
    for path in paths:
        if osp.isdir(path):
            entries = sorted(os.listdir(path))
            for name in entries:
                full = osp.join(path, name)
                if osp.isdir(full):
                    skipped.append(f'skipped {full}: a folder (folders are not searched recursively)')
                elif osp.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                    files.append(full)
                else:
                    skipped.append(f'skipped {full}: not an image file (image extensions: '
                                   f'{" ".join(IMAGE_EXTENSIONS)})')
        elif osp.isfile(path):
            if osp.splitext(path)[1].lower() not in IMAGE_EXTENSIONS:
                raise InferError(f'{path} is not an image file (image extensions: {" ".join(IMAGE_EXTENSIONS)})')
            files.append(path)
        else:
            raise InferError(f'input not found: {path}')
    return files, skipped


# ---------------------------------------------------------------------------------------------------- tiling
def tile_spans(length, tile, overlap=DEFAULT_OVERLAP, multiple=1):
    """Start and end of the tiles along one axis (LR pixels).

    Tiles are ``tile`` long (rounded down to a multiple of ``multiple``), start at multiples of ``multiple``,
    and are spread evenly from 0 to ``length``, as few as keep every overlap at least ``overlap`` (it may
    come out larger). ``length`` must be a multiple of ``multiple`` (the LR is padded first). ``tile`` <= 0
    or >= ``length``: one tile.
    """
    if length % multiple:
        raise ValueError(f'length {length} is not a multiple of {multiple} (pad the LR first)')
    if tile <= 0 or tile >= length:
        return [(0, length)]
    tile = max(multiple, tile // multiple * multiple)
    if tile >= length:
        return [(0, length)]
    step = (tile - overlap) // multiple * multiple
    if overlap < 0 or step < multiple:
        raise InferError(f'tiles of {tile} LR pixels cannot overlap by {overlap} and still advance (tile starts are '
                         f'multiples of {multiple}): use a larger --tile or a smaller --tile-overlap')
    count = -(-(length - tile) // step) + 1
    # floor(i * (length - tile) / (count - 1)) to a multiple: gaps <= step, so overlaps >= tile - step >= overlap
    starts = [(length - tile) * i // (count - 1) // multiple * multiple for i in range(count)]
    return [(start, start + tile) for start in starts]


def blend_weights(spans, scale, mode='ramp', ramp_width=None):
    """Per-tile blending weights along one axis, at HR resolution, summing to 1 at every HR pixel.

    ``ramp``: the weight falls linearly from 1 to 0 across the middle ``ramp_width`` fraction (default
    :data:`RAMP_WIDTH`) of each overlap; ``center``: 1 up to the middle of each overlap, 0 beyond.
    """
    if mode not in BLEND_MODES:
        raise InferError(f'unknown blend mode {mode!r}; use one of {", ".join(BLEND_MODES)}')
    ramp_width = RAMP_WIDTH if ramp_width is None else ramp_width
    weights = []
    for i, (a, e) in enumerate(spans):
        x = np.arange(a * scale, e * scale, dtype=np.float64) + 0.5
        w = np.ones_like(x)
        prev_end = spans[i - 1][1] * scale if i > 0 else None
        next_start = spans[i + 1][0] * scale if i + 1 < len(spans) else None
        if mode == 'ramp':
            if prev_end is not None and prev_end > a * scale:
                w *= _ramp(x, a * scale, prev_end, ramp_width)
            if next_start is not None and next_start < e * scale:
                w *= 1 - _ramp(x, next_start, e * scale, ramp_width)
        else:
            if prev_end is not None:
                w[x < (a * scale + prev_end) // 2] = 0
            if next_start is not None:
                w[x >= (next_start + e * scale) // 2] = 0
        weights.append(w)
    total = np.zeros(spans[-1][1] * scale)
    for (a, e), w in zip(spans, weights):
        total[a * scale:e * scale] += w
    return [(w / total[a * scale:e * scale]).astype(np.float32) for (a, e), w in zip(spans, weights)]


def _ramp(x, lo, hi, width):
    """0 -> 1 linearly across the middle ``width`` fraction of the overlap [lo, hi); 0 before, 1 after."""
    mid, half = (lo + hi) / 2, max((hi - lo) * width / 2, 0.5)
    return np.clip((x - (mid - half)) / (2 * half), 0, 1)


def _pad_to_multiple(lq, multiple):
    """Pad (bottom, right) to a multiple, as AdFlowNet pads (reflect, or replicate when the image is too small)."""
    h, w = lq.shape[2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return lq
    mode = 'reflect' if ph < h and pw < w else 'replicate'
    return F.pad(lq, (0, pw, 0, ph), mode=mode)


def upscale(srnet, bgr, jobs=((1.0, 0), ), tile=0, overlap=DEFAULT_OVERLAP, blend='auto', finalize=None,
            progress=None):
    """Super-resolve one image, optionally in overlapping tiles.

    Args:
        srnet (SRNetwork): The generator.
        bgr (ndarray): float32 HxWx3 BGR image in [0, 1].
        jobs (list[tuple[float, int]]): ``(temperature, seed)`` of each output of a flow. A deterministic
            network produces one output whatever this holds.
        tile (int): Tile size in LR pixels (0: the whole image at once).
        overlap (int): Minimum overlap of neighbouring tiles, LR pixels.
        blend (str): 'ramp' or 'center' (see :func:`blend_weights`), or 'auto': 'center' when every output
            is deterministic (a deterministic network, or temperature 0), else 'ramp'.
        finalize (callable | None): Float32 BGR rows (clipped to [0, 1]) -> the array stored in the output;
            called once per band of finished rows. Default: float32 rows as they are.
        progress (callable | None): Called with (tiles done, tiles in all) after each tile.

    Returns:
        list[ndarray]: One (scale*H)x(scale*W)[xC] array per output.
    """
    return [out for _, out in upscale_iter(srnet, bgr, jobs, tile, overlap, blend, finalize, progress)]


@torch.no_grad()
def upscale_iter(srnet, bgr, jobs=((1.0, 0), ), tile=0, overlap=DEFAULT_OVERLAP, blend='auto', finalize=None,
                 progress=None, chunk=None):
    """:func:`upscale`, yielding ``(job index, output)`` as each output is finished, so that a caller can
    write it and let it go: untiled, one output at a time (the LR embedding computed once and reused);
    tiled, :data:`TILED_CHUNK` at a time (the embedding of each tile computed once per chunk). ``chunk``
    overrides both (``len(jobs)``: every output in one pass, as :func:`upscale` did before)."""
    finalize = finalize or (lambda rows: np.clip(rows, 0, 1))
    jobs = list(jobs) if srnet.stochastic else [None]
    if blend == 'auto':
        blend = 'ramp' if srnet.stochastic and any(t > 0 for t, _ in jobs) else 'center'
    s, m = srnet.scale, srnet.lr_multiple
    h, w = bgr.shape[:2]
    lq = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1))).unsqueeze(0)
    lq = _pad_to_multiple(lq.to(srnet.device), m)
    hp, wp = lq.shape[2:]
    ys, xs = tile_spans(hp, tile, overlap, m), tile_spans(wp, tile, overlap, m)
    wy, wx = blend_weights(ys, s, blend), blend_weights(xs, s, blend)
    # one view per tile, the same object for every chunk: SRNetwork.run keeps the last tile's embedding
    tiles = {(r, c): lq[:, :, y0:y1, x0:x1] for r, (y0, y1) in enumerate(ys) for c, (x0, x1) in enumerate(xs)}
    step = max(1, chunk) if chunk else 1 if len(tiles) == 1 else TILED_CHUNK
    chunks = [list(range(i, min(i + step, len(jobs)))) for i in range(0, len(jobs), step)]
    total = len(tiles) * len(chunks)
    done_tiles = 0
    out_h, out_w = h * s, w * s
    try:
        for indices in chunks:
            chunk_jobs = [jobs[i] for i in indices]
            outs = [None] * len(chunk_jobs)
            pending = None
            for r, (y0, y1) in enumerate(ys):
                bands = [np.zeros(((y1 - y0) * s, wp * s, 3), np.float32) for _ in chunk_jobs]
                for c, (x0, x1) in enumerate(xs):
                    index = r * len(xs) + c
                    tile_jobs = [(t, seed + TILE_SEED_STRIDE * index) for t, seed in chunk_jobs] \
                        if srnet.stochastic else chunk_jobs
                    srs = srnet.run(tiles[(r, c)], tile_jobs)
                    for band, sr in zip(bands, srs):
                        if sr.shape[2:] != ((y1 - y0) * s, (x1 - x0) * s):
                            raise InferError(f'the network returned {tuple(sr.shape[2:])} for an LR tile of '
                                             f'{(y1 - y0, x1 - x0)}, not {s}x: is the scale right?')
                        arr = sr[0].float().cpu().numpy().transpose(1, 2, 0)[:, :, ::-1]
                        band[:, x0 * s:x1 * s] += arr * wx[c][None, :, None]
                    done_tiles += 1
                    if progress:
                        progress(done_tiles, total)
                next_y = ys[r + 1][0] if r + 1 < len(ys) else y1
                finished = (next_y - y0) * s
                for i, band in enumerate(bands):
                    band *= wy[r][:, None, None]
                    if pending is not None:
                        band[:pending[i].shape[0]] += pending[i]
                    top, bottom = y0 * s, min(y0 * s + finished, out_h)
                    if bottom > top:
                        rows = finalize(band[:bottom - top, :out_w])
                        if outs[i] is None:
                            outs[i] = np.empty((out_h, out_w) + rows.shape[2:], rows.dtype)
                        outs[i][top:bottom] = rows
                pending = [band[finished:] for band in bands]
            for i, out in zip(indices, outs):
                yield i, out
    finally:
        srnet.forget()


# ---------------------------------------------------------------------------------------------------- command
def _device(name):
    if name in (None, 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise InferError(f'bad --device {name!r}: {e}') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise InferError('--device cuda, but no CUDA device is available')
    return device


def infer(inputs, output, model, arch=None, scale=None, temperatures=None, samples=1, seed=0, tile=0,
          overlap=DEFAULT_OVERLAP, blend='auto', force=False, device='auto', log=print, show_progress=True, amp=None):
    """Super-resolve image files (the ``basicsr infer`` command).

    Args:
        inputs (list[str]): Image files and folders (their image files; other files are skipped with a message).
        output (str): Output folder (created).
        model, arch, scale: See :func:`load_network`.
        temperatures (list[float] | None): Flow sampling temperatures. Default: the options file's
            ``val.temperature``, else 1.0.
        samples (int | None): Samples per temperature (flows). Default: 1.
        seed (int): Base seed (see the module docstring).
        tile, overlap, blend: See :func:`upscale`.
        force (bool): Overwrite existing output files (otherwise an error before anything runs).
        device (str): 'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...
        log (callable): Prints a message.
        show_progress (bool): A tqdm progress bar on stderr.
        amp (str | None): 'bf16': bfloat16 mixed precision (see :class:`SRNetwork`). Default: off.

    Returns:
        dict: ``written`` (output paths), ``skipped`` (messages), ``failed`` (messages), ``network``.
    """
    from tqdm import tqdm

    if samples is not None and samples < 1:
        raise InferError(f'--samples must be at least 1, got {samples}')
    if tile < 0 or overlap < 0:
        raise InferError('--tile and --tile-overlap must not be negative')
    if blend not in BLEND_CHOICES:
        raise InferError(f'unknown blend mode {blend!r}; use one of {", ".join(BLEND_CHOICES)}')
    if temperatures:
        try:
            check_temperatures(list(temperatures), '--temperature')
        except OptionsError as e:
            raise InferError(str(e)) from None
    check_output_folder(output)
    files, skipped = collect_inputs(inputs)
    for message in skipped:
        log(message)
    if not files:
        raise InferError(f'no image files in {", ".join(inputs)}')
    for path in files:  # a truncated download stops the run before anything is written
        problem = file_truncation(path)
        if problem:
            raise InferError(problem)

    from adflow_plugin.archs.flow_layers import amp_dtype
    try:
        amp = amp_dtype(amp, '--amp')
    except ValueError as e:
        raise InferError(str(e)) from None
    srnet = load_network(model, arch, scale, _device(device))
    srnet.amp = amp
    log(f'network: {srnet.description}')
    if srnet.stochastic:
        temps = dict.fromkeys(float(t) for t in (temperatures or srnet.temperatures or [1.0]))  # unique, in order
        jobs = [(float(t), seed + k) for t in temps for k in range(samples or 1)]
        if any(t < 0 for t, _ in jobs):
            raise InferError('temperatures must not be negative')
    else:
        if temperatures or (samples or 1) > 1:
            log(f'{type(srnet.net).__name__} is deterministic: --temperature and --samples are ignored '
                '(one output per image)')
        jobs = [None]

    plan, owners = [], {}
    for path in files:
        stem = osp.splitext(osp.basename(path))[0]
        outs = [osp.join(output, output_name(stem, srnet.scale) if job is None else
                         output_name(stem, srnet.scale, temperature=job[0], sample=job[1] - seed)) for job in jobs]
        for out in outs:
            if out in owners:
                raise InferError(f'{owners[out]} and {path} would both write {out}: rename one of them')
            owners[out] = path
        plan.append((path, outs))
    existing = [out for _, outs in plan for out in outs if osp.exists(out)]
    if existing and not force:
        more = f' and {len(existing) - 3} more' if len(existing) > 3 else ''
        raise InferError(f'{len(existing)} output file(s) exist already ({", ".join(existing[:3])}{more}); '
                         'pass --force to overwrite them, or choose another --output')
    created = not osp.isdir(output)
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as e:
        raise InferError(f'cannot create the --output folder {output}: {e.strerror}') from None

    written, failed = [], []
    bar = tqdm(total=len(plan), unit='image', desc='infer', disable=not show_progress, dynamic_ncols=True)
    say = tqdm.write if show_progress else log
    try:
        for path, outs in plan:
            name = osp.basename(path)
            bar.set_postfix_str(name)
            try:
                lr = read_image(path)
            except InferError as e:
                failed.append(str(e))
                say(f'error: {e}; skipped')
                bar.update(1)
                continue

            def progress(done, total, name=name):
                if total > 1:
                    bar.set_postfix_str(f'{name} tile {done}/{total}')

            for index, sr in upscale_iter(srnet, lr.bgr, jobs, tile, overlap, blend, _finalizer(lr), progress):
                _write_png(outs[index], _with_alpha(sr, lr.alpha, lr.dtype))  # each output as soon as it is made
                written.append(outs[index])
            say(f'{path} ({lr.describe()}) -> {", ".join(osp.basename(o) for o in outs)}')
            bar.update(1)
    except BaseException:
        if created and not written and not os.listdir(output):  # stopped before its first output: no trace
            os.rmdir(output)
        raise
    finally:
        bar.close()
    return dict(written=written, skipped=skipped, failed=failed, network=srnet)


class _MemoNetwork(SRNetwork):
    """An SRNetwork that remembers its outputs per LR tile (tiling_difference compares several blends)."""

    def run(self, lq, jobs):
        memo = self.__dict__.setdefault('_memo', {})
        key = (tuple(lq.shape), lq.cpu().numpy().tobytes(), repr(jobs))
        if key not in memo:
            memo[key] = super().run(lq, jobs)
        return memo[key]


def tiling_difference(srnet, bgr, tile, overlaps, blends=('ramp', ), temperature=0.0):
    """Max and mean absolute difference (in [0, 1] units) between tiled and untiled outputs of one image, per
    requested overlap and blend mode, with the smallest overlap the tiles actually have (``tile_spans``
    spreads the tiles evenly, so it may exceed the requested one). A flow at temperature 0 is deterministic.

    Returns:
        list[dict]: ``overlap``, ``actual_overlap``, ``tiles``, ``blend``, ``max``, ``mean``.
    """
    srnet = _MemoNetwork(srnet.net, srnet.scale, srnet.stochastic, srnet.lr_multiple)
    jobs = [(temperature, 0)]
    ref = upscale(srnet, bgr, jobs)[0].astype(np.float64)
    m = srnet.lr_multiple
    sizes = [-(-n // m) * m for n in bgr.shape[:2]]
    rows = []
    for overlap in overlaps:
        spans = [tile_spans(n, tile, overlap, m) for n in sizes]
        gaps = [e0 - a1 for axis in spans for (_, e0), (a1, _) in zip(axis, axis[1:])]
        for blend in blends:
            diff = np.abs(upscale(srnet, bgr, jobs, tile=tile, overlap=overlap, blend=blend)[0] - ref)
            rows.append(dict(overlap=overlap, actual_overlap=min(gaps) if gaps else None,
                             tiles=len(spans[0]) * len(spans[1]), blend=blend, max=float(diff.max()),
                             mean=float(diff.mean())))
    return rows
