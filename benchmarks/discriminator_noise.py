"""Can the stage-2 discriminator tell clean HR patches from the same patches plus dequantisation noise?

The flow models HR + U(-1/2, 1/2)/quant (FlowNLLLoss.dequantize), so its samples at T = 1 carry that
noise, while the discriminator's real images are the clean HR. This trains the discriminator alone,
with the stage-2 step's relativistic loss, on real = HR patches and fake = the same patches plus the
noise (nothing else differs), and prints its accuracy:

* ``train``: the relativistic accuracy on the training batches (mean of the last 50 steps), defined
  as AdFlowModel logs it (``d_acc_real``: D(real) - mean D(fake) > 0; ``d_acc_fake``: D(fake) -
  mean D(real) < 0);
* ``held-out``: the pairwise accuracy D(x) > D(x + noise) in eval mode on 64 crops of the demo's
  validation photographs (never trained on).

    .venv/bin/python benchmarks/discriminator_noise.py [--iters 400] [--lr 1e-3] [--num-feat 16]
        [--real-noise] [--joint] [--no-bn] [--root datasets/demo]

``--joint`` shows D real and fake in one batch (one set of BatchNorm statistics; AdFlowModel, as
ESRGAN, runs them separately) and ``--no-bn`` removes its BatchNorm layers: the normalisation checks.

``--real-noise`` gives the real patches their own independent noise as well (the ``train.real_noise``
option of AdFlowModel): real and fake are then the same distribution and the accuracy must stay at
chance (0.5), which is the control.
"""
import argparse
import os.path as osp
import random
import tempfile
import time

import numpy as np


def train_batches(root, gt_size, batch, seed):
    import torch
    from basicsr.data import build_dataset
    ds = build_dataset({
        'name': 'demo', 'type': 'PairedImageDataset', 'phase': 'train', 'scale': 4,
        'dataroot_gt': osp.join(root, 'train', 'GT.lmdb'), 'dataroot_lq': osp.join(root, 'train', 'LRbicx4.lmdb'),
        'filename_tmpl': '{}', 'io_backend': {'type': 'lmdb'}, 'gt_size': gt_size, 'use_hflip': True,
        'use_rot': True})
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True, generator=g)
    while True:
        for data in loader:
            yield data['gt']


def held_out_crops(root, gt_size, count, seed):
    import cv2
    import torch
    rng = np.random.default_rng(seed)
    folder = osp.join(root, 'val', 'GT')
    imgs = [cv2.imread(osp.join(folder, n))[:, :, ::-1].astype(np.float32) / 255
            for n in ('chelsea.png', 'coffee.png')]
    crops = []
    for i in range(count):
        img = imgs[i % len(imgs)]
        top, left = rng.integers(0, img.shape[0] - gt_size + 1), rng.integers(0, img.shape[1] - gt_size + 1)
        crops.append(torch.from_numpy(img[top:top + gt_size, left:left + gt_size].transpose(2, 0, 1).copy()))
    return torch.stack(crops)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=None, help='demo data folder (built in a temporary folder if not given)')
    p.add_argument('--iters', type=int, default=400)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--gt-size', type=int, default=64)
    p.add_argument('--num-feat', type=int, default=16)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--quant', type=int, default=32)
    p.add_argument('--real-noise', action='store_true', help='give the real patches noise too (the control)')
    p.add_argument('--joint', action='store_true',
                   help='one discriminator forward on real and fake together (one set of BatchNorm statistics)')
    p.add_argument('--no-bn', action='store_true', help='replace the BatchNorm layers by identities')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args()

    import torch
    import adflow_plugin  # noqa: F401
    from basicsr.archs import build_network
    from basicsr.losses import build_loss

    from adflow_plugin.data.demo import build_demo_dataset
    from adflow_plugin.losses.flow_nll_loss import FlowNLLLoss
    from adflow_plugin.models.discriminator_health import discriminator_stats

    tmp = None
    root = args.root
    if root is None:
        tmp = tempfile.TemporaryDirectory()
        root = osp.join(tmp.name, 'demo')
    build_demo_dataset(root, scales=(4, ), lmdb=True)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    noise = FlowNLLLoss(quant=args.quant)
    net_d = build_network(dict(type='VGGStyleDiscriminatorAnySize', num_in_ch=3, num_feat=args.num_feat,
                               input_size=args.gt_size))
    if args.no_bn:
        for name, module in list(net_d.named_children()):
            if isinstance(module, torch.nn.BatchNorm2d):
                setattr(net_d, name, torch.nn.Identity())
    gan = build_loss(dict(type='GANLoss', gan_type='vanilla', real_label_val=1.0, fake_label_val=0.0,
                          loss_weight=1.0))
    opt_d = torch.optim.Adam(net_d.parameters(), args.lr, betas=(0.9, 0.99))
    batches = train_batches(root, args.gt_size, args.batch, args.seed)
    history = []
    start = time.time()
    for it in range(1, args.iters + 1):
        gt = next(batches)
        real = noise.dequantize(gt) if args.real_noise else gt
        fake = noise.dequantize(gt)
        # the stage-2 discriminator step (AdFlowModel._optimize_d): relativistic, real and fake separately
        opt_d.zero_grad()
        if args.joint:
            real_pred, fake_pred = net_d(torch.cat([real, fake])).chunk(2)
            l_real = gan(real_pred - fake_pred.mean(), True, is_disc=True) * 0.5
            l_fake = gan(fake_pred - real_pred.mean(), False, is_disc=True) * 0.5
            (l_real + l_fake).backward()
        else:
            fake_pred = net_d(fake).detach()
            real_pred = net_d(real)
            l_real = gan(real_pred - fake_pred.mean(), True, is_disc=True) * 0.5
            l_real.backward()
            fake_pred = net_d(fake)
            l_fake = gan(fake_pred - real_pred.detach().mean(), False, is_disc=True) * 0.5
            l_fake.backward()
        opt_d.step()
        stats = discriminator_stats(real_pred, fake_pred)
        history.append((float(l_real.detach() + l_fake.detach()), float(stats['d_acc_real']),
                        float(stats['d_acc_fake']), float(stats['d_gap']), float(stats['d_out_std'])))
        if it % 50 == 0 or it == args.iters:
            last = np.array(history[-50:])
            print(f'iter {it:5d}: l_d {last[:, 0].mean():.4f} acc real {last[:, 1].mean():.3f} '
                  f'fake {last[:, 2].mean():.3f} gap {last[:, 3].mean():+.4f} out std {last[:, 4].mean():.2e}',
                  flush=True)
    net_d.eval()
    crops = held_out_crops(root, args.gt_size, 64, args.seed)
    with torch.no_grad():
        clean = net_d(noise.dequantize(crops) if args.real_noise else crops).flatten()
        noisy = net_d(noise.dequantize(crops)).flatten()
    pairwise = float((clean > noisy).float().mean())
    last = np.array(history[-50:])
    print(f'discriminator_noise: {args.iters} iters, lr {args.lr:g}, num_feat {args.num_feat}, batch {args.batch}, '
          f'gt_size {args.gt_size}, real_noise {args.real_noise}, joint {args.joint}, no_bn {args.no_bn}: '
          f'train acc real {last[:, 1].mean():.3f} fake {last[:, 2].mean():.3f} gap {last[:, 3].mean():+.4f} '
          f'out std {last[:, 4].mean():.2e} | '
          f'held-out pairwise acc {pairwise:.3f} '
          f'(D(clean) {clean.mean():+.4f}, D(noisy) {noisy.mean():+.4f}) | {time.time() - start:.0f} s', flush=True)
    if tmp is not None:
        tmp.cleanup()


if __name__ == '__main__':
    main()
