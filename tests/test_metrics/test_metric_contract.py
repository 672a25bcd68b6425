"""The metric-data contract: BasicSR calls METRIC(**metric_data, **yaml_opts) with img, img2, lq, samples and
scale. Stock PSNR/SSIM must ignore the extra keys and give BasicSR's own numbers; every plugin metric must
accept the whole dictionary. LPIPS-based metrics use a RANDOM backbone here (no weights to download)."""
import numpy as np
import pytest
from basicsr.metrics import calculate_metric, calculate_psnr, calculate_ssim

from adflow_plugin.data.demo import read_photo
from adflow_plugin.utils.matlab_resize import imresize_uint8


@pytest.fixture(scope='module')
def metric_data():
    gt = read_photo('coffee.png')[:96, :128].copy()
    lq = imresize_uint8(gt, 0.25)
    rng = np.random.default_rng(0)
    samples = [np.clip(gt.astype(int) + rng.integers(-8, 9, gt.shape), 0, 255).astype(np.uint8) for _ in range(3)]
    return dict(img=samples[0], img2=gt, lq=lq, samples=samples, scale=4)


@pytest.mark.parametrize('name, fn, opts', [
    ('calculate_psnr', calculate_psnr, dict(crop_border=4, test_y_channel=False)),
    ('calculate_psnr', calculate_psnr, dict(crop_border=0, test_y_channel=True)),
    ('calculate_ssim', calculate_ssim, dict(crop_border=4, test_y_channel=False)),
])
def test_stock_psnr_ssim_ignore_extra_keys(metric_data, name, fn, opts):
    plain = fn(metric_data['img'], metric_data['img2'], **opts)
    assert calculate_metric(metric_data, dict(type=name, **opts)) == plain


@pytest.mark.parametrize('opts', [
    {'type': 'calculate_lr_psnr'},
    {'type': 'calculate_lr_psnr', 'reduction': 'mean'},
    {'type': 'calculate_lr_psnr', 'reduction': 'worst'},
    {'type': 'calculate_lr_psnr', 'variant': 'ntire'},
    {'type': 'calculate_lpips', 'random_backbone': True},
    {'type': 'calculate_lpips', 'random_backbone': True, 'reduction': 'mean'},
    {'type': 'calculate_diversity', 'random_backbone': True},
])
def test_plugin_metrics_accept_the_whole_contract(metric_data, opts):
    value = calculate_metric(metric_data, opts)
    assert isinstance(value, float) and np.isfinite(value)


def test_worst_is_at_most_mean(metric_data):
    mean = calculate_metric(metric_data, {'type': 'calculate_lr_psnr', 'reduction': 'mean'})
    worst = calculate_metric(metric_data, {'type': 'calculate_lr_psnr', 'reduction': 'worst'})
    assert worst <= mean
