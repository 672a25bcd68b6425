"""Every invertible layer: exact round trip and log-det equal to autograd's Jacobian log-det."""
import math

import pytest
import torch
from torch.nn import functional as F

from adflow_plugin.archs.adflow_arch import AdFlowNet
from adflow_plugin.archs.flow_layers import (ACTNORM_MIN_STD, ActNorm, AffineInjector, AffineScale, CondAffineCoupling,
                                             FlowStep, InvertibleConv1x1, RandomRotation, Squeeze, ZeroConv2d)
from adflow_plugin.archs.jacobian_check import check_layer
from adflow_plugin.losses.flow_nll_loss import FlowNLLLoss

COND_CH = 5


def perturb(module, std=0.15, seed=0):
    """Give every parameter (zero-initialised ones included) random values, so no layer is the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
            if name.endswith('logs'):  # keep exp(logs * 3) moderate
                p.mul_(0.2)
    for m in module.modules():
        if isinstance(m, ActNorm):
            m.set_initialized()
    return module


def layers():
    """(id, factory(channels)) for every invertible layer and the flow step in each configuration."""
    cases = [
        ('actnorm', lambda c: ActNorm(c)),
        ('random_rotation', lambda c: RandomRotation(c)),
        ('invconv1x1', lambda c: InvertibleConv1x1(c)),
        ('squeeze', lambda c: Squeeze()),
    ]
    for form in AffineScale.FORMS:
        cases.append((f'coupling_{form}', lambda c, f=form: CondAffineCoupling(c, COND_CH, 6, AffineScale(f))))
        cases.append((f'injector_{form}', lambda c, f=form: AffineInjector(c, COND_CH, 6, AffineScale(f))))
        for rotation in ('random', 'learned'):
            for first in (False, True):
                cases.append((f'step_{form}_{rotation}_{"injfirst" if first else "coupfirst"}',
                              lambda c, f=form, r=rotation, i=first: FlowStep(
                                  c, COND_CH, 6, rotation=r, injector_first=i, scale=AffineScale(f))))
    cases.append(('step_no_coupling', lambda c: FlowStep(c, COND_CH, 6, coupling=False)))
    cases.append(('step_plain_nets', lambda c: FlowStep(c, COND_CH, 6, net_actnorm=False)))
    return cases


@pytest.mark.parametrize('name,factory', layers(), ids=[c[0] for c in layers()])
def test_layer_roundtrip_and_logdet(name, factory):
    torch.manual_seed(1)
    channels = 4
    layer = perturb(factory(channels)).eval()
    x = torch.randn(2, channels, 4, 4)
    cond = torch.randn(2, COND_CH, 4, 4)
    # float32 round trip
    rep32 = check_layer(layer, x, cond)
    assert rep32['roundtrip_max_abs_err'] < 1e-5, rep32
    # float64 log-det against the autograd Jacobian, and encode/decode log-dets cancel
    rep = check_layer(layer.double(), x.double(), cond.double())
    assert rep['logdet_abs_err'] <= 1e-4 * max(1.0, abs(rep['logdet_jacobian'])), rep
    assert rep['logdet_inverse_err'] < 1e-8, rep


def test_inv_sigmoid_decode_contracts():
    """AdFlow's multiplier: decoding multiplies by sigmoid(.) + eps <= 1 + eps, however large s~ gets."""
    scale = AffineScale('inv_sigmoid', offset=2.0, eps=1e-4)
    x = torch.ones(1, 1, 1, 1)
    for raw in (-50.0, 0.0, 50.0):
        y, _ = scale.apply(x, torch.zeros_like(x), torch.full_like(x, raw), reverse=True)
        assert 0 < y.item() <= 1 + 1e-4 + 1e-6
    srflow = AffineScale('sigmoid', offset=2.0, eps=1e-4)
    y, _ = srflow.apply(x, torch.zeros_like(x), torch.full_like(x, -50.0), reverse=True)
    assert y.item() > 1e3  # SRFlow's form explodes when decoding


def test_actnorm_data_dependent_init_and_state():
    torch.manual_seed(0)
    layer = ActNorm(3).train()
    x = torch.randn(8, 3, 5, 5) * torch.tensor([2.0, 0.5, 3.0]).view(1, 3, 1, 1) + 1.0
    y, _ = layer(x)
    assert bool(layer.initialized)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    # the 'initialized' state is a buffer: it survives a state-dict round trip and is not redone
    fresh = ActNorm(3).train()
    fresh.load_state_dict(layer.state_dict())
    assert bool(fresh.initialized)
    fresh(torch.randn(4, 3, 5, 5) * 10)
    assert torch.equal(fresh.bias, layer.bias)


def test_random_rotation_is_orthonormal_buffer():
    rot = RandomRotation(12)
    assert 'weight' in dict(rot.named_buffers()) and not list(rot.parameters())
    w = rot.weight.double()
    assert torch.allclose(w @ w.t(), torch.eye(12, dtype=torch.float64), atol=1e-6)


def test_zero_conv_starts_at_zero():
    conv = ZeroConv2d(4, 6)
    assert conv(torch.randn(1, 4, 3, 3)).abs().max() == 0


def test_actnorm_init_scale_is_bounded_for_a_constant_channel():
    """A channel constant over the first batch keeps the unit scale; the others are normalised."""
    torch.manual_seed(0)
    layer = ActNorm(3).train()
    x = torch.randn(2, 3, 4, 4)
    x[:, 1] = 0.7
    x[:, 2] *= 2e-3  # small but above ACTNORM_MIN_STD: normalised, at most 1 / ACTNORM_MIN_STD
    y, _ = layer(x)
    assert layer.logs[0, 1].item() == 0.0
    assert layer.logs.max().item() <= -math.log(ACTNORM_MIN_STD) + 1e-4
    assert torch.allclose(y[:, 1], torch.zeros_like(y[:, 1]), atol=1e-6)
    assert torch.allclose(y[:, [0, 2]].std(dim=(0, 2, 3), unbiased=False), torch.ones(2), atol=1e-3)


@pytest.mark.parametrize('case', ['batch1_1x1_level', 'constant_colour_channel'])
def test_flow_trains_after_a_degenerate_first_batch(case):
    """The first batch initialises every ActNorm. With batch 1 the last level is 1x1 here (one value per
    channel), or one colour channel is constant without dequantisation noise: the next batches must still
    give finite NLLs and gradients and latents of a sensible size (Glow's 1 / (std + 1e-6) gave ~1e19)."""
    torch.manual_seed(0)
    net = AdFlowNet(scale=4, num_feat=8, num_block=1, num_grow_ch=4, embed_blocks=[0], flow_depth=2,
                    num_transition=1, hidden_channels=8, rotation_seed=0).train()
    if case == 'batch1_1x1_level':
        nll, size, batch = FlowNLLLoss(quant=32), 8, 1  # 3 levels at 4x: HR 8 -> 1x1 at the last level
    else:
        nll, size, batch = FlowNLLLoss(quant=0), 16, 2
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    gen = torch.Generator().manual_seed(1)
    for step in range(4):
        gt = torch.rand(batch, 3, size, size, generator=gen)
        if step == 0 and case == 'constant_colour_channel':
            gt[:, 2] = 0.5
        out = net(F.avg_pool2d(gt, 4), nll.dequantize(gt))
        loss = nll(out['logp'], out['logdet'], out['shape'])
        opt.zero_grad()
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
        z_max = max(z.abs().max().item() for z in out['latents'])
        assert torch.isfinite(loss) and torch.isfinite(grads).all(), (step, loss.item())
        assert z_max < 1e3 and abs(loss.item()) < 1e3, (step, z_max, loss.item())
        opt.step()
