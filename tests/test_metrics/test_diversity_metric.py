"""NTIRE 2021 diversity score. LPIPS runs with a RANDOM AlexNet backbone here (no weights can be
downloaded): the known answers below hold for any backbone."""
import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_metric
from basicsr.utils.registry import METRIC_REGISTRY

from adflow_plugin.metrics.diversity_metric import calculate_diversity, diversity_score
from adflow_plugin.metrics.lpips_metric import lpips_map


def _gt_and_samples(n=3, size=40, seed=0):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    samples = [np.clip(gt.astype(int) + rng.integers(-50, 51, gt.shape), 0, 255).astype(np.uint8) for _ in range(n)]
    return gt, samples


def test_registered():
    assert METRIC_REGISTRY.get('calculate_diversity') is calculate_diversity


def test_score_from_maps_known_answer():
    # sample A is good on the left half, sample B on the right half
    a = torch.tensor([[0.1, 0.5], [0.1, 0.5]])
    b = torch.tensor([[0.4, 0.2], [0.4, 0.2]])
    # global best = min(mean A = 0.3, mean B = 0.3) = 0.3; local best = mean(0.1, 0.2) = 0.15
    assert diversity_score([a, b]) == pytest.approx((0.3 - 0.15) / 0.3 * 100)
    assert diversity_score([a, a, a]) == 0.0
    assert diversity_score([torch.zeros(2, 2)] * 2) == 0.0  # perfect samples: ratio undefined, scored 0


def test_identical_samples_score_zero():
    gt, samples = _gt_and_samples()
    assert calculate_diversity(img2=gt, samples=[samples[0]] * 4, random_backbone=True) == 0.0


def test_different_samples_score_positive_and_match_the_definition():
    gt, samples = _gt_and_samples()
    score = calculate_diversity(img2=gt, samples=samples, random_backbone=True)
    assert score > 0
    maps = torch.stack([lpips_map(s, gt, random_backbone=True).double() for s in samples])
    global_best = maps.mean(dim=(1, 2)).min()
    local_best = maps.min(dim=0).values.mean()
    assert score == pytest.approx(float((global_best - local_best) / global_best * 100))


def test_through_basicsr_calculate_metric():
    gt, samples = _gt_and_samples(n=2)
    data = dict(img=samples[0], img2=gt, lq=gt[::4, ::4], samples=samples, scale=4)
    value = calculate_metric(data, {'type': 'calculate_diversity', 'random_backbone': True})
    assert value == pytest.approx(calculate_diversity(img2=gt, samples=samples, random_backbone=True))


def test_errors_name_the_fix():
    gt, samples = _gt_and_samples(n=1)
    with pytest.raises(ValueError, match='num_samples'):
        calculate_diversity(img=samples[0], img2=gt, random_backbone=True)
    with pytest.raises(ValueError, match='ground truth'):
        calculate_diversity(samples=samples, random_backbone=True)
