"""The stage-2 options weigh the NLL against the adversarial loss as the paper does.

The paper's adversarial weights (1e-2 at 4x and 6x, 0.1 at 8x, Sec. 3.5) are relative to SRFlow's
training NLL, which is per pixel: ``-(log p + log|det|) / (H * W * ln 2)`` plus a constant
(``SRFlowNet.normal_flow``). Each shipped stage-2 file's losses, built by BasicSR from the file, must
give the generator the same ratio of NLL to GAN gradients as that NLL with the paper's weight.
"""
import glob
import math
import os
from collections import OrderedDict

import pytest
import torch
import yaml
from basicsr.archs import build_network
from basicsr.losses import build_loss

from tests.conftest import OPTIONS, TINY_G

PAPER_GAN_WEIGHT = {4: 1e-2, 6: 1e-2, 8: 0.1}  # paper Sec. 3.5


def stage2_files():
    files = sorted(glob.glob(os.path.join(OPTIONS, '*.yml')) + glob.glob(os.path.join(OPTIONS, 'ablation', '*.yml')))
    out = []
    for path in files:
        with open(path) as f:
            opt = yaml.safe_load(f)
        if opt.get('model_type') == 'AdFlowModel' and 'gan_opt' in opt.get('train', {}):
            out.append(path)
    return out


FILES = stage2_files()


def relativistic_g_loss(cri_gan, real_pred, fake_pred):
    """The generator's relativistic loss as AdFlowModel.optimize_parameters forms it (ESRGAN's)."""
    l_real = cri_gan(real_pred - torch.mean(fake_pred), False, is_disc=False)
    l_fake = cri_gan(fake_pred - torch.mean(real_pred), True, is_disc=False)
    return (l_real + l_fake) / 2


def grad_norm(loss, params):
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.sqrt(sum((g**2).sum() for g in grads if g is not None))


def test_every_stage2_file_is_checked():
    names = {os.path.relpath(p, OPTIONS) for p in FILES}
    assert {'train_AdFlow_x4.yml', 'train_AdFlow_x6.yml', 'train_AdFlow_x8.yml', 'demo_AdFlow_x4.yml',
            'train_AdFlow_from_SRFlow_x4.yml', 'ablation/train_AdFlow_x8_K16.yml'} <= names
    assert len(names) >= 16


@pytest.mark.parametrize('path', FILES, ids=[os.path.relpath(f, OPTIONS) for f in FILES])
def test_nll_to_gan_gradient_ratio_is_srflows(path):
    with open(path) as f:
        opt = yaml.safe_load(f)
    scale = opt['scale']
    train = opt['train']
    cri_nll = build_loss(OrderedDict(train['nll_opt']))
    cri_gan = build_loss(OrderedDict(train['gan_opt']))
    ref_gan = build_loss(OrderedDict(type='GANLoss', gan_type='vanilla', real_label_val=1.0, fake_label_val=0.0,
                                     loss_weight=PAPER_GAN_WEIGHT[scale]))
    torch.manual_seed(0)
    net = build_network(dict(TINY_G, scale=scale))
    size = 48 if scale == 6 else 32
    net_d = build_network(dict(type='VGGStyleDiscriminatorAnySize', num_in_ch=3, num_feat=4, input_size=size))
    lq = torch.rand(2, 3, size // scale, size // scale)
    gt = torch.rand(2, 3, size, size)
    with torch.no_grad():
        net(lq, gt)  # ActNorm's data-dependent initialisation
    out = net(lq, cri_nll.dequantize(gt), sample=True, temperature=1.0)
    params = [p for p in net.parameters() if p.requires_grad]
    real_pred, fake_pred = net_d(gt).detach(), net_d(out['sr'])

    ours = grad_norm(cri_nll(out['logp'], out['logdet'], out['shape']), params) / grad_norm(
        relativistic_g_loss(cri_gan, real_pred, fake_pred), params)
    # SRFlow: nll = -(logp + logdet) / (H * W * ln 2) (+ a constant), the paper's lambda on the GAN
    h, w = out['shape'][2], out['shape'][3]
    srflow_nll = (-(out['logp'] + out['logdet']) / (h * w * math.log(2))).mean()
    srflow = grad_norm(srflow_nll, params) / grad_norm(relativistic_g_loss(ref_gan, real_pred, fake_pred), params)
    assert float(ours) == pytest.approx(float(srflow), rel=1e-4), (
        f'{path}: NLL/GAN gradient ratio {float(ours):.4g}, SRFlow unit with the paper weight gives {float(srflow):.4g}')
