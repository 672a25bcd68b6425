"""Time of one validation image as AdFlowModel validates it, to size ``dist_params.timeout``.

    .venv/bin/python benchmarks/validation_speed.py [--scale 4] [--hr-size 256] [--repeats 2] [--device cpu]

Under DDP rank 0 validates alone while the other ranks wait in a collective, so the collective timeout
must cover a whole validation. This builds the paper network (options/train_AdFlow_x{scale}.yml) and
times, for one image of ``--hr-size`` square, what ``AdFlowModel.nondist_validation`` does per image and
per sample: the embedding, one sample at T = 1, and the metrics of the shipped options (PSNR, 8-bit
LR-PSNR, LPIPS; LPIPS with a random backbone, which costs the same as the real one). It prints the time
per image and per megapixel, and the time of a validation set scaled by pixel count (the network and
the metrics are convolutional, so their cost is linear in pixels): DIV2K val (100 images, about 2.8 MP
each after prepare-data's crop) and a held-out training slice (``--holdout`` images of 480x480 up to
2040x1356; see datasets/README.md). Run with OMP_NUM_THREADS=1 for a one-core figure.
"""
import argparse
import os
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIV2K_VAL_MP = 2.79  # mean DIV2K val GT pixels (2040 x ~1370) after the crop to a multiple of 48, in MP


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--scale', type=int, default=4, choices=(4, 6, 8))
    parser.add_argument('--hr-size', type=int, default=256)
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--holdout', type=int, default=30, help='images in the held-out slice (default: 30)')
    parser.add_argument('--holdout-mp', type=float, default=2.79, help='mean MP of one held-out image')
    args = parser.parse_args()

    import torch
    import yaml

    import adflow_plugin  # noqa: F401  (first: its compatibility fixes make basicsr importable)
    from basicsr.archs import build_network
    from basicsr.utils import tensor2img
    from adflow_plugin.metrics.lpips_metric import calculate_lpips
    from adflow_plugin.metrics.lr_psnr_metric import calculate_lr_psnr
    from basicsr.metrics import calculate_psnr

    with open(os.path.join(REPO, 'options', f'train_AdFlow_x{args.scale}.yml')) as f:
        net_opt = yaml.safe_load(f)['network_g']
    net_opt['pretrained_embed'] = None
    torch.manual_seed(0)
    net = build_network(net_opt).to(args.device).eval()
    size = args.hr_size - args.hr_size % (args.scale * net.lr_multiple)
    gt = torch.rand(1, 3, size, size, device=args.device)
    lq = torch.nn.functional.avg_pool2d(gt, args.scale)
    gt_img = tensor2img([gt.cpu()])
    lq_img = tensor2img([lq.cpu()])
    with torch.no_grad():  # ActNorm initialises from the first batch it sees; not part of the timing
        net(lq, gt)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        with torch.no_grad():
            cond = net.condition(lq)
            embed_s = time.perf_counter() - start
            sr = net.decode(temperature=1.0, cond=cond, seed=0)
        sample_s = time.perf_counter() - start - embed_s
        sr_img = tensor2img([sr.cpu()])
        start = time.perf_counter()
        calculate_psnr(sr_img, gt_img, crop_border=args.scale)
        calculate_lr_psnr(sr_img, lq_img, scale=args.scale)
        calculate_lpips(sr_img, gt_img, random_backbone=True)
        metrics_s = time.perf_counter() - start
        times.append((embed_s + sample_s + metrics_s, embed_s, sample_s, metrics_s))
    total, embed_s, sample_s, metrics_s = min(times)
    mp = size * size / 1e6

    def per_image(samples):  # the embedding once, then each sample and its metrics (nondist_validation)
        return (embed_s + samples * (sample_s + metrics_s)) / mp

    print(f'x{args.scale} {size}x{size} HR ({mp:.3f} MP), {torch.get_num_threads()} thread(s), {args.device}: '
          f'{total:.2f} s per image (embedding {embed_s:.2f} s, sample {sample_s:.2f} s, metrics {metrics_s:.2f} s)'
          f' = {per_image(1):.1f} s/MP')
    for label, count, image_mp in (('DIV2K val', 100, DIV2K_VAL_MP), ('held-out slice', args.holdout, args.holdout_mp)):
        print(f'{label}, {count} x {image_mp} MP: 1 sample {count * image_mp * per_image(1) / 60:.0f} min, '
              f'10 samples {count * image_mp * per_image(10) / 60:.0f} min')

if __name__ == '__main__':
    main()
