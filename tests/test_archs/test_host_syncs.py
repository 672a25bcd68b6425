"""No host-device synchronisation in a training step or a sample of the flow.

On a GPU every tensor-to-Python conversion (``.item()``, ``bool(t)``, ``float(t)``, ``.tolist()``)
and every operation whose output shape depends on the data (``nonzero``, ``masked_select``,
``unique``) waits for the GPU to finish. On the CPU the same calls are made, so wrapping them in
counters while real torch runs the flow proves by construction that none happens.
"""
import contextlib

import torch

from adflow_plugin.archs.adflow_arch import AdFlowNet
from adflow_plugin.archs.flow_layers import ActNorm
from adflow_plugin.losses.flow_nll_loss import FlowNLLLoss
from tests.conftest import in_process_model, tiny_flow_options

TENSOR_READS = ('item', 'tolist', 'numpy', '__bool__', '__float__', '__int__', '__index__', '__complex__', 'nonzero',
                'masked_select', 'unique')
TORCH_READS = ('nonzero', 'masked_select', 'unique', 'unique_consecutive', 'argwhere', 'is_nonzero')


_PAUSED = []


@contextlib.contextmanager
def not_counted():
    """Reads inside are not counted (torch's Adam reads its step counters, which live on the CPU even when
    training on a GPU: no device sync)."""
    _PAUSED.append(True)
    try:
        yield
    finally:
        _PAUSED.pop()


@contextlib.contextmanager
def count_host_reads():
    """Counts (per name) calls of torch's tensor-to-host conversions and data-dependent-shape operations."""
    calls = {}
    saved = []

    def counting(owner, name):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            if _PAUSED:
                return original(*args, **kwargs)
            calls[name] = calls.get(name, 0) + 1
            return original(*args, **kwargs)

        saved.append((owner, name, original))
        setattr(owner, name, wrapper)

    for name in TENSOR_READS:
        if hasattr(torch.Tensor, name):
            counting(torch.Tensor, name)
    for name in TORCH_READS:
        if hasattr(torch, name):
            counting(torch, name)
    try:
        yield calls
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def test_counter_sees_conversions():
    """The instrument itself: each kind of host read is counted."""
    t = torch.ones(3)
    with count_host_reads() as calls:
        t.sum().item()
        bool(t[0])
        float(t[1])
        t.tolist()
        torch.nonzero(t)
        t.nonzero()
    assert calls == {'item': 1, '__bool__': 1, '__float__': 1, 'tolist': 1, 'nonzero': 2}, calls


def tiny_net(**kw):
    opt = dict(scale=4, num_feat=8, num_block=2, num_grow_ch=4, embed_blocks=[0], flow_depth=2, num_transition=1,
               hidden_channels=8, rotation_seed=0)
    opt.update(kw)
    return AdFlowNet(**opt)


def test_flow_training_step_and_sampling_read_nothing_on_the_host():
    torch.manual_seed(0)
    nll = FlowNLLLoss()
    lq, gt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    for kw in (dict(), dict(rotation='learned', coupling_scale='sigmoid', injector_first=True, split_cond=True)):
        net = tiny_net(**kw).train()
        net(lq, nll.dequantize(gt))  # first step: ActNorm's data-dependent initialisation (once per run)
        assert all(m.is_initialized for m in net.modules() if isinstance(m, ActNorm))
        with count_host_reads() as calls:
            out = net(lq, nll.dequantize(gt), sample=True, temperature=0.8)
            loss = nll(out['logp'], out['logdet'], out['shape']) + out['sr'].abs().mean()
            loss.backward()
            net.eval()
            with torch.no_grad():
                cond = net.condition(lq)
                for seed in range(2):
                    net.decode(cond=cond, temperature=0.8, seed=seed)
                enc = net.encode(gt, cond=cond)
                net.decode(cond=cond, latents=enc['latents'])
            net.train()
        assert calls == {}, f'{kw}: host reads in the flow: {calls}'


def test_ema_update_reads_nothing_on_the_host(demo_data, tmp_path):
    """AdFlowModel.model_ema (every training step) reads ActNorm's state from its Python mirror."""
    torch.manual_seed(0)
    model = in_process_model(tiny_flow_options(demo_data, 'ema_syncs', val=False, ema_decay=0.9), tmp_path)
    net, ema = model.net_g, model.net_g_ema
    net(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 32, 32))  # initialises net's ActNorms, not yet the EMA's
    with count_host_reads() as calls:
        model.model_ema(0.9)
    assert calls == {}, calls
    ema_norms = {n: m for n, m in ema.named_modules() if isinstance(m, ActNorm)}
    for name, m in net.named_modules():
        if isinstance(m, ActNorm):
            assert ema_norms[name].is_initialized and bool(ema_norms[name].initialized), name
            torch.testing.assert_close(ema_norms[name].bias, m.bias)  # copied whole at initialisation


def test_stage2_training_step_reads_the_host_only_to_decide_skips_and_log(demo_data, tmp_path):
    """A whole AdFlowModel step (NLL + GAN, discriminator, EMA): one host read per skip decision (sample and
    loss; generator gradients; discriminator gradients) and BasicSR's logging (one ``.item()`` per logged
    value in ``reduce_loss_dict``); nothing else, whatever the number of ActNorm layers. (Adam's own reads
    of its step counters are left out: torch keeps them on the CPU unless ``capturable``.)"""
    torch.manual_seed(0)
    model = in_process_model(tiny_flow_options(demo_data, 'step_syncs', stage=2, val=False), tmp_path)
    gt = torch.rand(2, 3, 32, 32)
    model.feed_data({'lq': torch.nn.functional.avg_pool2d(gt, 4), 'gt': gt})
    model.optimize_parameters(1)  # ActNorm initialisation
    with count_host_reads() as calls:
        model._step_snapshot()
    assert calls == {}, calls
    def uncounted(fn):
        def run(*args, **kwargs):
            with not_counted():
                return fn(*args, **kwargs)
        return run

    for optimizer in (model.optimizer_g, model.optimizer_d):  # Adam's step counters: CPU tensors, no sync
        optimizer.step = uncounted(optimizer.step)
    with count_host_reads() as calls:
        model.optimize_parameters(2)
    assert model.skipped_steps == 0
    # + 1 on a logging step (print_freq 1 here): the discriminator's health (whether it looks dead, its accuracy and
    # gap for the at-chance monitor), agreed by all processes, in one read
    assert calls == {'item': 3 + len(model.log_dict), 'tolist': 1}, (calls, list(model.log_dict))
