"""FlowNLLLoss against hand-computed values: the log(32) charge, the noise width and every unit."""
import math

import pytest
import torch

from adflow_plugin.losses.flow_nll_loss import FlowNLLLoss

LN2 = 0.6931471805599453
LN32 = 3.4657359027997265  # 5 ln 2


@pytest.fixture
def nats_case():
    # log p(z) = -100, sum of log|det| = 20 for an image of 3 x 4 x 4 = 48 dimensions, 16 pixels: 80 nats
    return torch.tensor([-100.0]), torch.tensor([20.0]), (1, 3, 4, 4)


def test_bits_per_dim(nats_case):
    loss = FlowNLLLoss(quant=32, unit='bits_per_dim')
    # (80 + 48 ln 32) / (48 ln 2) = 80 / 33.27106466687737 + 5
    assert loss.nll(*nats_case).item() == pytest.approx(2.404491735 + 5.0, rel=1e-6)


def test_bits_per_pixel_srflow(nats_case):
    loss = FlowNLLLoss(quant=32, unit='bits_per_pixel_srflow')
    # SRFlow: (80 + 16 ln 32) / (16 ln 2) = 80 / 11.090354888959125 + 5 (log 32 charged per pixel)
    assert loss.nll(*nats_case).item() == pytest.approx(7.213475204 + 5.0, rel=1e-6)


def test_nats_and_the_per_dimension_charge(nats_case):
    assert FlowNLLLoss(quant=32, unit='nats').nll(*nats_case).item() == pytest.approx(80 + 48 * LN32, rel=1e-6)
    assert FlowNLLLoss(quant=0, unit='nats').nll(*nats_case).item() == pytest.approx(80.0, rel=1e-6)
    assert FlowNLLLoss(quant=0, unit='bits_per_dim').nll(*nats_case).item() == pytest.approx(80 / (48 * LN2))
    # the charge is log(quant) per dimension whatever quant is: 256 bins are 8 bits per dimension
    assert FlowNLLLoss(quant=256).nll(*nats_case).item() == pytest.approx(80 / (48 * LN2) + 8.0, rel=1e-6)


def test_batch_mean_and_weight():
    loss = FlowNLLLoss(loss_weight=0.5, quant=0, unit='nats')
    value = loss(torch.tensor([-10.0, -30.0]), torch.tensor([0.0, 0.0]), (2, 3, 2, 2))
    assert value.item() == pytest.approx(0.5 * (10 + 30) / 2)


def test_dequantisation_noise_is_one_bin_wide():
    torch.manual_seed(0)
    img = torch.full((1, 3, 200, 200), 0.5)
    noise = FlowNLLLoss(quant=32).dequantize(img) - img
    assert noise.abs().max().item() <= 1 / 64 + 1e-7  # U(-1/2, 1/2) / 32
    assert noise.max().item() > 1 / 64 * 0.999 and noise.min().item() < -1 / 64 * 0.999
    assert noise.std().item() == pytest.approx(1 / 32 / math.sqrt(12), rel=0.01)
    assert abs(noise.mean().item()) < 1e-4
    assert torch.equal(FlowNLLLoss(quant=0).dequantize(img), img)
