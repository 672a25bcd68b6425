"""Invertible layers of the conditional flow (paper Sec. 3.4).

One contract for every invertible layer (as in FrEIA / zuko)::

    y, logdet = layer(x, cond, reverse=False)   # encode direction, HR -> latent
    x, logdet = layer(y, cond, reverse=True)    # decode direction; logdet has the opposite sign

``logdet`` is ``log|det dy/dx|`` of the map applied in the direction called, shape ``(batch,)``.
The condition (the embedding features at the layer's resolution) is passed explicitly on every call;
layers whose parameters depend on the condition alone may memoise them in a :class:`Condition`'s
``cache`` so the encode and decode passes of one training step, or several samples of one LR image,
compute them once.

Parameter and buffer names follow SRFlow's where the layer has an SRFlow counterpart (``bias``/``logs``
of ActNorm, ``weight`` of the 1x1 convolution, ``logs`` of the zero-initialised convolution), which
keeps checkpoint conversion a renaming.
"""
import math

import torch
import torch.distributed as dist
from torch import nn as nn
from torch.nn import functional as F

LOG_2PI = math.log(2 * math.pi)
LOG_2 = math.log(2)


class Condition:
    """Embedding features for one flow level plus a memo for condition-only computations.

    Args:
        features (Tensor): (B, C_cond, h, w) features at the level's resolution.
        amp (torch.dtype | None): Run the coupling, injector and split-prior networks that read this
            condition under autocast to this dtype (bfloat16); their outputs return to float32 before
            the affine arithmetic. None: full precision.
    """

    def __init__(self, features, amp=None):
        self.features = features
        self.amp = amp
        self.cache = {}

    def memo(self, key, fn):
        if key not in self.cache:
            self.cache[key] = fn(self.features)
        return self.cache[key]


def cond_features(cond):
    return cond.features if isinstance(cond, Condition) else cond


AMP_DTYPES = {'bf16': torch.bfloat16, 'bfloat16': torch.bfloat16}


def amp_dtype(value, key='amp'):
    """The autocast dtype an ``amp`` option names: 'bf16' (or torch.bfloat16); None, false or 'none' for off."""
    if value is None or value is False or value == 'none' or value == 'fp32':
        return None
    if value in (torch.bfloat16, ):
        return value
    if isinstance(value, str) and value.lower() in AMP_DTYPES:
        return AMP_DTYPES[value.lower()]
    raise ValueError(f"{key} must be 'bf16' (bfloat16 mixed precision) or none, got {value!r}; float16 needs "
                     'loss scaling, which this training step does not do')


def run_net(net, inputs, cond, dtype):
    """``net(cat(inputs))`` in the condition's mixed precision (if any), returned in the flow's ``dtype``.

    Only the network runs under autocast: the affine arithmetic, log-determinants and priors that use
    its output stay in ``dtype`` (float32), so mixed precision changes what the networks predict, never
    the log-determinant given those predictions.
    """
    amp = cond.amp if isinstance(cond, Condition) else None
    if amp is None:
        return net(torch.cat(inputs, dim=1) if len(inputs) > 1 else inputs[0])
    with torch.autocast(inputs[0].device.type, dtype=amp):
        h = torch.cat([t.to(amp) for t in inputs], dim=1) if len(inputs) > 1 else inputs[0].to(amp)
        return net(h).to(dtype)


def _pixels(x):
    return x.shape[2] * x.shape[3]


def _dist_mean(t):
    """Mean of ``t`` across processes when torch.distributed is running (ActNorm init under DDP)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


# ActNorm's data-dependent initialisation: a channel whose standard deviation over the first batch is
# below this carries no usable scale estimate (a constant image region without dequantisation noise, or
# one value per channel: batch 1 at a 1x1 level). It keeps the unit scale (logs = 0) instead of
# 1 / std, which for std -> 0 (Glow's 1 / (std + 1e-6)) gave scales up to 1e6 per layer and, chained
# through the layers that then see the zeros it produced, |z| ~ 1e58 on the next batch. So the initial
# scale is at most 1 / ACTNORM_MIN_STD (the dequantisation noise alone has std (1/32)/sqrt(12) ~ 0.009).
ACTNORM_MIN_STD = 1e-3


class ActNorm(nn.Module):
    """Per-channel affine ``y = (x + bias) * exp(logs)`` with data-dependent initialisation (Glow).

    The first forward in training mode (encode direction) sets ``bias`` and ``logs`` so that the
    output of that batch has zero mean and unit variance per channel (channels whose standard deviation
    is below :data:`ACTNORM_MIN_STD` keep ``logs = 0``: the initial scale is bounded). Under
    torch.distributed the statistics are averaged over all processes, so every rank initialises
    identically (equal batch sizes give exactly the statistics of the combined batch).

    Whether this has happened is the buffer ``initialized``: it is saved in the state dict, survives
    checkpoint loads and is copied with the other buffers to the EMA network. Each forward reads a
    Python mirror of it instead (:attr:`is_initialized`), since reading a GPU buffer on the host
    waits for the GPU: the mirror is set with the buffer (:meth:`set_initialized`), re-read from it by
    ``load_state_dict`` and by :meth:`sync_initialized` (after a DDP broadcast wrote the buffer).

    Args:
        num_channels (int): Channels.
        scale (float): Target standard deviation after initialisation. Default: 1.
    """

    def __init__(self, num_channels, scale=1.0):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.register_buffer('initialized', torch.tensor(0, dtype=torch.uint8))
        self.is_initialized = False
        self.scale = float(scale)

    def set_initialized(self, value=True):
        """Set the state (buffer and its Python mirror)."""
        self.initialized.fill_(int(bool(value)))
        self.is_initialized = bool(value)

    def sync_initialized(self):
        """Re-read the Python mirror from the buffer (one host read; never inside a training step)."""
        self.is_initialized = bool(self.initialized)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.sync_initialized()

    @torch.no_grad()
    def initialize(self, x):
        if x.dtype in (torch.float16, torch.bfloat16):  # a hidden layer under autocast: statistics in float32
            x = x.float()
        mean = _dist_mean(x.mean(dim=(0, 2, 3), keepdim=True))
        var = _dist_mean(((x - mean)**2).mean(dim=(0, 2, 3), keepdim=True))
        std = torch.sqrt(var)
        logs = torch.where(std >= ACTNORM_MIN_STD, torch.log(self.scale / (std + 1e-6)), torch.zeros_like(std))
        self.bias.data.copy_(-mean)
        self.logs.data.copy_(logs)
        self.set_initialized()

    def forward(self, x, cond=None, reverse=False):
        if not reverse and self.training and not self.is_initialized:
            self.initialize(x)
        logdet = self.logs.sum() * _pixels(x) * x.new_ones(x.shape[0], dtype=self.logs.dtype)
        # inside a coupling net under autocast x is bfloat16: the hidden layer stays in x's precision
        bias = self.bias.to(x.dtype)
        if not reverse:
            return (x + bias) * torch.exp(self.logs).to(x.dtype), logdet
        return x * torch.exp(-self.logs).to(x.dtype) - bias, -logdet


def sync_actnorm_flags(net):
    """:meth:`ActNorm.sync_initialized` for every ActNorm in ``net`` (after its buffers were overwritten)."""
    for m in net.modules():
        if isinstance(m, ActNorm):
            m.sync_initialized()


def random_orthonormal(num_channels, generator=None):
    """A random orthonormal matrix (QR of a Gaussian matrix, signs fixed so it is Haar-distributed)."""
    a = torch.randn(num_channels, num_channels, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    return q.float()


class RandomRotation(nn.Module):
    """Fixed random orthonormal 1x1 channel mixing (AdFlow): log-det 0, inverse = transpose.

    The matrix is sampled once at construction and kept as the buffer ``weight`` (saved in the
    state dict, broadcast by DDP, copied to the EMA network); it is never trained.
    """

    def __init__(self, num_channels, generator=None):
        super().__init__()
        self.register_buffer('weight', random_orthonormal(num_channels, generator))

    def forward(self, x, cond=None, reverse=False):
        w = self.weight.t() if reverse else self.weight
        y = F.conv2d(x, w.to(x.dtype).unsqueeze(-1).unsqueeze(-1))
        return y, x.new_zeros(x.shape[0])


class InvertibleConv1x1(nn.Module):
    """Learned invertible 1x1 convolution (Glow, SRFlow), initialised to a random rotation.

    log-det = ``log|det W| * H * W``; the inverse is computed in float64 for accuracy.
    """

    def __init__(self, num_channels, generator=None):
        super().__init__()
        self.weight = nn.Parameter(random_orthonormal(num_channels, generator))

    def forward(self, x, cond=None, reverse=False):
        logdet = torch.linalg.slogdet(self.weight)[1] * _pixels(x) * x.new_ones(x.shape[0])
        if not reverse:
            w = self.weight
        else:
            w = torch.linalg.inv_ex(self.weight.double())[0].to(x.dtype)  # inv_ex: no error check, no host sync
            logdet = -logdet
        return F.conv2d(x, w.unsqueeze(-1).unsqueeze(-1)), logdet


class ConvActNorm(nn.Conv2d):
    """Convolution without bias followed by ActNorm (SRFlow's hidden layers of the coupling nets)."""

    def __init__(self, in_channels, out_channels, kernel_size=3):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        nn.init.normal_(self.weight, mean=0.0, std=0.05)
        self.actnorm = ActNorm(out_channels)

    def forward(self, x):
        return self.actnorm(super().forward(x))[0]


class ZeroConv2d(nn.Conv2d):
    """Zero-initialised 3x3 convolution with a learned output scale ``exp(logs * logscale_factor)``.

    Starting from zero makes every coupling and injector the identity (up to the scale offset) at
    initialisation (Glow, SRFlow).
    """

    def __init__(self, in_channels, out_channels, logscale_factor=3.0):
        super().__init__(in_channels, out_channels, 3, padding=1)
        self.logscale_factor = logscale_factor
        self.logs = nn.Parameter(torch.zeros(out_channels, 1, 1))
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x):
        return super().forward(x) * torch.exp(self.logs * self.logscale_factor)


def coupling_net(in_channels, out_channels, hidden_channels, net_actnorm=True):
    """3-layer conv net: 3x3 -> ReLU -> 1x1 -> ReLU -> zero-initialised 3x3 (SRFlow's ``F``)."""
    if net_actnorm:
        first, second = ConvActNorm(in_channels, hidden_channels, 3), ConvActNorm(hidden_channels, hidden_channels, 1)
    else:
        first = nn.Conv2d(in_channels, hidden_channels, 3, padding=1)
        second = nn.Conv2d(hidden_channels, hidden_channels, 1)
    return nn.Sequential(first, nn.ReLU(inplace=False), second, nn.ReLU(inplace=False), ZeroConv2d(hidden_channels,
                                                                                                      out_channels))


class AffineScale:
    """How a raw network output ``s~`` becomes the encode multiplier ``s`` (and its log).

    * ``inv_sigmoid`` (AdFlow, Sec. 3.4): ``s = 1 / (sigmoid(s~ + offset) + eps)``. Decoding multiplies
      by ``sigmoid(.) + eps``, which lies in (eps, 1 + eps): the decode direction cannot explode.
    * ``sigmoid`` (SRFlow): ``s = sigmoid(s~ + offset) + eps``. Decoding divides by a number that can
      approach ``eps``: the known source of NaNs and black squares when sampling. Kept for the
      ablation (Table 3, "Coupl. Mult.") and for SRFlow checkpoints.
    """

    FORMS = ('inv_sigmoid', 'sigmoid')

    def __init__(self, form='inv_sigmoid', offset=2.0, eps=1e-4):
        if form not in self.FORMS:
            raise ValueError(f'coupling_scale must be one of {self.FORMS}, got {form!r}')
        self.form, self.offset, self.eps = form, float(offset), float(eps)

    def apply(self, x, shift, raw, reverse):
        """Encode ``(x + shift) * s``; decode ``x / s - shift``. Returns (y, per-sample logdet)."""
        g = torch.sigmoid(raw + self.offset) + self.eps
        logdet = torch.log(g).flatten(1).sum(1)
        if self.form == 'inv_sigmoid':  # s = 1 / g
            if not reverse:
                return (x + shift) / g, -logdet
            return x * g - shift, logdet
        if not reverse:  # s = g
            return (x + shift) * g, logdet
        return x / g - shift, -logdet


def split_cross(h):
    """SRFlow's 'cross' split of a net output into (shift, raw scale): even and odd channels."""
    return h[:, 0::2], h[:, 1::2]


class CondAffineCoupling(nn.Module):
    """Conditional affine coupling (RealNVP, SRFlow): the first half of the channels and the embedding
    predict shift and scale of the second half.

    Args:
        num_channels (int): Channels of the flow activation.
        cond_channels (int): Channels of the embedding at this level.
        hidden_channels (int): Width of the 3-layer conv net.
        scale (AffineScale): Multiplier form.
        net_actnorm (bool): ActNorm after the hidden convolutions (SRFlow) instead of biases.
    """

    def __init__(self, num_channels, cond_channels, hidden_channels=64, scale=None, net_actnorm=True):
        super().__init__()
        self.channels_nn = num_channels // 2
        self.channels_co = num_channels - self.channels_nn
        self.scale = scale or AffineScale()
        self.net = coupling_net(self.channels_nn + cond_channels, 2 * self.channels_co, hidden_channels, net_actnorm)

    def _first_layer_condition_part(self, features):
        first = self.net[0]
        return F.conv2d(features, first.weight[:, self.channels_nn:], None, first.stride, first.padding)

    def forward(self, x, cond, reverse=False):
        x1, x2 = x[:, :self.channels_nn], x[:, self.channels_nn:]
        # The first convolution over cat(x1, E) is split into its x1 and E parts. The E part, most of
        # the network's work (320 of its input channels), depends on the condition alone: it is computed
        # once per Condition (shared by encode and decode, and by every sample) and is what runs in
        # mixed precision. The x1 part and the rest of the net stay in the flow's precision, since
        # decoding recomputes x1 only up to float32 rounding and bfloat16 would round such nearly equal
        # inputs apart (round trip 1.6e-4 instead of 4e-7 on a small trained flow).
        if isinstance(cond, Condition):
            h_cond = cond.memo((id(self), 'coupling'), lambda f: run_net(self._first_layer_condition_part, [f], cond,
                                                                         x.dtype))
        else:
            h_cond = self._first_layer_condition_part(cond)
        first = self.net[0]
        h = F.conv2d(x1, first.weight[:, :self.channels_nn], first.bias, first.stride, first.padding) + h_cond
        if isinstance(first, ConvActNorm):
            h = first.actnorm(h)[0]
        shift, raw = split_cross(self.net[1:](h))
        y2, logdet = self.scale.apply(x2, shift, raw, reverse)
        return torch.cat([x1, y2], dim=1), logdet


class AffineInjector(nn.Module):
    """Affine image injector (SRFlow): shift and scale of all channels predicted from the embedding alone.

    Its parameters do not depend on the flow activation, so within one :class:`Condition` they are
    computed once and reused (encode and decode of a training step, or every sample of an image).
    """

    def __init__(self, num_channels, cond_channels, hidden_channels=64, scale=None, net_actnorm=True):
        super().__init__()
        self.scale = scale or AffineScale()
        self.net = coupling_net(cond_channels, 2 * num_channels, hidden_channels, net_actnorm)

    def forward(self, x, cond, reverse=False):
        if isinstance(cond, Condition):
            shift, raw = cond.memo(id(self), lambda f: split_cross(run_net(self.net, [f], cond, x.dtype)))
        else:
            shift, raw = split_cross(run_net(self.net, [cond], cond, x.dtype))
        return self.scale.apply(x, shift, raw, reverse)


def squeeze2d(x, factor=2):
    """Space-to-depth; output channel ``c * factor**2 + dy * factor + dx`` (Glow/SRFlow order)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // factor, factor, w // factor, factor).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * factor * factor, h // factor, w // factor)


def unsqueeze2d(x, factor=2):
    b, c, h, w = x.shape
    x = x.view(b, c // factor**2, factor, factor, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // factor**2, h * factor, w * factor)


class Squeeze(nn.Module):
    """2x2 space-to-depth; volume preserving (log-det 0)."""

    def forward(self, x, cond=None, reverse=False):
        y = unsqueeze2d(x) if reverse else squeeze2d(x)
        return y, x.new_zeros(x.shape[0])


class FlowStep(nn.Module):
    """One flow step: ActNorm -> 1x1 channel mixing -> conditional affine coupling -> affine injector.

    Args:
        num_channels (int): Channels of the activation.
        cond_channels (int): Channels of the embedding.
        hidden_channels (int): Width of the coupling/injector nets.
        rotation (str): 'random' (fixed orthonormal, AdFlow) or 'learned' (invertible 1x1 conv, Glow).
        coupling (bool): Use the conditional affine coupling (Table 3, row 1 drops it).
        injector (bool): Use the affine image injector.
        injector_first (bool): Injector before coupling (SRFlow's order) instead of after (the paper's).
        scale (AffineScale): Multiplier form of coupling and injector.
        net_actnorm (bool): ActNorm in the hidden layers of the nets (SRFlow).
        generator (torch.Generator): For the random rotation / 1x1 initialisation.
    """

    def __init__(self, num_channels, cond_channels, hidden_channels=64, rotation='random', coupling=True,
                 injector=True, injector_first=False, scale=None, net_actnorm=True, generator=None):
        super().__init__()
        self.actnorm = ActNorm(num_channels)
        self.rotation = make_rotation(rotation, num_channels, generator)
        self.coupling = CondAffineCoupling(num_channels, cond_channels, hidden_channels, scale,
                                           net_actnorm) if coupling else None
        self.injector = AffineInjector(num_channels, cond_channels, hidden_channels, scale,
                                       net_actnorm) if injector else None
        conditional = ['coupling', 'injector']
        if injector_first:
            conditional.reverse()
        # the order by attribute names, not module references: a list of modules outside the registered
        # children would keep pointing at the original layers in copies made by nn.parallel.replicate
        self.order = tuple(['actnorm', 'rotation'] + [n for n in conditional if getattr(self, n) is not None])

    def forward(self, x, cond=None, reverse=False):
        logdet = x.new_zeros(x.shape[0])
        for name in (reversed(self.order) if reverse else self.order):
            x, ld = getattr(self, name)(x, cond, reverse=reverse)
            logdet = logdet + ld
        return x, logdet


def make_rotation(kind, num_channels, generator=None):
    if kind == 'random':
        return RandomRotation(num_channels, generator)
    if kind == 'learned':
        return InvertibleConv1x1(num_channels, generator)
    raise ValueError(f"rotation must be 'random' (fixed orthonormal) or 'learned' (invertible 1x1 conv), got {kind!r}")


class LatentPrior:
    """Log-density and sampling of a factorised Gaussian or Laplace prior with mean and log-scale."""

    KINDS = ('gaussian', 'laplace')

    def __init__(self, kind='gaussian'):
        if kind not in self.KINDS:
            raise ValueError(f'prior must be one of {self.KINDS}, got {kind!r}')
        self.kind = kind

    def log_prob(self, z, mean=None, logs=None):
        """Per-sample log-density, shape (B,)."""
        if mean is not None:
            z = (z - mean) * torch.exp(-logs)
        if self.kind == 'gaussian':
            lp = -0.5 * (z**2 + LOG_2PI)
        else:
            lp = -(z.abs() + LOG_2)
        lp = lp.flatten(1).sum(1)
        if logs is not None:
            lp = lp - logs.expand_as(z).flatten(1).sum(1)
        return lp

    def sample_eps(self, shape, temperature, generator=None, device=None, dtype=torch.float32):
        """Standard noise scaled by the temperature (standard deviation ``temperature`` for Gaussian)."""
        if temperature == 0:
            return torch.zeros(shape, device=device, dtype=dtype)
        if self.kind == 'gaussian':
            eps = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        else:  # inverse CDF of the standard Laplace
            u = torch.rand(shape, generator=generator, device=device, dtype=dtype) - 0.5
            eps = -torch.sign(u) * torch.log1p(-2 * u.abs())
        return eps * temperature


class Split(nn.Module):
    """Factor out half of the channels as a latent whose prior (mean, log-scale) is predicted from the
    kept half (and, optionally, the embedding) by a zero-initialised convolution.

    Encode: ``x -> x1`` and emits ``x2`` as a latent; the map is a projection, so its log-det is 0
    and the latent's likelihood enters the NLL through the prior. Decode: ``x1 -> cat(x1, x2)`` with
    ``x2`` given or sampled at a temperature.
    """

    def __init__(self, num_channels, cond_channels=0, logscale_factor=3.0):
        super().__init__()
        self.num_consume = num_channels // 2
        self.num_pass = num_channels - self.num_consume
        self.cond_channels = cond_channels
        self.conv = ZeroConv2d(self.num_pass + cond_channels, 2 * self.num_consume, logscale_factor)

    def prior(self, x1, cond):
        inputs = [x1] if not self.cond_channels else [x1, cond_features(cond)]
        return split_cross(run_net(self.conv, inputs, cond, x1.dtype))
