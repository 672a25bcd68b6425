"""Gradient norms and skipped steps with and without ``train.grad_clip_norm``, at the demo size.

    .venv/bin/python benchmarks/grad_clip.py [--iters 60] [--lr-scale 10] [--clip 50] [--data /tmp/demo]

The 1/sigmoid coupling multiplies by at most 1 when decoding, but encoding divides by a sigmoid that can
be as small as ``affine_eps``, so one coupling layer can amplify the NLL's gradient by up to 1/affine_eps.
This trains the demo generator (options/demo_BaseFlow_x4.yml, its data from ``basicsr demo``'s builder)
through AdFlowModel's own step, stage 1 (NLL) and then stage 2 (NLL + GAN, options/demo_AdFlow_x4.yml,
from the stage-1 weights), each at its file's learning rate and at ``--lr-scale`` times it, with clipping
off and at ``--clip``. Printed per run: the generator's gradient norm before clipping (median, 99th
percentile, maximum), skipped (non-finite) steps, and the NLL at the start and end (median of the first and
last 10 steps).
"""
import argparse
import copy
import math
import os
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name):
    import yaml
    with open(os.path.join(REPO, 'options', name)) as f:
        return yaml.safe_load(f)


def build(opt, root):
    sys.path.insert(0, REPO)
    from tests.conftest import in_process_model
    import pathlib
    return in_process_model(opt, pathlib.Path(root))


def run(opt, loader, iters, root, init=None):
    import torch
    model = build(opt, root)
    if init is not None:
        model.get_bare_model(model.net_g).load_state_dict(init)
    norms, nll, start = [], [], time.time()
    it = 0
    while it < iters:
        for data in loader:
            it += 1
            model.feed_data(data)
            model.optimize_parameters(it)
            norms.append(float(model.log_dict.get('grad_norm_g', float('nan'))))  # absent: non-finite NLL
            nll.append(float(model.log_dict.get('l_g_nll', float('nan'))))
            if it >= iters:
                break
    finite = sorted(n for n in norms if math.isfinite(n))
    p99 = finite[int(0.99 * (len(finite) - 1))] if finite else float('nan')
    return dict(median=statistics.median(finite) if finite else float('nan'), p99=p99,
                max=max(norms), skipped=model.skipped_steps, nll0=statistics.median(nll[:10]),
                nll1=statistics.median(nll[-10:]), seconds=time.time() - start,
                state=copy.deepcopy(model.get_bare_model(model.net_g).state_dict())), torch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, default=60)
    parser.add_argument('--lr-scale', type=float, default=10.0)
    parser.add_argument('--clip', type=float, default=50.0)
    parser.add_argument('--data', default=None, help='demo data folder (built there if missing)')
    args = parser.parse_args(argv)

    import adflow_plugin  # noqa: F401

    work = tempfile.mkdtemp(prefix='grad_clip_')
    try:
        measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args, work):
    from basicsr.data import build_dataloader, build_dataset

    from adflow_plugin.data.demo import build_demo_dataset
    data = build_demo_dataset(args.data or os.path.join(work, 'demo'), scales=(4, ), lmdb=True)
    stage1, stage2 = load('demo_BaseFlow_x4.yml'), load('demo_AdFlow_x4.yml')
    train = dict(stage1['datasets']['train'], dataroot_gt=data['train']['gt_lmdb'],
                 dataroot_lq=data['train']['lq_x4_lmdb'], phase='train', scale=4)
    loader = build_dataloader(build_dataset(train), train, num_gpu=0, dist=False, sampler=None, seed=0)

    def variant(opt, lr_scale, clip):
        opt = copy.deepcopy(opt)
        opt['datasets'] = {'train': train}
        opt.pop('val', None)
        opt['path']['pretrain_network_g'] = None
        opt['train']['optim_g']['lr'] *= lr_scale
        opt['train']['grad_clip_norm'] = clip
        opt['train']['max_consecutive_skips'] = 10**9
        return opt

    print(f'{args.iters} iterations per run, batch {train["batch_size_per_gpu"]}, HR {train["gt_size"]}; '
          'grad norm = the generator\'s, before clipping')
    print('stage | lr | clip | median | p99 | max | skipped | NLL median of first 10 -> last 10 | s')
    base = None
    for stage, opt in (('1 NLL', stage1), ('2 NLL+GAN', stage2)):
        for lr_scale in (1.0, args.lr_scale):
            for clip in (None, args.clip):
                o = variant(opt, lr_scale, clip)
                import torch
                torch.manual_seed(0)
                r, _ = run(o, loader, args.iters, work, init=base if stage.startswith('2') else None)
                print(f'{stage} | {o["train"]["optim_g"]["lr"]:.0e} | {clip} | {r["median"]:.3g} | {r["p99"]:.3g} | '
                      f'{r["max"]:.3g} | {r["skipped"]} | {r["nll0"]:.3f} -> {r["nll1"]:.3f} | {r["seconds"]:.0f}',
                      flush=True)
                if stage.startswith('1') and lr_scale == 1.0 and clip is None:
                    base = r['state']


if __name__ == '__main__':
    main()
