"""Copies of the networks made as ``nn.parallel.replicate`` makes them call their own layers only.

Every submodule must live in a registered container: a module kept in a plain list, dict or attribute
is shared by the replicas (they copy ``__dict__``), so a replica would call the original's layers.
"""
import pytest
import torch
from torch import nn as nn

from adflow_plugin.archs.adflow_arch import AdFlowNet
from adflow_plugin.archs.discriminator_arch import VGGStyleDiscriminatorAnySize
from adflow_plugin.archs.rrdb_embed_arch import MultiScaleRRDBNet, RRDBEmbedNet

TINY = dict(num_feat=8, num_block=2, num_grow_ch=4, embed_blocks=[0, 1], flow_depth=2, hidden_channels=8)
LAYOUTS = {
    'adflow': {},
    'srflow': dict(rotation='learned', coupling_scale='sigmoid', injector_first=True, split_cond=True),
    'no_coupling': dict(coupling=False),
    'l1': dict(flow_depth=0, predict_scale=True),
}


def replicate_on_cpu(net):
    """One replica as ``torch.nn.parallel.replicate`` builds it (``_replicate_for_data_parallel`` per module,
    children, parameters and buffers set on the copies), with clones standing in for its CUDA broadcast,
    which refuses CPU devices."""
    modules = list(net.modules())
    copies = {id(m): m._replicate_for_data_parallel() for m in modules}
    for m in modules:
        replica = copies[id(m)]
        for key, child in m._modules.items():
            setattr(replica, key, None if child is None else copies[id(child)])
        for key, p in m._parameters.items():
            setattr(replica, key, None if p is None else p.detach().clone().requires_grad_(p.requires_grad))
        for key, b in m._buffers.items():
            setattr(replica, key, None if b is None else b.clone())
    return copies[id(net)]


def modules_reached(net, run):
    """ids of the modules whose forward runs during ``run()`` (hooks on ``net``'s modules, which the
    replicas share through their copied ``__dict__``, so a hook reports whichever module it fires on)."""
    reached = set()
    handles = [m.register_forward_hook(lambda mod, inp, out: reached.add(id(mod))) for m in net.modules()]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return reached


def held_outside_containers(net):
    """(module, attribute) pairs where a module or tensor is held outside _modules/_parameters/_buffers."""
    found = []

    def holds(v, depth=0):
        if isinstance(v, (nn.Module, torch.Tensor)):
            return True
        if depth < 3 and isinstance(v, (list, tuple, set)):
            return any(holds(x, depth + 1) for x in v)
        if depth < 3 and isinstance(v, dict):
            return any(holds(x, depth + 1) for x in v.values())
        if depth < 3 and hasattr(v, '__dict__') and not isinstance(v, type):
            return any(holds(x, depth + 1) for x in vars(v).values())
        return False

    for name, m in net.named_modules():
        for key, v in vars(m).items():
            if key.startswith('_') and key in ('_modules', '_parameters', '_buffers', '_non_persistent_buffers_set'):
                continue
            if key.startswith('_') and 'hook' in key:
                continue
            if holds(v):
                found.append((name or type(m).__name__, key))
    return found


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_replicas_call_their_own_layers(layout):
    torch.manual_seed(0)
    net = AdFlowNet(scale=4, **dict(TINY, **LAYOUTS[layout]))
    assert held_outside_containers(net) == []
    lr = torch.rand(2, 3, 8, 8)
    hr = torch.rand(2, 3, 32, 32)
    replicas = [replicate_on_cpu(net) for _ in range(2)]
    original = {id(m) for m in net.modules()}
    for i, replica in enumerate(replicas):
        own = {id(m) for m in replica.modules()}
        assert not own & original
        out = {}
        reached = modules_reached(net, lambda: out.update(replica(lr, hr, sample=True, temperature=0.8)))
        assert reached and reached <= own, f'replica {i} called {len(reached - own)} modules that are not its own'
        assert torch.isfinite(out['sr']).all() and torch.isfinite(out['logp'] + out['logdet']).all()
    # the replicas computed what the network computes (ActNorm initialised from the same batch)
    torch.manual_seed(1)
    ref = net(lr, hr, sample=True, temperature=0.8)
    torch.manual_seed(1)
    rep = replicas[0](lr, hr, sample=True, temperature=0.8)
    torch.testing.assert_close(rep['logdet'], ref['logdet'])
    torch.testing.assert_close(rep['sr'], ref['sr'])


@pytest.mark.parametrize('net', [
    VGGStyleDiscriminatorAnySize(num_feat=4, input_size=32),
    MultiScaleRRDBNet(scale=8, num_feat=8, num_block=1, num_grow_ch=4),
    RRDBEmbedNet(num_feat=8, num_block=2, num_grow_ch=4, embed_blocks=[0, 1], upsample=[2, 2]),
], ids=lambda net: type(net).__name__)
def test_other_networks_hold_nothing_outside_containers(net):
    assert held_outside_containers(net) == []
