"""ESRGAN's VGG-style discriminator for any patch size (BasicSR's accepts 128 and 256 only)."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn


def num_stages(input_size):
    """Stride-2 stages until the feature map is below 8 pixels: 5 for 128, 144 and 160, 6 for 256."""
    stages, size = 0, int(input_size)
    while size >= 8:
        size //= 2
        stages += 1
    return stages, size


@ARCH_REGISTRY.register()
class VGGStyleDiscriminatorAnySize(nn.Module):
    """BasicSR's ``VGGStyleDiscriminator`` with its linear layer sized for the actual patch.

    Same layers and parameter names as BasicSR's (``conv0_0``, ``conv0_1``, ``bn0_1``, ..., ``linear1``,
    ``linear2``): at 128 and 256 it is the same network and loads BasicSR's checkpoints. The paper
    (Sec. 3.4) narrows it from 64 to 16 channels (``num_feat: 16``) and trains on 160 (4x, 8x) and
    144 (6x) patches.

    Args:
        num_in_ch (int): Input channels. Default: 3.
        num_feat (int): Base width. Default: 64 (AdFlow: 16).
        input_size (int): Patch size the discriminator sees. Default: 128.
    """

    def __init__(self, num_in_ch=3, num_feat=64, input_size=128):
        super().__init__()
        self.input_size = int(input_size)
        self.num_stages, final = num_stages(self.input_size)
        if self.num_stages < 1:
            raise ValueError(f'input_size {input_size} is too small for a VGG-style discriminator (need >= 8)')
        widths = [num_feat * min(2**i, 8) for i in range(self.num_stages)]
        self.conv0_0 = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1, bias=True)
        self.conv0_1 = nn.Conv2d(num_feat, num_feat, 4, 2, 1, bias=False)
        self.bn0_1 = nn.BatchNorm2d(num_feat, affine=True)
        for i in range(1, self.num_stages):
            setattr(self, f'conv{i}_0', nn.Conv2d(widths[i - 1], widths[i], 3, 1, 1, bias=False))
            setattr(self, f'bn{i}_0', nn.BatchNorm2d(widths[i], affine=True))
            setattr(self, f'conv{i}_1', nn.Conv2d(widths[i], widths[i], 4, 2, 1, bias=False))
            setattr(self, f'bn{i}_1', nn.BatchNorm2d(widths[i], affine=True))
        self.linear1 = nn.Linear(widths[-1] * final * final, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x):
        if x.shape[2] != self.input_size or x.shape[3] != self.input_size:
            raise ValueError(f'discriminator built for {self.input_size}x{self.input_size} patches got '
                             f'{tuple(x.shape[2:])}; set network_d.input_size to the training gt_size')
        feat = self.lrelu(self.conv0_0(x))
        feat = self.lrelu(self.bn0_1(self.conv0_1(feat)))
        for i in range(1, self.num_stages):
            feat = self.lrelu(getattr(self, f'bn{i}_0')(getattr(self, f'conv{i}_0')(feat)))
            feat = self.lrelu(getattr(self, f'bn{i}_1')(getattr(self, f'conv{i}_1')(feat)))
        feat = self.lrelu(self.linear1(feat.flatten(1)))
        return self.linear2(feat)
