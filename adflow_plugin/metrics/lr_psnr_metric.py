"""LR-PSNR: consistency of a super-resolution with its low-resolution input (paper Sec. 4.1, Table 2).

The SR output is downscaled with MATLAB's bicubic ``imresize`` at the SR scale and compared with the LR
input by PSNR over the full image, all three channels, 8-bit. The downscale follows MATLAB's semantics
for ``uint8`` images, as SRFlow's and the NTIRE 2021 challenge's evaluation code do: one dimension at a
time, each pass rounded to 8 bits (:func:`adflow_plugin.utils.matlab_resize.imresize_uint8`). BasicSR's
float ``imresize`` skips the intermediate rounding; on 8-bit images that moves LR-PSNR near 50 dB by
more than half a dB.

Identical images have infinite PSNR. Every value returned here is capped at :data:`LR_PSNR_CAP`
(100 dB) so that averages over a data set stay finite; 100 dB is far above any meaningful consistency
(the NTIRE "consistent" threshold is 45 dB).
"""
import numpy as np
from basicsr.utils.registry import METRIC_REGISTRY

from adflow_plugin.utils.matlab_resize import imresize_uint8

__all__ = ['LR_PSNR_CAP', 'calculate_lr_psnr', 'matlab_downscale', 'psnr_uint8', 'resolve_scale', 'sample_list']

#: Upper bound (dB) of every LR-PSNR value; an exactly consistent SR scores this.
LR_PSNR_CAP = 100.0

_VARIANTS = ('lr', 'ntire')
_REDUCTIONS = ('none', 'mean', 'worst')


def _check_uint8(name, arr):
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8:
        kind = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
        raise TypeError(f'LR-PSNR expects 8-bit images (uint8 HWC, as BasicSR\'s tensor2img returns); '
                        f'{name} is {kind}')


def resolve_scale(img, lq=None, scale=None):
    """The integer SR scale: ``scale`` when given, else derived from ``img.shape / lq.shape``.

    Raises:
        ValueError: when neither is available, when the ratio is not an integer (or differs between height
            and width), or when a given scale disagrees with the shapes.
    """
    if scale is not None:
        if float(scale) != int(scale) or int(scale) < 1:
            raise ValueError(f'LR-PSNR needs an integer scale >= 1, got scale={scale!r}')
        scale = int(scale)
        if lq is not None and (lq.shape[0] * scale, lq.shape[1] * scale) != tuple(img.shape[:2]):
            raise ValueError(f'SR image {img.shape[:2]} is not {scale}x the LR input {lq.shape[:2]}')
        return scale
    if lq is None:
        raise ValueError('LR-PSNR cannot tell the scale: set `scale` in the metric options or pass the LR '
                         'input as `lq`')
    (h, w), (lh, lw) = img.shape[:2], lq.shape[:2]
    if h % lh or w % lw or h // lh != w // lw:
        raise ValueError(f'SR image {h}x{w} is not an integer multiple of the LR input {lh}x{lw} '
                         '(the same in height and width); set `scale` or crop the SR to scale x LR')
    return h // lh


def matlab_downscale(img, scale):
    """Downscale a uint8 image by an integer ``scale`` with MATLAB's 8-bit bicubic (antialiased)."""
    return imresize_uint8(img, 1.0 / scale)


def psnr_uint8(img, img2, cap=LR_PSNR_CAP):
    """PSNR (dB, peak 255) of two same-shape 8-bit images over all pixels and channels, at most ``cap``."""
    if img.shape != img2.shape:
        raise ValueError(f'image shapes differ: {img.shape} vs {img2.shape}')
    mse = np.mean((img.astype(np.float64) - img2.astype(np.float64))**2)
    if mse == 0:
        return float(cap)
    return float(min(10.0 * np.log10(255.0**2 / mse), cap))


def sample_list(img, samples):
    """The SR samples of one image: ``samples`` when the model passed them, else ``[img]``."""
    if samples is None:
        return [img]
    samples = list(samples)
    if not samples:
        raise ValueError('`samples` is empty: the model must pass at least one SR sample per image')
    return samples


@METRIC_REGISTRY.register()
def calculate_lr_psnr(img,
                      lq=None,
                      img2=None,
                      samples=None,
                      scale=None,
                      variant='lr',
                      reduction='none',
                      cap=LR_PSNR_CAP,
                      **kwargs):
    """LR-PSNR (dB): PSNR between the LR input and the SR output downscaled by MATLAB 8-bit bicubic.

    RGB (BGR order is irrelevant to PSNR), uint8, full image, no border crop, capped at ``cap``.

    Args:
        img (ndarray): SR output, uint8 HWC.
        lq (ndarray): LR input, uint8 HWC. Required by ``variant: lr``. BasicSR's stock ``SRModel`` does
            not pass it; the AdFlow model's validation does.
        img2 (ndarray): Ground-truth HR, uint8 HWC. Required by ``variant: ntire``.
        samples (list[ndarray]): All SR samples of this image (uint8 HWC), passed by the model when it
            draws several. Used by ``reduction: mean | worst``; without them the one ``img`` is used.
        scale (int): SR scale. Default: from the model's ``scale`` or ``img.shape / lq.shape``.
        variant (str): ``lr`` (paper, Table 2): bicubic(SR) vs the LR input. ``ntire`` (NTIRE 2021
            challenge): bicubic(SR) vs bicubic(GT). Default: ``lr``.
        reduction (str): ``none``: LR-PSNR of ``img``. ``mean`` / ``worst``: mean / minimum LR-PSNR over
            ``samples`` (NTIRE's LRPSNR_mean and LRPSNR_worst). Default: ``none``.
        cap (float): Upper bound of the result; identical images score exactly this. Default: 100 dB.

    Returns:
        float: LR-PSNR in dB.
    """
    if variant not in _VARIANTS:
        raise ValueError(f'calculate_lr_psnr: unknown variant {variant!r}; use one of {", ".join(_VARIANTS)}')
    if reduction not in _REDUCTIONS:
        raise ValueError(f'calculate_lr_psnr: unknown reduction {reduction!r}; use one of {", ".join(_REDUCTIONS)}')
    if variant == 'lr':
        if lq is None:
            raise ValueError('calculate_lr_psnr needs the LR input, but the model did not pass `lq` to its '
                             'metrics. AdFlowModel passes it; BasicSR\'s stock SRModel/ESRGANModel do not: use '
                             '`variant: ntire` (bicubic(SR) vs bicubic(GT)) with `scale:` for those, or a model '
                             'that adds `lq` to its metric data.')
        _check_uint8('lq', lq)
        reference = lq
    else:
        if img2 is None:
            raise ValueError('calculate_lr_psnr with `variant: ntire` needs the ground truth (`img2`); this data '
                             'set has none')
        _check_uint8('img2', img2)
    _check_uint8('img', img)
    scale = resolve_scale(img, lq, scale)
    if variant == 'ntire':
        if img2.shape != img.shape:
            raise ValueError(f'SR {img.shape} and GT {img2.shape} differ in shape')
        reference = matlab_downscale(img2, scale)

    candidates = [img] if reduction == 'none' else sample_list(img, samples)
    values = []
    for sr in candidates:
        _check_uint8('a sample', sr)
        if sr.shape != img.shape:
            raise ValueError(f'a sample has shape {sr.shape}, the SR output {img.shape}')
        values.append(psnr_uint8(matlab_downscale(sr, scale), reference, cap=cap))
    if reduction == 'worst':
        return float(min(values))
    return float(np.mean(values))
