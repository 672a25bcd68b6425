"""Per-image metrics of ``basicsr reproduce``, computed from the images ``basicsr test`` saved.

``basicsr test`` logs only the mean over the set; the claims need each image and the worst one
(DESIGN.md section 6: a small model can fall far below bicubic on one photograph while its mean looks
fine). The same metric functions are applied to the saved PNGs, which are the uint8 images the test
computed its metrics on, so the means here equal the test log's (checked, and both are kept).
Bicubic upscaling (MATLAB 8-bit) is evaluated alongside as the consistency floor.
"""
import glob
import os.path as osp

import cv2
import numpy as np
from basicsr.metrics import calculate_psnr, calculate_ssim

from adflow_plugin.apps.compare import find_log, parse_log
from adflow_plugin.apps.reproduce.runs import test_temperatures
from adflow_plugin.metrics.diversity_metric import calculate_diversity
from adflow_plugin.metrics.lpips_metric import calculate_lpips
from adflow_plugin.metrics.lr_psnr_metric import calculate_lr_psnr
from adflow_plugin.models.adflow_validation import temperature_tag
from adflow_plugin.utils.matlab_resize import imresize_uint8

BICUBIC = 'Bicubic'
HIGHER_IS_BETTER = ('psnr', 'ssim', 'lr_psnr', 'lr_psnr_mean', 'lr_psnr_worst', 'diversity')


def _read(path):
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f'{path} is missing or unreadable (did `basicsr test` finish?)')
    return img


def image_metrics(samples, gt, lr, scale):
    """Metrics of one image: the first sample against GT and LR, and the spread over all samples."""
    sr = samples[0]
    m = dict(psnr=float(calculate_psnr(sr, gt, crop_border=scale, test_y_channel=False)),
             ssim=float(calculate_ssim(sr, gt, crop_border=scale, test_y_channel=False)),
             lr_psnr=float(calculate_lr_psnr(sr, lq=lr, scale=scale)),
             lpips=float(calculate_lpips(sr, gt)))
    if len(samples) > 1:
        m['lr_psnr_mean'] = float(calculate_lr_psnr(sr, lq=lr, samples=samples, scale=scale, reduction='mean'))
        m['lr_psnr_worst'] = float(calculate_lr_psnr(sr, lq=lr, samples=samples, scale=scale, reduction='worst'))
        m['diversity'] = float(calculate_diversity(img2=gt, samples=samples))
    return m


def summarise(per_image):
    """Mean over the images and the worst image of every metric (``worst_image`` names it)."""
    names = sorted(per_image)
    metrics = list(per_image[names[0]]) if names else []
    mean = {k: float(np.mean([per_image[n][k] for n in names])) for k in metrics}
    worst, worst_image = {}, {}
    for k in metrics:
        pick = min if k in HIGHER_IS_BETTER else max
        worst_image[k] = pick(names, key=lambda n: per_image[n][k])
        worst[k] = per_image[worst_image[k]][k]
    return dict(mean=mean, worst=worst, worst_image=worst_image, per_image=per_image)


def eval_pairs(data):
    """(name, GT, LR) of every evaluation image, sorted by name."""
    out = []
    for path in sorted(glob.glob(osp.join(data['eval_gt'], '*.png'))):
        name = osp.splitext(osp.basename(path))[0]
        out.append((name, _read(path), _read(osp.join(data['eval_lq'], f'{name}.png'))))
    return out


def evaluate_bicubic(pairs, scale):
    per_image = {}
    for name, gt, lr in pairs:
        sr = imresize_uint8(lr, scale)
        per_image[name] = image_metrics([sr], gt, lr, scale)
    return summarise(per_image)


def sample_paths(results_dir, run, img_name, temperature, num_samples):
    """The files ``basicsr test`` wrote for one image (AdFlowModel's and SRModel's naming)."""
    folder = osp.join(results_dir, 'visualization', 'eval')
    if temperature is None:
        return [osp.join(folder, f'{img_name}_{run}.png')]
    tag = temperature_tag(temperature)
    if num_samples == 1:
        return [osp.join(folder, f'{img_name}_{tag}_{run}.png')]
    return [osp.join(folder, f'{img_name}_{tag}_s{k}_{run}.png') for k in range(num_samples)]


def read_test_log(results_dir):
    """The metric means the newest ``basicsr test`` log in ``results_dir`` reports for the evaluation set."""
    return parse_log(find_log(results_dir))[1].get('eval', {})


def evaluate_run(run, preset, pairs, results_dir):
    """Per temperature (``'-'`` for deterministic models): per-image metrics, means, worst images, and the
    means ``basicsr test`` logged for the same images."""
    temps = test_temperatures(run, preset)
    samples = preset['num_samples'] if temps else 1
    logged = read_test_log(results_dir)
    out = {}
    for t in temps or [None]:
        per_image = {}
        for name, gt, lr in pairs:
            imgs = [_read(p) for p in sample_paths(results_dir, run, name, t, samples)]
            per_image[name] = image_metrics(imgs, gt, lr, preset['scale'])
        summary = summarise(per_image)
        suffix = f'_{temperature_tag(t)}' if t is not None and len(temps) > 1 else ''
        summary['test_log'] = {k[:len(k) - len(suffix)] if suffix else k: v for k, v in logged.items()
                               if (k.endswith(suffix) if suffix else True)}
        out['-' if t is None else f'{t:g}'] = summary
    return out


def log_disagreement(summary, tolerance=1e-3):
    """Metrics whose per-image mean differs from the test log's by more than ``tolerance`` (should be none:
    the log rounds to 4 decimals)."""
    bad = []
    for k, v in summary.get('test_log', {}).items():
        if k in summary['mean'] and abs(summary['mean'][k] - v) > tolerance + 1e-4 * abs(v):
            bad.append(f'{k}: {summary["mean"][k]:.4f} here, {v:.4f} in the test log')
    return bad
