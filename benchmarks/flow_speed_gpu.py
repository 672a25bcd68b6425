"""The GPU benchmark: training throughput, peak memory and sampling time at the paper's batch and patch.

    .venv/bin/python benchmarks/flow_speed_gpu.py --json flow_speed_gpu.json      # one GPU, under 8 minutes
    .venv/bin/python benchmarks/flow_speed_gpu.py --quick --device cpu            # tiny sizes: does it run?

For 4x (batch 12, HR patch 160) and 8x (batch 16, HR patch 160) it times, each configuration in its
own process (see ``benchmarks/flow_speed.py`` for what a step is):

* ``adflow`` (float32) and ``adflow_bf16`` (``train.amp: bf16``), ``adflow_learned_1x1``, ``srflow``
  (the SRFlow-equivalent architecture) and ``esrgan``;
* training iterations per second of the stage-1 step (NLL; L1 for ESRGAN's RRDB) and of the stage-2
  step (NLL + GAN with the discriminator's update; L1 + GAN for ESRGAN), from the median step time;
* peak GPU memory of training and of sampling;
* 10 samples of one 480 x 480 HR image (the embedding computed once, as ``basicsr test`` does);
* the extrapolated wall time of the paper's schedule on one GPU: 200k stage-1 + 200k stage-2 iterations
  (data loading, validation and checkpoints not included).

It prints a table with each configuration's time as a fraction of the SRFlow-equivalent's (the paper:
AdFlow trains and samples 2.5x faster, i.e. at most 0.4x the time) and writes everything to ``--json``.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flow_speed import REPO, run_worker  # noqa: E402

CONFIGS = ['adflow', 'adflow_bf16', 'adflow_learned_1x1', 'srflow', 'esrgan']
PAPER = {4: dict(batch=12, hr_size=160), 8: dict(batch=16, hr_size=160)}
ITERS_PER_STAGE = 200_000


def device_info(device):
    code = ('import json, torch; d = {"torch": torch.__version__}\n'
            f'if "{device}".startswith("cuda"):\n'
            f'    p = torch.cuda.get_device_properties("{device}")\n'
            '    d.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,\n'
            '             bf16=torch.cuda.is_bf16_supported())\n'
            'print(json.dumps(d))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO)
    info = json.loads(out.stdout) if out.returncode == 0 else {'error': out.stderr[-500:]}
    info.update(host=platform.node(), cpu=platform.processor() or platform.machine())
    return info


def summarise(r):
    """Iterations per second and the extrapolated 2 x 200k wall time of one result."""
    if 'error' in r:
        return r
    stage1 = r.get('step_nll_median_s') or r.get('step_l1_median_s')
    stage2 = r.get('step_gan_median_s')
    r['stage1_its_per_s'] = 1 / stage1 if stage1 else None
    r['stage2_its_per_s'] = 1 / stage2 if stage2 else None
    if stage1 and stage2:
        r['paper_schedule_hours'] = ITERS_PER_STAGE * (stage1 + stage2) / 3600
    return r


RATIO_KEYS = ('step_nll_median_s', 'step_gan_median_s', 'sample_n_median_s')


def add_median_ratios(results):
    """Median times as fractions of the SRFlow-equivalent's, and AdFlow's random rotation against learned 1x1."""
    by_name = {r['config']: r for r in results if 'error' not in r}
    srflow, learned = by_name.get('srflow'), by_name.get('adflow_learned_1x1')
    for r in by_name.values():
        for key in RATIO_KEYS:
            if srflow and r.get(key) and srflow.get(key):
                r[key.replace('_median_s', '_ratio_to_srflow')] = r[key] / srflow[key]
            if r['config'] == 'adflow' and learned and r.get(key) and learned.get(key):
                r[key.replace('_median_s', '_ratio_to_learned_1x1')] = r[key] / learned[key]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--quick', action='store_true', help='tiny sizes (HR 32, batch 1, 2 samples of 64): a '
                        'check that everything runs, e.g. on a CPU; the numbers mean nothing')
    parser.add_argument('--scales', nargs='+', type=int, default=[4, 8], choices=[4, 8])
    parser.add_argument('--configs', nargs='+', default=CONFIGS, choices=CONFIGS)
    parser.add_argument('--steps', type=int, default=8, help='timed steps per configuration (median shown)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps first (cuDNN autotuning, allocator)')
    parser.add_argument('--samples', type=int, default=10)
    parser.add_argument('--sample-hr', type=int, default=480)
    parser.add_argument('--timeout', type=float, default=150, help='seconds per configuration process')
    parser.add_argument('--budget', type=float, default=450,
                        help='seconds for the whole run: configurations that would start later are skipped')
    parser.add_argument('--json', default='flow_speed_gpu.json')
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.samples, args.sample_hr = 1, 1, 2, 64

    start = time.time()
    info = device_info(args.device)
    print(f'device {args.device}: {info}', flush=True)
    report = dict(settings=vars(args), device=info, results={})
    for scale in args.scales:
        size = dict(batch=1, hr_size=32) if args.quick else PAPER[scale]
        results = []
        for name in args.configs:
            t0 = time.time()
            left = args.budget - (t0 - start)
            if left < 20 and not args.quick:
                results.append({'config': name, 'error': f'skipped: the {args.budget:.0f} s budget is spent'})
                print(f'  {scale}x {name}: skipped (budget)', flush=True)
                continue
            wargs = SimpleNamespace(scale=scale, device=args.device, steps=args.steps, warmup=args.warmup,
                                    samples=args.samples, sample_hr=args.sample_hr,
                                    timeout=args.timeout if args.quick else min(args.timeout, left), **size)
            r = summarise(run_worker(name, wargs, REPO))
            r['process_s'] = time.time() - t0
            results.append(r)
            status = 'failed: ' + r['error'].strip().splitlines()[-1] if 'error' in r and r['error'].strip() else 'ok'
            print(f'  {scale}x {name}: {status} ({r["process_s"]:.0f} s)', flush=True)
        add_median_ratios(results)
        report['results'][f'x{scale}'] = dict(batch=size['batch'], hr_size=size['hr_size'], configs=results)
        print_table(scale, size, results, args)
        with open(args.json, 'w') as f:  # after each scale: a run cut short keeps what it measured
            json.dump(report, f, indent=2)
    report['seconds'] = round(time.time() - start, 1)
    with open(args.json, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'wrote {args.json} ({report["seconds"]:.0f} s)')
    failed = [r['config'] for s in report['results'].values() for r in s['configs'] if 'error' in r]
    if failed:
        sys.exit(f'failed: {failed}')


def print_table(scale, size, results, args):
    print(f'\n{scale}x, batch {size["batch"]}, HR {size["hr_size"]}, {args.device}; median of {args.steps} steps; '
          f'{args.samples} samples of {args.sample_hr}x{args.sample_hr}')
    print(f'{"config":<20}{"stage-1 it/s":>13}{"stage-2 it/s":>13}{"train GiB":>10}{"samples s":>10}'
          f'{"sample GiB":>11}{"2x200k h":>9}{"NLL /SR":>9}{"GAN /SR":>9}{"sample /SR":>11}')

    def fmt(v, width, spec='.2f'):
        return f'{format(v, spec) if v is not None else "-":>{width}}'

    gib = (lambda mb: mb / 1024 if mb is not None else None)
    for r in results:
        if 'error' in r:
            print(f'{r["config"]:<20} failed')
            continue
        print(f'{r["config"]:<20}{fmt(r["stage1_its_per_s"], 13)}{fmt(r["stage2_its_per_s"], 13)}'
              f'{fmt(gib(r.get("peak_mem_train_mb")), 10)}{fmt(r.get("sample_n_median_s"), 10)}'
              f'{fmt(gib(r.get("peak_mem_sample_mb")), 11)}{fmt(r.get("paper_schedule_hours"), 9, ".1f")}'
              f'{fmt(r.get("step_nll_ratio_to_srflow"), 9)}{fmt(r.get("step_gan_ratio_to_srflow"), 9)}'
              f'{fmt(r.get("sample_n_ratio_to_srflow"), 11)}')
    adflow = next((r for r in results if r['config'] == 'adflow' and 'error' not in r), None)
    if adflow and adflow.get('step_nll_ratio_to_learned_1x1'):
        print(f'random rotation / learned 1x1 (AdFlow): NLL step {adflow["step_nll_ratio_to_learned_1x1"]:.2f}, '
              f'GAN step {adflow["step_gan_ratio_to_learned_1x1"]:.2f} (the paper: 0.63)')
    print('/SR: median time as a fraction of the SRFlow-equivalent configuration\'s (the paper: AdFlow at most 0.4)')


if __name__ == '__main__':
    main()
