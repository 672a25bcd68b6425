"""VGG16PerceptualLoss: BasicSR's perceptual loss on the VGG16 features of `basicsr fetch-weights` (offline)."""
import copy
import os
from collections import OrderedDict

import pytest
import torch
import torchvision
import yaml
from basicsr.losses import build_loss
from basicsr.utils.options import ordered_yaml

from adflow_plugin.pretrained import VGG16_FEATURES
from tests.conftest import OPTIONS, in_process_model
from tests.pretrained_cache import require_fetched_weights


def _load(path):
    with open(path) as f:
        return yaml.load(f, Loader=ordered_yaml()[0])


def test_equals_l1_of_torchvision_vgg16_conv5_3():
    """Default layer conv5_3 = torchvision's vgg16.features[28] output (before the ReLU), ImageNet-normalised."""
    root = require_fetched_weights()
    loss = build_loss({'type': 'VGG16PerceptualLoss', 'perceptual_weight': 0.5})
    assert loss.layer_weights == {'conv5_3': 1.0}
    gen = torch.Generator().manual_seed(0)
    x, gt = torch.rand(2, 3, 32, 32, generator=gen), torch.rand(2, 3, 32, 32, generator=gen)
    x.requires_grad_(True)
    percep, style = loss(x, gt)
    assert style is None

    with torch.device('meta'):
        vgg = torchvision.models.vgg16(weights=None)
    state = torch.load(os.path.join(root, VGG16_FEATURES), map_location='cpu', weights_only=True)
    vgg.features.to_empty(device='cpu').load_state_dict({k.split('.', 1)[1]: v for k, v in state.items()})
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        fx, fg = (vgg.features[:29]((t - mean) / std) for t in (x, gt))
    assert percep.item() == pytest.approx(0.5 * (fx - fg).abs().mean().item(), rel=1e-5)

    percep.backward()  # gradients reach the image, never the fixed VGG
    assert x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in loss.parameters())


def test_missing_weights_name_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv('ADFLOW_HOME', str(tmp_path))
    with pytest.raises(FileNotFoundError, match='run `basicsr fetch-weights`'):
        build_loss({'type': 'VGG16PerceptualLoss'})
    with pytest.raises(ValueError, match='unknown layers'):
        build_loss({'type': 'VGG16PerceptualLoss', 'layer_weights': {'conv5_4': 1}})


@pytest.mark.parametrize('scale', [4, 6, 8])
def test_offline_esrgan_options_differ_from_stock_only_in_the_perceptual_term(scale):
    stock = _load(os.path.join(OPTIONS, f'train_ESRGAN_x{scale}.yml'))
    offline = _load(os.path.join(OPTIONS, f'train_ESRGAN_VGG16_x{scale}.yml'))
    assert offline['name'] == f'ESRGAN_VGG16_x{scale}_DF2K'
    p16, p19 = offline['train'].pop('perceptual_opt'), stock['train'].pop('perceptual_opt')
    assert p16['type'] == 'VGG16PerceptualLoss' and p16['layer_weights'] == {'conv5_3': 1}
    assert p19['type'] == 'PerceptualLoss' and p19['vgg_type'] == 'vgg19'
    assert {k: v for k, v in p16.items() if k not in ('type', 'layer_weights')} == {
        k: v for k, v in p19.items() if k not in ('type', 'layer_weights', 'vgg_type')}
    offline.pop('name'), stock.pop('name')
    assert offline == stock


def test_esrgan_model_trains_a_step_with_the_offline_perceptual_loss(tmp_path):
    """BasicSR's ESRGANModel from the offline options file (tiny networks): one real optimisation step."""
    require_fetched_weights()
    opt = _load(os.path.join(OPTIONS, 'train_ESRGAN_VGG16_x4.yml'))
    opt = copy.deepcopy(opt)
    opt['num_gpu'] = 0
    opt['network_g'] = OrderedDict(type='RRDBNet', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, num_grow_ch=4)
    opt['network_d'] = OrderedDict(type='VGGStyleDiscriminator', num_in_ch=3, num_feat=4, input_size=128)
    opt['path'].update(pretrain_network_g=None)
    opt['datasets'] = {}
    model = in_process_model(opt, tmp_path)
    assert type(model.cri_perceptual).__name__ == 'VGG16PerceptualLoss'
    gen = torch.Generator().manual_seed(0)
    model.feed_data({'lq': torch.rand(1, 3, 32, 32, generator=gen), 'gt': torch.rand(1, 3, 128, 128, generator=gen)})
    before = [p.detach().clone() for p in model.net_g.parameters()]
    model.optimize_parameters(1)
    log = model.get_current_log()
    assert log['l_g_percep'] > 0 and torch.isfinite(torch.tensor(log['l_g_percep']))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.net_g.parameters()))
