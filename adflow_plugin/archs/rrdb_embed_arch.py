"""The RRDB embedding network E(x) (paper Sec. 3.4) and an RRDBNet that upsamples by 4, 6 or 8.

Both reuse BasicSR's RRDB blocks and BasicSR's parameter names (``conv_first``, ``body.N.rdbK.convM``,
``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``), so a checkpoint from BasicSR's
``RRDBNet`` PSNR training initialises the embedding directly (only the unused head is left over) and
the x4 baseline loads BasicSR's x4 ESRGAN weights unchanged.
"""
import torch
from basicsr.archs.arch_util import make_layer
from basicsr.archs.rrdbnet_arch import RRDB
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn
from torch.nn import functional as F

# nearest-neighbour upsampling stages per scale; conv_up{i} follows stage i. 6x goes 3 then 2 so that
# the flow's 3x level (HR 144 -> 72 for LR 24) has a feature of its own size.
UPSAMPLE_FACTORS = {1: (), 2: (2, ), 3: (3, ), 4: (2, 2), 6: (3, 2), 8: (2, 2, 2), 16: (2, 2, 2, 2)}
# keys of BasicSR's RRDBNet that the embedding does not have (the image head)
HEAD_KEYS = ('conv_hr.weight', 'conv_hr.bias', 'conv_last.weight', 'conv_last.bias')


def upsample_factors(scale):
    if scale not in UPSAMPLE_FACTORS:
        raise ValueError(f'scale {scale} is not supported; choose one of {sorted(UPSAMPLE_FACTORS)}')
    return UPSAMPLE_FACTORS[scale]


@ARCH_REGISTRY.register()
class RRDBEmbedNet(nn.Module):
    """RRDB trunk returning the conditioning embedding.

    The embedding is the trunk output (``feat + conv_body(body(feat))``) concatenated with the outputs
    of the RRDB blocks listed in ``embed_blocks`` (0-based, as SRFlow counts), at LR resolution:
    ``num_feat * (len(embed_blocks) + 1)`` channels (320 by default).

    Optionally the network also has ``num_upsample`` upsampling stages (``conv_up1``, ...) whose
    outputs serve as conditioning at resolutions above the LR (SRFlow's ``fea_up2``, ``fea_up4``; see
    :meth:`upsampled`), and an image head (``conv_hr``, ``conv_last``) when ``num_out_ch`` is set.

    Args:
        num_in_ch (int): Input channels. Default: 3.
        num_feat (int): Trunk width. Default: 64.
        num_block (int): RRDB blocks. Default: 23.
        num_grow_ch (int): Growth channels of the dense blocks. Default: 32.
        embed_blocks (list[int]): Blocks whose outputs join the embedding (0-based). Default: [1, 4, 6, 8]
            (the paper's "blocks 1, 4, 6 and 8"; SRFlow used [1, 8, 15, 22] at 4x and [1, 3, 5, 7] at 8x).
        upsample (list[int]): Factors of the upsampling stages (e.g. [2, 2] for 4x). Default: none.
        num_out_ch (int | None): Channels of an image head after the upsampling stages. Default: None.
        trunk_residual (str): What ``conv_body`` is added to: 'conv_first' (ESRGAN, BasicSR: the output of
            ``conv_first``) or 'body' (SRFlow's RRDBNet: the last block's output, since its loop overwrites
            the variable holding ``conv_first``'s output). Default: 'conv_first'.
    """

    def __init__(self, num_in_ch=3, num_feat=64, num_block=23, num_grow_ch=32, embed_blocks=(1, 4, 6, 8), upsample=(),
                 num_out_ch=None, trunk_residual='conv_first'):
        super().__init__()
        if trunk_residual not in ('conv_first', 'body'):
            raise ValueError(f"trunk_residual must be 'conv_first' (ESRGAN) or 'body' (SRFlow), got {trunk_residual!r}")
        self.trunk_residual = trunk_residual
        embed_blocks = [int(b) for b in embed_blocks]
        bad = [b for b in embed_blocks if not 0 <= b < num_block]
        if bad:
            raise ValueError(f'embed_blocks {bad} outside the trunk of {num_block} blocks (0-based indices)')
        self.embed_blocks = embed_blocks
        self.upsample = [int(f) for f in upsample]
        self.num_feat = num_feat
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = make_layer(RRDB, num_block, num_feat=num_feat, num_grow_ch=num_grow_ch)
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        for i in range(len(self.upsample)):
            self.add_module(f'conv_up{i + 1}', nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        self.num_out_ch = num_out_ch
        if num_out_ch:
            self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    @property
    def out_channels(self):
        return self.num_feat * (len(self.embed_blocks) + 1)

    def trunk(self, x):
        """Returns (trunk output, concatenation of the selected block outputs or None)."""
        feat = self.conv_first(x)
        body, taps = feat, {}
        for i, block in enumerate(self.body):
            body = block(body)
            if i in self.embed_blocks:
                taps[i] = body
        trunk = (feat if self.trunk_residual == 'conv_first' else body) + self.conv_body(body)
        blocks = torch.cat([taps[b] for b in self.embed_blocks], dim=1) if taps else None
        return trunk, blocks

    def upsampled(self, trunk, num_stages, activated=False):
        """Outputs of the first ``num_stages`` upsampling stages: before the LeakyReLU, or after it when
        ``activated`` (what SRFlow's flow reads: its in-place LeakyReLU overwrites fea_up2, fea_up4, ...)."""
        outs, feat = [], trunk
        for i in range(num_stages):
            pre = getattr(self, f'conv_up{i + 1}')(F.interpolate(feat, scale_factor=self.upsample[i], mode='nearest'))
            feat = F.leaky_relu(pre, 0.2)
            outs.append(feat if activated else pre)
        return outs

    def forward(self, x):
        """The embedding at LR resolution: cat(trunk output, selected blocks)."""
        trunk, blocks = self.trunk(x)
        return trunk if blocks is None else torch.cat([trunk, blocks], dim=1)

    def image(self, x):
        """The image head (BasicSR's RRDBNet forward): needs ``num_out_ch`` and all upsampling stages."""
        if not self.num_out_ch:
            raise RuntimeError('this RRDBEmbedNet has no image head (num_out_ch is not set)')
        trunk, _ = self.trunk(x)
        ups = self.upsampled(trunk, len(self.upsample))
        feat = F.leaky_relu(ups[-1], 0.2) if ups else trunk
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


def load_basicsr_rrdb(net, state_dict):
    """Load a BasicSR ``RRDBNet`` state dict (``params`` / ``params_ema`` of ``net_g_*.pth``) into ``net``.

    Keys that ``net`` lacks are allowed only if they belong to the unused image head or to upsampling
    stages ``net`` does not have; any other difference raises.
    """
    own = net.state_dict()
    extra = [k for k in state_dict if k not in own]
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in extra if k not in HEAD_KEYS and not k.startswith('conv_up')]
    if unexpected or missing:
        raise KeyError(f'not a BasicSR RRDBNet checkpoint for this embedding: missing {missing[:5]}, '
                       f'unexpected {unexpected[:5]}')
    net.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=True)
    return extra


@ARCH_REGISTRY.register()
class MultiScaleRRDBNet(RRDBEmbedNet):
    """ESRGAN's RRDBNet with an upsampler for x4, x6 or x8 (BasicSR's ``RRDBNet`` stops at x4).

    Same parameter names as BasicSR's ``RRDBNet``; at x4 the two are interchangeable (same keys, same
    output). x8 adds ``conv_up3``; x6 upsamples by 3 then 2 with ``conv_up1``, ``conv_up2``.

    Args:
        num_in_ch (int): Input channels.
        num_out_ch (int): Output channels.
        scale (int): 4, 6 or 8 (also 1, 2, 3, 16).
        num_feat (int): Trunk width. Default: 64.
        num_block (int): RRDB blocks. Default: 23.
        num_grow_ch (int): Growth channels. Default: 32.
    """

    def __init__(self, num_in_ch=3, num_out_ch=3, scale=4, num_feat=64, num_block=23, num_grow_ch=32):
        super().__init__(num_in_ch, num_feat, num_block, num_grow_ch, embed_blocks=(), upsample=upsample_factors(scale),
                         num_out_ch=num_out_ch)
        self.scale = scale

    def forward(self, x):
        return self.image(x)
