"""LR-PSNR: known answers, an independent MATLAB 8-bit bicubic, the metric contract and its errors."""
import math

import cv2
import numpy as np
import pytest
from basicsr.metrics import calculate_metric, calculate_psnr
from basicsr.utils.matlab_functions import imresize as basicsr_imresize
from basicsr.utils.registry import METRIC_REGISTRY

from adflow_plugin.data.demo import read_photo
from adflow_plugin.metrics.lr_psnr_metric import LR_PSNR_CAP, calculate_lr_psnr, matlab_downscale


def _cubic(x):
    """Keys' cubic convolution kernel with a = -0.5, as MATLAB's imresize documents it."""
    x = abs(x)
    if x <= 1:
        return 1.5 * x**3 - 2.5 * x**2 + 1
    if x < 2:
        return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
    return 0.0


def _mirror(j, n):
    """MATLAB's symmetric padding: index -1 reads 0, index n reads n-1."""
    while j < 0 or j >= n:
        j = -j - 1 if j < 0 else 2 * n - 1 - j
    return j


def _downscale_axis0_uint8(img, factor):
    """One MATLAB pass along axis 0 of a uint8 array, downscaling by an integer ``factor``, rounded to uint8.

    Written from MATLAB's documented algorithm, independently of adflow_plugin.utils.matlab_resize: the
    output pixel i (0-based) is centred at input coordinate (i + 0.5) * factor - 0.5; the cubic kernel is
    widened by ``factor`` (antialiasing: weight(d) = cubic(d / factor)), weights are normalised to sum 1,
    borders are extended symmetrically, and the result is rounded half away from zero and saturated.
    """
    n = img.shape[0]
    out_n = math.ceil(n / factor)
    src = img.astype(np.float64)
    out = np.zeros((out_n, ) + img.shape[1:], dtype=np.uint8)
    for i in range(out_n):
        centre = (i + 0.5) * factor - 0.5
        taps = range(math.ceil(centre - 2 * factor), math.floor(centre + 2 * factor) + 1)
        weights = [_cubic((centre - j) / factor) for j in taps]
        total = sum(weights)
        acc = np.zeros(img.shape[1:], dtype=np.float64)
        for j, wgt in zip(taps, weights):
            acc += (wgt / total) * src[_mirror(j, n)]
        out[i] = np.clip(np.floor(acc + 0.5), 0, 255).astype(np.uint8)
    return out


def reference_downscale(img, factor):
    """MATLAB ``imresize(uint8_img, 1/factor, 'bicubic')``: height first, then width, each pass rounded."""
    rows_done = _downscale_axis0_uint8(img, factor)
    return _downscale_axis0_uint8(rows_done.transpose(1, 0, 2), factor).transpose(1, 0, 2)


def reference_psnr(a, b):
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64))**2))
    return 10 * math.log10(255**2 / mse)


@pytest.fixture(scope='module')
def photo():
    """A real photograph (scikit-image's chelsea), cropped to a multiple of 8."""
    img = read_photo('chelsea.png')
    h, w = img.shape[:2]
    return img[:h // 8 * 8, :w // 8 * 8].copy()


def _plausible_sr(lr, scale, seed=0):
    """An SR that is not LR-consistent: cv2 bicubic upscaling plus a little smooth noise."""
    h, w = lr.shape[:2]
    up = cv2.resize(lr, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC).astype(np.float64)
    noise = np.random.default_rng(seed).normal(0, 2, up.shape)
    return np.clip(up + noise, 0, 255).round().astype(np.uint8)


def test_registered():
    assert METRIC_REGISTRY.get('calculate_lr_psnr') is calculate_lr_psnr


@pytest.mark.parametrize('scale', [4, 8])
def test_matches_independent_matlab_on_photo(photo, scale):
    lr = reference_downscale(photo, scale)
    sr = _plausible_sr(lr, scale)
    expected_down = reference_downscale(sr, scale)
    np.testing.assert_array_equal(matlab_downscale(sr, scale), expected_down)
    value = calculate_lr_psnr(img=sr, lq=lr, scale=scale)
    assert value == pytest.approx(reference_psnr(expected_down, lr), abs=1e-9)
    assert 20 < value < LR_PSNR_CAP


def test_exactly_consistent_sr_scores_the_cap(photo):
    lr = reference_downscale(photo, 4)
    # the HR photo itself is exactly consistent: bicubic(HR) == LR
    assert calculate_lr_psnr(img=photo, lq=lr) == LR_PSNR_CAP == 100.0
    assert calculate_lr_psnr(img=photo, lq=lr, cap=80) == 80.0


def test_per_pass_rounding_matters(photo):
    """BasicSR's float imresize (rounded once at the end) is not MATLAB's 8-bit result."""
    lr = reference_downscale(photo, 4)
    float_down = np.clip(np.round(basicsr_imresize(photo / 255.0, 0.25) * 255), 0, 255).astype(np.uint8)
    assert np.abs(float_down.astype(int) - lr.astype(int)).max() >= 1
    assert 50 < reference_psnr(float_down, lr) < 65  # where the 8-bit result is exact (the cap)


def test_psnr_agrees_with_basicsr(photo):
    lr = reference_downscale(photo, 4)
    sr = _plausible_sr(lr, 4, seed=1)
    ours = calculate_lr_psnr(img=sr, lq=lr)
    theirs = calculate_psnr(matlab_downscale(sr, 4), lr, crop_border=0)
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_ntire_variant_compares_with_bicubic_gt(photo):
    lr = reference_downscale(photo, 4)
    sr = _plausible_sr(lr, 4, seed=2)
    ntire = calculate_lr_psnr(img=sr, img2=photo, scale=4, variant='ntire')
    assert ntire == pytest.approx(reference_psnr(reference_downscale(sr, 4), lr), abs=1e-9)
    # no LR input needed, scale from the YAML
    assert calculate_lr_psnr(img=photo, img2=photo, scale=4, variant='ntire') == LR_PSNR_CAP


def test_sample_reductions(photo):
    lr = reference_downscale(photo, 4)
    samples = [_plausible_sr(lr, 4, seed=s) for s in range(3)] + [photo]
    each = [calculate_lr_psnr(img=s, lq=lr) for s in samples]
    data = dict(img=samples[0], lq=lr, samples=samples, scale=4)
    assert calculate_lr_psnr(**data, reduction='mean') == pytest.approx(np.mean(each))
    assert calculate_lr_psnr(**data, reduction='worst') == pytest.approx(min(each))
    assert calculate_lr_psnr(**data) == pytest.approx(each[0])
    # without samples (one draw per image) the reductions fall back to img
    assert calculate_lr_psnr(img=samples[1], lq=lr, reduction='worst') == pytest.approx(each[1])


def test_through_basicsr_calculate_metric(photo):
    """The call BasicSR's validation makes: METRIC(**metric_data, **yaml_opts), every key of the contract."""
    lr = reference_downscale(photo, 8)
    sr = _plausible_sr(lr, 8)
    metric_data = dict(img=sr, img2=photo, lq=lr, samples=[sr, photo], scale=8)
    assert calculate_metric(metric_data, {'type': 'calculate_lr_psnr'}) == pytest.approx(
        reference_psnr(reference_downscale(sr, 8), lr), abs=1e-9)
    assert calculate_metric(metric_data, {'type': 'calculate_lr_psnr', 'reduction': 'worst'}) == pytest.approx(
        reference_psnr(reference_downscale(sr, 8), lr), abs=1e-9)


def test_scale_is_derived_from_shapes(photo):
    lr = reference_downscale(photo, 8)
    assert calculate_lr_psnr(img=photo, lq=lr) == LR_PSNR_CAP


def test_errors(photo):
    lr = reference_downscale(photo, 4)
    with pytest.raises(ValueError, match='model did not pass `lq`.*AdFlowModel passes it'):
        calculate_lr_psnr(img=photo, img2=photo)
    with pytest.raises(ValueError, match='integer multiple'):
        calculate_lr_psnr(img=photo[:-3], lq=lr)
    with pytest.raises(ValueError, match='integer scale'):
        calculate_lr_psnr(img=photo, lq=lr, scale=2.5)
    with pytest.raises(ValueError, match='not 3x the LR'):
        calculate_lr_psnr(img=photo, lq=lr, scale=3)
    with pytest.raises(ValueError, match='cannot tell the scale'):
        calculate_lr_psnr(img=photo, img2=photo, variant='ntire')
    with pytest.raises(ValueError, match='unknown variant'):
        calculate_lr_psnr(img=photo, lq=lr, variant='matlab')
    with pytest.raises(TypeError, match='8-bit'):
        calculate_lr_psnr(img=photo.astype(np.float32), lq=lr)
