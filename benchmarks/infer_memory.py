"""Peak memory of ``basicsr infer``'s samples: written one by one as they are made, against all made in one
pass and held until the end (what infer did before: 1.45 GB at 40 samples of a 179 x 179 input).

Both runs draw the same samples from the same randomly initialised, small AdFlowNet x4 on the same
179 x 179 photograph crop, on the CPU, each in a fresh process; the peak resident memory of each
process is printed (``ru_maxrss``) with the part above the process's size before sampling.

    python benchmarks/infer_memory.py [--samples 40] [--size 179]

Measured on this 2-core machine (peak resident memory above the process's size before sampling):
40 samples 611 MiB held, 246 MiB one by one; 80 samples 1513 MiB held, 224 MiB one by one.
"""
import argparse
import resource
import subprocess
import sys
import time


def measure(mode, samples, size):
    import numpy as np
    import torch

    from adflow_plugin.archs.adflow_arch import AdFlowNet
    from adflow_plugin.data.demo import VAL_PHOTOS, read_photo
    from adflow_plugin.apps.infer import SRNetwork, upscale_iter

    torch.manual_seed(0)
    net = AdFlowNet(scale=4, num_feat=16, num_block=1, num_grow_ch=8, embed_blocks=[0], flow_depth=1,
                    num_transition=1, hidden_channels=16).eval()
    srnet = SRNetwork(net, 4, True, net.lr_multiple)
    bgr = read_photo(VAL_PHOTOS[0])[:size, :size].astype(np.float32) / 255
    jobs = [(0.9, k) for k in range(samples)]

    def quantize(rows):
        return np.round(np.clip(rows, 0, 1) * 255).astype(np.uint8)

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.time()
    kept = []
    for _, out in upscale_iter(srnet, bgr, jobs, finalize=quantize, chunk=len(jobs) if mode == 'held' else None):
        if mode == 'held':
            kept.append(out)  # written only when the image is done
        checksum = int(out[::7, ::7].sum())  # noqa: F841  (the output is used, then let go)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f'{peak / 1024:.0f} {(peak - base) / 1024:.0f} {time.time() - start:.1f}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--samples', type=int, default=40)
    parser.add_argument('--size', type=int, default=179)
    parser.add_argument('--mode', choices=['held', 'streamed'], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        measure(args.mode, args.samples, args.size)
        return
    print(f'{args.samples} samples of a {args.size} x {args.size} LR, x4, CPU (peak resident memory, MiB)')
    for mode, label in (('held', 'one pass, held to the end (before)'), ('streamed', 'one by one (now)')):
        out = subprocess.run([sys.executable, __file__, '--mode', mode, '--samples', str(args.samples), '--size',
                              str(args.size)], capture_output=True, text=True, check=True).stdout.split()
        print(f'  {label:36s} peak {out[0]:>6s}, of which sampling {out[1]:>6s}   {out[2]:>6s} s')


if __name__ == '__main__':
    main()
