"""The flow's negative log-likelihood (paper eq. 6) as a BasicSR loss."""
import math

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn as nn

UNITS = ('bits_per_dim', 'bits_per_pixel_srflow', 'nats')


@LOSS_REGISTRY.register()
class FlowNLLLoss(nn.Module):
    """NLL of the HR under the conditional flow, with uniform dequantisation.

    The HR is discrete (8-bit, in practice binned further by training noise); a density model of
    continuous values is turned into a model of the bins by adding uniform noise of one bin's width
    (``1 / quant`` of the [0, 1] range; the paper and SRFlow use quant = 32) and charging ``log(quant)``
    nats per dimension. The loss is the batch mean of::

        nll = -(log p(z) + sum of log|det|) + D * log(quant)

    reported in one of three units:

    * ``bits_per_dim``: nll / (D * ln 2) (D = C*H*W). Default; comparable across image sizes.
    * ``bits_per_pixel_srflow``: SRFlow's unit, (-(log p + log-dets) + H*W*log(quant)) / (H*W * ln 2):
      per pixel (not per dimension), and its dequantisation charge counts log(quant) per pixel instead
      of per dimension. The stage-2 (AdFlow) options train in it: the paper's adversarial weights are
      relative to SRFlow's per-pixel NLL, which is 3x the per-dimension one (for RGB), so with
      ``bits_per_dim`` the same weight would count three times as much against the NLL.
    * ``nats``: nll summed over the image, in nats (with ``quant: 0`` and a unit Laplace prior at
      flow_depth 0 this is exactly ``L1_sum + D*log 2``, Sec. 3.1).

    Negative values are normal once the model is trained.

    Args:
        loss_weight (float): Weight of the loss. Default: 1.
        quant (int): Bins per unit range for dequantisation; 0 disables noise and correction. Default: 32.
        unit (str): See above. Default: 'bits_per_dim'.
    """

    def __init__(self, loss_weight=1.0, quant=32, unit='bits_per_dim'):
        super().__init__()
        if unit not in UNITS:
            raise ValueError(f'FlowNLLLoss unit must be one of {UNITS}, got {unit!r}')
        self.loss_weight = loss_weight
        self.quant = quant
        self.unit = unit

    def dequantize(self, img):
        """Add uniform noise of one bin's width, U(-1/2, 1/2) / quant, to images in [0, 1]."""
        if not self.quant:
            return img
        return img + (torch.rand_like(img) - 0.5) / self.quant

    def nll(self, logp, logdet, shape):
        """Per-sample NLL in this loss's unit. ``shape`` is the (B, C, H, W) the flow encoded."""
        channels, pixels = shape[1], shape[2] * shape[3]
        dims = channels * pixels
        nats = -(logp + logdet)
        log_quant = math.log(self.quant) if self.quant else 0.0
        if self.unit == 'bits_per_dim':
            return (nats + dims * log_quant) / (dims * math.log(2))
        if self.unit == 'bits_per_pixel_srflow':
            return (nats + pixels * log_quant) / (pixels * math.log(2))
        return nats + dims * log_quant

    def forward(self, logp, logdet, shape):
        return self.loss_weight * self.nll(logp, logdet, shape).mean()
