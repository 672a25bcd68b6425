"""AdFlow's generator: the RRDB embedding E(x) and the conditional flow f(y; E(x)) (paper Sec. 3).

Encode (HR -> latents) gives the NLL terms of eq. (6); decode (latents -> HR) draws super-resolutions.
The layer options also express SRFlow's released architecture (learned 1x1 convolutions, sigmoid
coupling, injector before coupling, transition steps, its split rule) and the L1 ladder of Sec. 3.1:
``flow_depth: 0`` is the one-layer flow ``z = (y - g(x)) / b(x)`` whose Laplace NLL is L1 (``b = 1``)
or eq. (4) (``predict_scale: true``).
"""
import math
import os

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn as nn
from torch.nn import functional as F

from adflow_plugin.archs.flow_layers import (AffineScale, Condition, FlowStep, LatentPrior, Split, amp_dtype,
                                             squeeze2d, unsqueeze2d)
from adflow_plugin.archs.rrdb_embed_arch import RRDBEmbedNet, load_basicsr_rrdb, upsample_factors

DEFAULT_LEVELS = {4: 3, 6: 4, 8: 4}


class FlowLevel(nn.Module):
    """One level: squeeze -> transition steps -> K flow steps -> optional split."""

    def __init__(self, num_channels, cond_channels, depth, num_transition, step_kwargs, transition_rotation, split,
                 split_cond, generator):
        super().__init__()
        c = num_channels * 4
        self.transitions = nn.ModuleList([
            FlowStep(c, cond_channels, rotation=transition_rotation, coupling=False, injector=False,
                     generator=generator) for _ in range(num_transition)
        ])
        self.steps = nn.ModuleList(
            [FlowStep(c, cond_channels, generator=generator, **step_kwargs) for _ in range(depth)])
        self.split = Split(c, cond_channels if split_cond else 0) if split else None
        self.out_channels = self.split.num_pass if split else c

    def layers(self):
        return list(self.transitions) + list(self.steps)


class LRCondition:
    """Everything the flow needs from one LR batch: per-level embedding features (with their memo), and
    the padding applied to the LR. Compute it once with :meth:`AdFlowNet.condition` and pass it to
    :meth:`AdFlowNet.encode` / :meth:`AdFlowNet.decode` to reuse it across samples."""

    def __init__(self, levels, lr_size, pad, image=None, dtype=torch.float32):
        self.levels = levels  # list[Condition], level 1 first
        self.lr_size = lr_size  # (h, w) before padding
        self.pad = pad  # (bottom, right) padding added to the LR
        self.image = image  # flow_depth 0: (g(x), log b(x)) at HR resolution
        self.dtype = dtype  # of the flow's activations (the LR's; the features may be bfloat16 under amp)


@ARCH_REGISTRY.register()
class AdFlowNet(nn.Module):
    """Conditional flow super-resolution network (AdFlow, BaseFlow, SRFlow layouts).

    Args:
        scale (int): Upscaling factor (4, 6, 8).
        num_in_ch (int): Image channels. Default: 3.
        num_feat, num_block, num_grow_ch: RRDB embedding width, blocks, growth. Default: 64, 23, 32.
        embed_blocks (list[int]): RRDB blocks (0-based) concatenated into the embedding. Default: [1, 4, 6, 8].
        cond_upsample (str): Conditioning above LR resolution: 'learned' uses the RRDB's own upsampling
            convolutions (SRFlow's fea_up2/fea_up4), 'interpolate' resizes the trunk output. Default: 'learned'.
        cond_upsample_act (bool): With 'learned', condition on the upsampling stages' LeakyReLU outputs rather
            than their convolution outputs (SRFlow: its in-place LeakyReLU overwrites fea_up2/fea_up4 before the
            flow reads them). Default: False.
        trunk_residual (str): 'conv_first' (ESRGAN, BasicSR) or 'body' (SRFlow's RRDBNet adds trunk_conv to the
            last block's output); see :class:`RRDBEmbedNet`. Default: 'conv_first'.
        cond_resize (str): Interpolation mode for resizing the block concatenation to each level
            ('nearest' as SRFlow, or 'bilinear'). Default: 'nearest'.
        num_levels (int): Flow levels L. Default: 3 at 4x, 4 at 6x and 8x (paper Sec. 3.4).
        flow_depth (int | list[int]): Flow steps K per level (0: the one-layer L1 flow). Default: 4.
        num_transition (int): Unconditional ActNorm + 1x1 steps after each squeeze (SRFlow: 2). Default: 2.
        hidden_channels (int): Width of the coupling, injector nets. Default: 64.
        rotation (str): 'random' (fixed orthonormal, AdFlow) or 'learned' (invertible 1x1, Glow/SRFlow).
        transition_rotation (str | None): Rotation of the transition steps. Default: same as ``rotation``.
        coupling (bool): Conditional affine couplings (Table 3 row 1 turns them off). Default: True.
        injector (bool): Affine image injectors. Default: True.
        injector_first (bool): Injector before coupling in each step (SRFlow's order). Default: False.
        coupling_scale (str): 'inv_sigmoid' (AdFlow, s = 1/sigmoid) or 'sigmoid' (SRFlow). Default: 'inv_sigmoid'.
        scale_offset (float): Offset added to the raw scale before the sigmoid (SRFlow: 2). Default: 2.0.
        affine_eps (float): Added to the sigmoid (SRFlow: 1e-4). Default: 1e-4.
        net_actnorm (bool): ActNorm in the hidden layers of the nets (SRFlow). Default: True.
        num_splits (int | None): Levels (from the first) that factor out half their channels. Default:
            L - 1 (every level but the last); SRFlow's released models use L - 2.
        split_cond (bool): Split priors also read the embedding. Default: False.
        prior (str): Latent prior, 'gaussian' or 'laplace'. Default: 'gaussian'.
        predict_scale (bool): flow_depth 0 only: predict b(x) (eq. 4) instead of b = 1 (L1). Default: False.
        rotation_seed (int | None): Seed of the random rotations and 1x1 initialisations; None draws from
            torch's global generator (seeded by BasicSR's manual_seed). Default: None.
        pretrained_embed (str | None): A BasicSR RRDBNet checkpoint (net_g_*.pth) to initialise the
            embedding from. Default: None.
    """

    def __init__(self, scale=4, num_in_ch=3, num_feat=64, num_block=23, num_grow_ch=32, embed_blocks=(1, 4, 6, 8),
                 cond_upsample='learned', cond_resize='nearest', num_levels=None, flow_depth=4, num_transition=2,
                 hidden_channels=64, rotation='random', transition_rotation=None, coupling=True, injector=True,
                 injector_first=False, coupling_scale='inv_sigmoid', scale_offset=2.0, affine_eps=1e-4,
                 net_actnorm=True, num_splits=None, split_cond=False, prior='gaussian', predict_scale=False,
                 rotation_seed=None, pretrained_embed=None, cond_upsample_act=False, trunk_residual='conv_first'):
        super().__init__()
        self.scale = int(scale)
        self.num_in_ch = num_in_ch
        self.prior = LatentPrior(prior)
        if cond_upsample not in ('learned', 'interpolate'):
            raise ValueError(f"cond_upsample must be 'learned' or 'interpolate', got {cond_upsample!r}")
        self.cond_upsample, self.cond_resize = cond_upsample, cond_resize
        self.cond_upsample_act = bool(cond_upsample_act)
        generator = None
        if rotation_seed is not None:
            generator = torch.Generator().manual_seed(int(rotation_seed))

        depths = flow_depth if isinstance(flow_depth, (list, tuple)) else None
        self.image_space = depths is None and int(flow_depth) == 0
        if self.image_space:  # the L1 ladder's one-layer flow: an RRDBNet predicting g(x) [and b(x)]
            self.num_levels = 0
            self.predict_scale = bool(predict_scale)
            self.embed = RRDBEmbedNet(num_in_ch, num_feat, num_block, num_grow_ch, embed_blocks=(),
                                      upsample=upsample_factors(self.scale),
                                      num_out_ch=num_in_ch * (2 if predict_scale else 1),
                                      trunk_residual=trunk_residual)
            self.levels = nn.ModuleList()
        else:
            if predict_scale:
                raise ValueError('predict_scale applies to flow_depth: 0 only (eq. 4); deeper flows learn scales')
            self.num_levels = int(num_levels or DEFAULT_LEVELS.get(self.scale, 3 if self.scale <= 4 else 4))
            depths = [int(d) for d in depths] if depths else [int(flow_depth)] * self.num_levels
            if len(depths) != self.num_levels or min(depths) < 1:
                raise ValueError(
                    f'flow_depth must be an int or a list of {self.num_levels} positive ints, got {depths}')
            ratios = [self.scale / 2**level for level in range(1, self.num_levels + 1)]
            factors = upsample_factors(self.scale) if cond_upsample == 'learned' else ()
            num_up = 0
            while num_up < len(factors) and math.prod(factors[:num_up]) < max(ratios):
                num_up += 1
            self.embed = RRDBEmbedNet(num_in_ch, num_feat, num_block, num_grow_ch, embed_blocks,
                                      upsample=factors[:num_up], trunk_residual=trunk_residual)
            cond_channels = self.embed.out_channels
            num_splits = self.num_levels - 1 if num_splits is None else int(num_splits)
            if not 0 <= num_splits < self.num_levels:
                raise ValueError(f'num_splits must be in [0, {self.num_levels - 1}], got {num_splits}')
            step_kwargs = dict(
                hidden_channels=hidden_channels, rotation=rotation, coupling=coupling, injector=injector,
                injector_first=injector_first, scale=AffineScale(coupling_scale, scale_offset, affine_eps),
                net_actnorm=net_actnorm)
            levels, c = [], num_in_ch
            for i in range(self.num_levels):
                level = FlowLevel(c, cond_channels, depths[i], num_transition, step_kwargs, transition_rotation
                                  or rotation, i < num_splits, split_cond, generator)
                levels.append(level)
                c = level.out_channels
            self.levels = nn.ModuleList(levels)
            self.latent_channels = c
        if pretrained_embed:
            if not os.path.isfile(pretrained_embed):
                raise FileNotFoundError(
                    f'network_g.pretrained_embed: {pretrained_embed} does not exist. Train the RRDB first '
                    f'(options/train_RRDB_PSNR_x{self.scale}.yml) or set pretrained_embed: ~ to start E from scratch.')
            state = torch.load(pretrained_embed, map_location='cpu', weights_only=True)
            state = state.get('params_ema', state.get('params', state))
            load_basicsr_rrdb(self.embed, state)

    # ------------------------------------------------------------------ geometry
    @property
    def lr_multiple(self):
        """LR height and width must be multiples of this for the level layout (others are padded)."""
        n = 2**self.num_levels
        return n // math.gcd(self.scale, n)

    def _pad_amount(self, h, w):
        m = self.lr_multiple
        return (-h) % m, (-w) % m

    @staticmethod
    def _pad(x, pad):
        if pad == (0, 0):
            return x
        mode = 'reflect' if pad[0] < x.shape[2] and pad[1] < x.shape[3] else 'replicate'
        return F.pad(x, (0, pad[1], 0, pad[0]), mode=mode)

    # ------------------------------------------------------------------ conditioning
    def condition(self, lq, amp=None):
        """Embed the LR once: per-level features (and, for flow_depth 0, g(x) and log b(x)).

        Args:
            lq (Tensor): (B, C, h, w) LR images.
            amp (torch.dtype | str | None): Mixed precision ('bf16' or torch.bfloat16): the embedding, and
                the coupling, injector and split-prior networks of every pass that uses this condition,
                run under autocast; the flow's affine arithmetic, log-determinants and priors stay in the
                LR's dtype. None: full precision.
        """
        amp = amp_dtype(amp)
        h, w = lq.shape[2:]
        pad = self._pad_amount(h, w)
        lq = self._pad(lq, pad)
        if self.image_space:
            with torch.autocast(lq.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                out = self.embed.image(lq)
            out = out.to(lq.dtype)
            mean, logb = (out[:, :self.num_in_ch], out[:, self.num_in_ch:]) if self.predict_scale else (out, None)
            return LRCondition([], (h, w), pad, image=(mean, logb), dtype=lq.dtype)
        with torch.autocast(lq.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            return self._level_conditions(lq, (h, w), pad, amp)

    def _level_conditions(self, lq, lr_size, pad, amp):
        h, w = lr_size
        trunk, blocks = self.embed.trunk(lq)
        ups = self.embed.upsampled(trunk, len(self.embed.upsample), activated=self.cond_upsample_act)
        cum = [math.prod(self.embed.upsample[:i + 1]) for i in range(len(ups))]
        hp, wp = lq.shape[2:]
        levels = []
        for level in range(1, self.num_levels + 1):
            size = (hp * self.scale // 2**level, wp * self.scale // 2**level)
            ratio = self.scale / 2**level
            above = [i for i, c in enumerate(cum) if c >= ratio]
            if ratio == 1:
                base = trunk
            elif ratio > 1 and above:  # the RRDB's own upsampling feature (SRFlow); resized if not exact
                base = ups[above[0]]
                if cum[above[0]] != ratio:
                    base = F.interpolate(base, size=size, mode='bilinear', align_corners=False)
            else:
                base = F.interpolate(trunk, size=size, mode='bilinear', align_corners=False)
            feats = [base]
            if blocks is not None:
                feats.append(blocks if blocks.shape[2:] == size else F.interpolate(blocks, size=size,
                                                                                   mode=self.cond_resize))
            levels.append(Condition(torch.cat(feats, dim=1), amp))
        return LRCondition(levels, (h, w), pad, dtype=lq.dtype)

    # ------------------------------------------------------------------ flow
    def encode(self, gt, lq=None, cond=None):
        """HR -> latents.

        Args:
            gt (Tensor): (B, C, s*h, s*w) HR images in [0, 1] (dequantised by the caller when training).
            lq (Tensor): (B, C, h, w) LR images; or pass ``cond`` from :meth:`condition`.

        Returns:
            dict: ``latents`` (list of tensors: each split's factored-out half, then the top latent),
            ``logdet`` (B,) sum of the layers' log-determinants, ``logp`` (B,) log-density of all latents
            under the prior, ``shape`` the (padded) HR shape whose dimensions the NLL is normalised by.
        """
        cond = cond if cond is not None else self.condition(lq)
        h, w = cond.lr_size
        if gt.shape[2:] != (h * self.scale, w * self.scale):
            raise ValueError(f'HR size {tuple(gt.shape[2:])} is not {self.scale}x the LR size {(h, w)}')
        x = self._pad(gt, (cond.pad[0] * self.scale, cond.pad[1] * self.scale))
        shape = tuple(x.shape)
        if self.image_space:
            mean, logb = cond.image
            z = x - mean
            logdet = x.new_zeros(x.shape[0])
            if logb is not None:
                z = z * torch.exp(-logb)
                logdet = -logb.flatten(1).sum(1)
            return dict(latents=[z], logdet=logdet, logp=self.prior.log_prob(z), shape=shape)
        logdet = x.new_zeros(x.shape[0])
        logp = x.new_zeros(x.shape[0])
        latents = []
        for level, lc in zip(self.levels, cond.levels):
            x = squeeze2d(x)
            for layer in level.layers():
                x, ld = layer(x, lc)
                logdet = logdet + ld
            if level.split is not None:
                x, x2 = x[:, :level.split.num_pass], x[:, level.split.num_pass:]
                mean, logs = level.split.prior(x, lc)
                logp = logp + self.prior.log_prob(x2, mean, logs)
                latents.append(x2)
        latents.append(x)
        logp = logp + self.prior.log_prob(x)
        return dict(latents=latents, logdet=logdet, logp=logp, shape=shape)

    def latent_shapes(self, cond, batch):
        """Shapes of the latents that :meth:`encode` returns for this condition."""
        hp, wp = cond.lr_size[0] + cond.pad[0], cond.lr_size[1] + cond.pad[1]
        if self.image_space:
            return [(batch, self.num_in_ch, hp * self.scale, wp * self.scale)]
        shapes, c = [], self.num_in_ch
        for i, level in enumerate(self.levels, start=1):
            c *= 4
            size = (hp * self.scale // 2**i, wp * self.scale // 2**i)
            if level.split is not None:
                shapes.append((batch, level.split.num_consume) + size)
                c = level.split.num_pass
        shapes.append((batch, c) + size)
        return shapes

    def decode(self, lq=None, temperature=1.0, latents=None, generator=None, seed=None, cond=None):
        """Latents -> SR; samples every latent not given at ``temperature``.

        Args:
            lq (Tensor): (B, C, h, w) LR images; or pass ``cond`` from :meth:`condition`.
            temperature (float): Standard deviation factor of the sampled latents (0: the mode of each).
            latents (list[Tensor] | None): Latents as :meth:`encode` returns them (exact inverse).
            generator (torch.Generator | None): Random generator for the sampled latents.
            seed (int | None): Seed for a fresh generator (same seed, same sample).
            cond (LRCondition | None): Reuse the embedding across samples.

        Returns:
            Tensor: (B, C, s*h, s*w) super-resolved images.
        """
        cond = cond if cond is not None else self.condition(lq)
        ref = cond.image[0] if self.image_space else cond.levels[0].features
        batch = ref.shape[0]
        if generator is None and seed is not None:
            generator = torch.Generator(device=ref.device).manual_seed(int(seed))
        shapes = self.latent_shapes(cond, batch)
        if latents is not None and len(latents) != len(shapes):
            raise ValueError(f'expected {len(shapes)} latents (splits then top), got {len(latents)}')

        def draw(i):
            if latents is not None:
                return latents[i]
            return self.prior.sample_eps(shapes[i], temperature, generator, ref.device, cond.dtype)

        if self.image_space:
            mean, logb = cond.image
            z = draw(0)
            x = mean + (z if logb is None else z * torch.exp(logb))
        else:
            idx = len(shapes) - 1
            x = draw(idx)
            for level, lc in zip(reversed(self.levels), reversed(cond.levels)):
                if level.split is not None:
                    idx -= 1
                    mean, logs = level.split.prior(x, lc)
                    x2 = latents[idx] if latents is not None else mean + torch.exp(logs) * draw(idx)
                    x = torch.cat([x, x2], dim=1)
                for layer in reversed(level.layers()):
                    x, _ = layer(x, lc, reverse=True)
                x = unsqueeze2d(x)
        h, w = cond.lr_size
        return x[:, :, :h * self.scale, :w * self.scale]

    def forward(self, lq, gt=None, sample=False, temperature=1.0, generator=None, seed=None, amp=None):
        """What one training or test step needs, in one call (DistributedDataParallel sees one forward).

        Returns a dict with the :meth:`encode` outputs when ``gt`` is given, and ``sr`` (a sample at
        ``temperature``) when ``sample`` is set or no ``gt`` is given. The embedding and the injectors'
        parameters are computed once and shared by both directions. ``amp``: see :meth:`condition`.
        """
        cond = self.condition(lq, amp)
        out = {}
        if gt is not None:
            out.update(self.encode(gt, cond=cond))
        if sample or gt is None:
            out['sr'] = self.decode(temperature=temperature, generator=generator, seed=seed, cond=cond)
        return out
