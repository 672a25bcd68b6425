"""Numerical checks of invertibility and log-determinants (used by the tests and ``basicsr flowcheck``).

The log-determinant of a layer (or of the whole network) is compared with ``log|det J|`` of the
Jacobian computed by autograd on a tiny input, in float64.
"""
import torch

from adflow_plugin.archs.flow_layers import Condition


def _flat(t):
    return t.reshape(t.shape[0], -1)


def jacobian_logabsdet(fn, x):
    """log|det d fn(x) / dx| for a map of one sample (batch 1) whose output has as many entries as x."""
    if x.shape[0] != 1:
        raise ValueError('jacobian_logabsdet expects a batch of one')
    shape = x.shape

    def flat_fn(v):
        return fn(v.reshape(shape)).reshape(-1)

    jac = torch.autograd.functional.jacobian(flat_fn, x.reshape(-1), vectorize=True)
    if jac.shape[0] != jac.shape[1]:
        raise ValueError(f'map is not dimension preserving: Jacobian {tuple(jac.shape)}')
    sign, logabsdet = torch.linalg.slogdet(jac)
    return logabsdet


def check_layer(layer, x, cond=None):
    """Round trip and log-det of one invertible layer ``y, ld = layer(x, cond, reverse)``.

    Returns:
        dict: ``roundtrip_max_abs_err`` (max |decode(encode(x)) - x|), ``logdet`` (the layer's, sample 0),
        ``logdet_jacobian`` (autograd's, sample 0), ``logdet_abs_err``, ``logdet_rel_err``,
        ``logdet_inverse_err`` (|encode logdet + decode logdet|).
    """
    with torch.no_grad():
        y, ld = layer(x, cond, reverse=False)
        x_rec, ld_inv = layer(y, cond, reverse=True)
    c0 = cond[:1] if torch.is_tensor(cond) else cond
    ref = jacobian_logabsdet(lambda v: layer(v, c0, reverse=False)[0], x[:1])
    return _report((x_rec - x).abs().max().item(), ld[0].item(), ref.item(), (ld + ld_inv).abs().max().item())


def _report(roundtrip, logdet, ref, inverse_err):
    abs_err = abs(logdet - ref)
    return dict(roundtrip_max_abs_err=roundtrip, logdet=logdet, logdet_jacobian=ref, logdet_abs_err=abs_err,
                logdet_rel_err=abs_err / max(abs(ref), 1.0), logdet_inverse_err=inverse_err)


def check_network(net, lq, gt, amp=None):
    """The whole flow: y -> all latents, against the sum of the layers' log-dets (batch of one).

    The Jacobian is over the HR pixels with the LR fixed; the condition is computed once (with ``amp``,
    see ``AdFlowNet.condition``).
    """
    cond = net.condition(lq, amp=amp)
    with torch.no_grad():
        enc = net.encode(gt, cond=cond)
        rec = net.decode(latents=enc['latents'], cond=cond)

    def fn(y):
        out = net.encode(y, cond=cond)
        return torch.cat([_flat(z) for z in out['latents']], dim=1)

    ref = jacobian_logabsdet(fn, gt)
    return _report((rec - gt).abs().max().item(), enc['logdet'][0].item(), ref.item(), 0.0)


def check_levels(net, lq, size=2, generator=None, amp=None):
    """Each flow level (its transition and flow steps) on a ``size`` x ``size`` input with the network's
    own conditioning for ``lq`` cropped to that window; for networks too large for :func:`check_network`.

    Returns:
        list[dict]: one :func:`check_layer`-style report per level.
    """
    cond = net.condition(lq, amp=amp)
    reports = []
    for level, lc in zip(net.levels, cond.levels):
        layers = level.layers()
        channels = layers[0].actnorm.bias.shape[1]
        window = lc.features[:1, :, :size, :size]
        x = torch.randn(1, channels, window.shape[2], window.shape[3], generator=generator, dtype=lq.dtype)
        # with amp the layers' networks read the window under autocast, as in the full flow
        feats = window if amp is None else Condition(window, amp)

        def run(v, reverse, layers=layers, feats=feats):
            total = v.new_zeros(v.shape[0])
            for layer in (reversed(layers) if reverse else layers):
                v, ld = layer(v, feats, reverse=reverse)
                total = total + ld
            return v, total

        reports.append(check_layer(lambda v, c, reverse=False: run(v, reverse), x))
    return reports
