"""torchrun target for the distributed tests: ``basicsr train`` through the plugin, then every rank saves
the networks it holds (BasicSR saves rank 0's only) to ``$ADFLOW_RANK_DUMP/rank<r>.pth``.

    torchrun --nproc_per_node=2 tests/test_dist/rank_dump.py -opt FILE --launcher pytorch
"""
import os
import sys

import adflow_plugin  # noqa: F401  (BasicSR fixes first: basicsr.train imports need them)
import basicsr.train
import torch

from adflow_plugin.cli import main

models = []
build_model = basicsr.train.build_model


def capture(opt):
    models.append(build_model(opt))
    return models[-1]


if __name__ == '__main__':
    basicsr.train.build_model = capture
    rc = main(['train'] + sys.argv[1:])
    model = models[0]
    nets = {'net_g': model.get_bare_model(model.net_g)}
    for name in ('net_g_ema', 'net_d'):
        if getattr(model, name, None) is not None:
            nets[name] = model.get_bare_model(getattr(model, name))
    state = {name: {k: v.detach().cpu().clone() for k, v in net.state_dict().items()} for name, net in nets.items()}
    state['ddp'] = {name: type(getattr(model, name)).__name__ for name in ('net_g', 'net_d')
                    if getattr(model, name, None) is not None}
    state['backend'] = torch.distributed.get_backend()
    state['device_ids'] = getattr(model.net_g, 'device_ids', None)
    state['device'] = str(next(model.net_g.parameters()).device)
    state['norm_layers'] = sorted({type(m).__name__ for net in nets.values() for m in net.modules()
                                   if 'BatchNorm' in type(m).__name__})
    torch.save(state, os.path.join(os.environ['ADFLOW_RANK_DUMP'], f'rank{model.opt["rank"]}.pth'))
    sys.exit(rc)
