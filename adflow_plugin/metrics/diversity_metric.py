"""Diversity score of the NTIRE 2021 "Learning the Super-Resolution Space" challenge.

From the challenge's evaluation script (andreas128/NTIRE21_Learning_SR_Space, ``measure.py``), for one
image with N SR samples and its ground truth:

* each sample's per-pixel LPIPS map against the GT (AlexNet, v0.1, ``spatial=True``, inputs in [-1, 1]);
* global best = the lowest mean of a sample's map (the best single sample);
* local best = the mean over pixels of the per-pixel minimum over samples (best sample at each pixel);
* score = (global best - local best) / global best x 100.

Identical samples (a deterministic method) score 0; more diverse samples score higher. The challenge
used 10 samples per image. The mean and worst LR-PSNR over the same samples, the challenge's other
two numbers, come from ``calculate_lr_psnr`` with ``reduction: mean`` / ``reduction: worst``.
"""
import torch
from basicsr.utils.registry import METRIC_REGISTRY

from adflow_plugin.metrics.lpips_metric import lpips_map

__all__ = ['calculate_diversity', 'diversity_score']


def diversity_score(maps):
    """NTIRE 2021 diversity (percent) from per-sample per-pixel LPIPS maps (a list of H x W tensors).

    Returns 0 when the best sample matches the GT exactly (global best 0), where the ratio is undefined.
    """
    stacked = torch.stack([m.double() for m in maps])
    global_best = stacked.mean(dim=(1, 2)).min().item()
    local_best = stacked.min(dim=0).values.mean().item()
    if global_best <= 0:
        return 0.0
    return float((global_best - local_best) / global_best * 100.0)


@METRIC_REGISTRY.register()
def calculate_diversity(img2=None, samples=None, backbone_path=None, random_backbone=False, device=None, **kwargs):
    """NTIRE 2021 diversity score (%) of the SR samples of one image. Higher is more diverse.

    Args:
        img2 (ndarray): Ground truth, uint8 BGR HWC.
        samples (list[ndarray]): The N SR samples of this image (uint8 BGR HWC, GT size), passed by the
            model when it draws several (AdFlowModel with ``num_samples`` > 1; NTIRE used 10).
        backbone_path, random_backbone, device: as for ``calculate_lpips``.

    Returns:
        float: (global_best - local_best) / global_best * 100, 0 for identical samples.
    """
    if img2 is None:
        raise ValueError('calculate_diversity needs the ground truth (`img2`); this data set has none')
    if samples is None:
        raise ValueError('calculate_diversity needs several SR samples per image, but the model passed no '
                         '`samples`: use a stochastic model (AdFlowModel) with `num_samples` > 1 in its val options '
                         '(the NTIRE 2021 challenge used 10). A deterministic method scores 0.')
    samples = list(samples)
    if not samples:
        raise ValueError('calculate_diversity: `samples` is empty')
    maps = [lpips_map(sr, img2, backbone_path, random_backbone, device) for sr in samples]
    return diversity_score(maps)
