"""Training-step and sampling speed, and peak memory, of AdFlow against SRFlow and ESRGAN.

    .venv/bin/python benchmarks/flow_speed.py [--hr-size 160] [--batch 1] [--steps 3] [--device cpu]
                                              [--scale 4] [--json benchmarks/flow_speed.json]
                                              [--baseline OTHER_CHECKOUT --repeats 3]

``--baseline DIR`` times the same configurations with the ``adflow_plugin`` of another checkout (e.g. a
``git worktree add /tmp/base main``) in alternating processes, ``--repeats`` rounds, and prints medians
side by side: on a shared machine both sides see the same load.

Configurations, all at the same HR patch and batch:

* ``adflow``: the paper configuration (options/train_AdFlow_x{scale}.yml: K = 4, random rotations,
  1/sigmoid coupling);
* ``srflow``: SRFlow's released architecture (K = 16, learned 1x1, sigmoid coupling, 2 transition steps);
* ``adflow_learned_1x1``: AdFlow with learned invertible 1x1 convolutions instead of random rotations;
* ``esrgan``: BasicSR's RRDBNet + the VGG-style discriminator (an ESRGAN step: L1 + GAN on G, then D;
  its stage-1 step, ``step_l1_s``, is the L1 step of the RRDB PSNR pre-training);
* ``adflow_bf16``: ``adflow`` with ``train.amp: bf16`` (the embedding and the flow's networks under
  bfloat16 autocast; the flow's arithmetic in float32);
* ``srflow_released``: SRFlow's own released ``SRFlowNet``, imported from a checkout of its code given with
  ``--srflow-code DIR`` (``benchmarks/srflow_released.py``): the network the paper's 2.5x is measured against.

A flow training step is the NLL forward + backward + Adam step (BaseFlow); ``step_gan_s`` adds the
sample, the discriminator and its update (AdFlow stage 2). Inference is one sample (flows) or one
forward (ESRGAN); ``--samples N --sample-hr S`` also times N samples of one S x S HR image (the
embedding computed once, as ``basicsr test`` and ``infer`` do). Each configuration runs in its own
process, so the peak resident memory (CPU) or the peak allocated CUDA memory belongs to it alone
(``--interleaved``: all in one process, for steadier ratios on a loaded machine). The paper reports AdFlow 2.5x faster than SRFlow and
random rotations 37% faster to train than learned 1x1: this prints what it measures.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ['adflow', 'srflow', 'adflow_learned_1x1', 'esrgan']
EXTRA_CONFIGS = ['adflow_bf16', 'srflow_released']


def network_options(name, scale):
    import yaml
    from adflow_plugin.apps.convert_srflow import srflow_network_options
    if name == 'srflow':
        return dict(srflow_network_options(scale))
    name = name.replace('_bf16', '')
    with open(os.path.join(REPO, 'options', f'train_AdFlow_x{scale}.yml')) as f:
        opt = yaml.safe_load(f)['network_g']
    opt['pretrained_embed'] = None
    if name == 'adflow_learned_1x1':
        opt['rotation'] = 'learned'
    return opt


def sync(device):
    import torch
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def timed(fn, steps, device):
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times), sum(times) / len(times), statistics.median(times)


def peak_memory_mb(device):
    import torch
    if device.startswith('cuda'):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak RSS of the process so far


def build(name, args):
    """The timed closures of one configuration: (result dict, [(fn or None, key)], sample_n)."""
    import torch

    import adflow_plugin  # noqa: F401
    from basicsr.archs import build_network
    from basicsr.losses import build_loss
    device = args.device
    if device.startswith('cuda'):
        torch.backends.cudnn.benchmark = True
    amp = {'amp': 'bf16'} if name.endswith('_bf16') else {}  # only then: a baseline checkout may not know it
    torch.manual_seed(0)
    hr = torch.rand(args.batch, 3, args.hr_size, args.hr_size, device=device)
    lr = torch.nn.functional.avg_pool2d(hr, args.scale)
    d = build_network(dict(type='VGGStyleDiscriminatorAnySize', num_in_ch=3, num_feat=16 if name != 'esrgan' else 64,
                           input_size=args.hr_size)).to(device)
    gan = build_loss(dict(type='GANLoss', gan_type='vanilla', loss_weight=1e-2)).to(device)
    opt_d = torch.optim.Adam(d.parameters(), 1e-4)
    result = {'config': name}
    if name == 'srflow_released':
        from srflow_released import build_released
        g, step_nll, step_gan, infer, sample_released = build_released(args, hr, lr, d, gan, opt_d)

        def sample_n():
            sample_released(sample_lr, args.samples)

        step_l1 = None
    elif name == 'esrgan':
        g = build_network(dict(type='MultiScaleRRDBNet', num_in_ch=3, num_out_ch=3, scale=args.scale)).to(device)
        opt_g = torch.optim.Adam(g.parameters(), 1e-4)

        def step():
            opt_g.zero_grad()
            sr = g(lr)
            loss = (sr - hr).abs().mean() + gan(d(sr), True, is_disc=False)
            loss.backward()
            opt_g.step()
            opt_d.zero_grad()
            (gan(d(hr), True, is_disc=True) + gan(d(sr.detach()), False, is_disc=True)).backward()
            opt_d.step()

        def infer():
            with torch.no_grad():
                g(lr)

        def step_l1():
            opt_g.zero_grad()
            (g(lr) - hr).abs().mean().backward()
            opt_g.step()

        def sample_n():
            with torch.no_grad():
                for _ in range(args.samples):
                    g(sample_lr)

        step_nll = None
        step_gan = step
    else:
        g = build_network(network_options(name, args.scale)).to(device)
        nll = build_loss(dict(type='FlowNLLLoss')).to(device)
        opt_g = torch.optim.Adam(g.parameters(), 1e-5)

        def step_nll():
            opt_g.zero_grad()
            out = g(lr, nll.dequantize(hr), **amp)
            nll(out['logp'], out['logdet'], out['shape']).backward()
            opt_g.step()

        def step_gan():
            opt_g.zero_grad()
            out = g(lr, nll.dequantize(hr), sample=True, **amp)
            loss = nll(out['logp'], out['logdet'], out['shape']) + gan(d(out['sr']), True, is_disc=False)
            loss.backward()
            opt_g.step()
            opt_d.zero_grad()
            (gan(d(hr), True, is_disc=True) + gan(d(out['sr'].detach()), False, is_disc=True)).backward()
            opt_d.step()

        def infer():
            g.eval()
            with torch.no_grad():
                g.decode(cond=g.condition(lr, **amp), temperature=1.0, seed=0)
            g.train()

        def sample_n():
            g.eval()
            with torch.no_grad():
                cond = g.condition(sample_lr, **amp)
                for i in range(args.samples):
                    g.decode(cond=cond, temperature=0.9, seed=i)
            g.train()

        step_l1 = None
        step_nll()  # ActNorm's data-dependent initialisation happens here, outside the timing
    result['params_g'] = sum(p.numel() for p in g.parameters())
    sample_hr = args.sample_hr or args.hr_size
    sample_lr = torch.rand(1, 3, sample_hr // args.scale, sample_hr // args.scale, device=device)
    result['sample_hr'] = sample_hr
    plan = [(step_l1, 'step_l1_s'), (step_nll, 'step_nll_s'), (step_gan, 'step_gan_s'), (infer, 'infer_s')]
    return result, plan, sample_n


def worker(name, args):
    import torch
    device = args.device
    result, plan, sample_n = build(name, args)
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
    for fn, key in plan:
        if fn is None:
            result[key] = None
            continue
        if args.warmup:
            timed(fn, args.warmup, device)
        best, mean, median = timed(fn, args.steps, device)
        result[key] = best
        result[key.replace('_s', '_mean_s')] = mean
        result[key.replace('_s', '_median_s')] = median
        if key == 'step_gan_s':
            result['peak_mem_train_mb'] = peak_memory_mb(device)
    result['peak_mem_mb'] = peak_memory_mb(device)
    if args.samples:
        if device.startswith('cuda'):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        timed(sample_n, 1, device)
        best, mean, median = timed(sample_n, max(1, args.steps // 3), device)
        result.update(samples=args.samples, sample_n_s=best, sample_n_median_s=median,
                      peak_mem_sample_mb=peak_memory_mb(device))
    print(json.dumps(result), flush=True)


def interleaved(args):
    """All configurations in this one process, their steps taken in turn (config A's NLL step, B's, ...,
    then A's GAN step, ...), ``--steps`` rounds: on a machine whose load changes from minute to minute every
    configuration sees the same load, so the ratios are far steadier than across processes. Peak memory is
    not per configuration here."""
    built = {name: build(name, args) for name in args.configs}
    times = {(name, key): [] for name in args.configs for key in ('step_l1_s', ) + TIME_KEYS}
    for _ in range(args.warmup + args.steps):
        for key in ('step_l1_s', ) + TIME_KEYS:
            for name, (_, plan, _) in built.items():
                fn = dict((k, f) for f, k in plan)[key]
                if fn is not None:
                    start = time.perf_counter()
                    fn()
                    sync(args.device)
                    times[name, key].append(time.perf_counter() - start)
    results = []
    for name, (result, _, _) in built.items():
        for key in ('step_l1_s', ) + TIME_KEYS:
            values = times[name, key][args.warmup:]
            result[key] = statistics.median(values) if values else None
            if values:
                result[key.replace('_s', '_runs_s')] = values
        result['peak_mem_mb'] = None
        results.append(result)
    return results


TIME_KEYS = ('step_nll_s', 'step_gan_s', 'infer_s')


def run_worker(name, args, tree):
    """One configuration in its own process, with ``adflow_plugin`` imported from ``tree``."""
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', name, '--hr-size', str(args.hr_size), '--batch',
           str(args.batch), '--steps', str(args.steps), '--warmup', str(args.warmup), '--scale', str(args.scale),
           '--device', args.device, '--samples', str(args.samples), '--sample-hr', str(args.sample_hr or 0)]
    if args.srflow_code:
        cmd += ['--srflow-code', args.srflow_code]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree, os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep))
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {'config': name, 'error': f'timed out after {args.timeout:.0f} s'}
    if out.returncode != 0:
        return {'config': name, 'error': out.stderr[-3000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_result(runs):
    """Per key, the median over repeated runs of one configuration (numbers only)."""
    merged = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, float):  # times and memory; counts stay as they are
            values = [r[key] for r in runs if r.get(key) is not None]
            merged[key] = statistics.median(values) if values else None
    merged['repeats'] = len(runs)
    if len(runs) > 1:
        for key in TIME_KEYS:
            values = [r[key] for r in runs if r.get(key) is not None]
            if values:
                merged[key.replace('_s', '_runs_s')] = values
    return merged


def per_round_ratios(runs, side, configs):
    """Median over rounds of each round's time ratio to the SRFlow-equivalent configuration (and of random
    rotation to learned 1x1): the two ran a minute apart, so a machine whose load drifts over the whole
    benchmark biases these less than the ratio of the medians."""
    out = {}
    for name in configs:
        for key in TIME_KEYS:
            for ref_name, label in (('srflow', 'ratio_to_srflow'), ('adflow_learned_1x1', 'ratio_to_learned_1x1')):
                if label == 'ratio_to_learned_1x1' and name != 'adflow':
                    continue
                pairs = zip(runs.get((side, name), []), runs.get((side, ref_name), []))
                values = [a[key] / b[key] for a, b in pairs if 'error' not in a and 'error' not in b and a.get(key)
                          and b.get(key)]
                if values:
                    out.setdefault(name, {})[key.replace('_s', f'_{label}_per_round')] = statistics.median(values)
    return out


def add_ratios(results):
    """Time ratios against the SRFlow-equivalent configuration (the paper: AdFlow at most 0.4x) and of the
    random rotation against the learned 1x1 (the paper: 37 % less training time)."""
    ref = next((r for r in results if r['config'] == 'srflow' and 'error' not in r), None)
    learned = next((r for r in results if r['config'] == 'adflow_learned_1x1' and 'error' not in r), None)
    released = next((r for r in results if r['config'] == 'srflow_released' and 'error' not in r), None)
    for r in results:
        if 'error' in r:
            continue
        for key in TIME_KEYS:
            if ref and r.get(key) and ref.get(key):
                r[key.replace('_s', '_ratio_to_srflow')] = r[key] / ref[key]
            if released and r.get(key) and released.get(key):
                r[key.replace('_s', '_ratio_to_srflow_released')] = r[key] / released[key]
            if r['config'] == 'adflow' and learned and r.get(key) and learned.get(key):
                r[key.replace('_s', '_ratio_random_to_learned_1x1')] = r[key] / learned[key]


def print_table(title, results):
    print(title)
    print(f'{"config":<20}{"params G":>12}{"NLL step s":>12}{"GAN step s":>12}{"sample s":>10}{"peak MB":>10}'
          f'{"NLL /SR":>9}{"GAN /SR":>9}{"sample /SR":>11}')

    def fmt(v, width, spec='.3f'):
        return f'{format(v, spec) if v is not None else "-":>{width}}'

    for r in results:
        if 'error' in r:
            print(f'{r["config"]:<20} failed: {r["error"].strip().splitlines()[-1] if r["error"].strip() else ""}')
            continue
        print(f'{r["config"]:<20}{r["params_g"]:>12,}{fmt(r["step_nll_s"], 12)}{fmt(r["step_gan_s"], 12)}'
              f'{fmt(r["infer_s"], 10)}{fmt(r["peak_mem_mb"], 10, ".0f")}'
              f'{fmt(r.get("step_nll_ratio_to_srflow"), 9, ".2f")}'
              f'{fmt(r.get("step_gan_ratio_to_srflow"), 9, ".2f")}'
              f'{fmt(r.get("infer_ratio_to_srflow"), 11, ".2f")}')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--hr-size', type=int, default=160)
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--steps', type=int, default=3, help='timed repetitions (after the warm-up); best is shown')
    parser.add_argument('--warmup', type=int, default=1, help='untimed repetitions before the timed ones')
    parser.add_argument('--scale', type=int, default=4, choices=[4, 8])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--configs', nargs='+', default=CONFIGS, choices=CONFIGS + EXTRA_CONFIGS)
    parser.add_argument('--samples', type=int, default=0, help='also time this many samples of one image')
    parser.add_argument('--sample-hr', type=int, default=0, help='HR size of that image (default: --hr-size)')
    parser.add_argument('--baseline', default=None, metavar='DIR',
                        help='another checkout whose adflow_plugin is timed side by side (alternating processes)')
    parser.add_argument('--repeats', type=int, default=1, help='rounds over all configurations; medians are shown')
    parser.add_argument('--timeout', type=float, default=None, help='seconds per configuration process')
    parser.add_argument('--interleaved', action='store_true',
                        help='all configurations in one process, steps taken in turn, medians (steadier ratios on a '
                        'loaded machine; no per-configuration memory; no --baseline)')
    parser.add_argument('--srflow-code', default=None, metavar='DIR',
                        help='a checkout of SRFlow (github.com/andreas128/SRFlow): config srflow_released times its own '
                        'SRFlowNet (benchmarks/srflow_released.py)')
    parser.add_argument('--json', default=None, help='write the results here')
    parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if 'srflow_released' in args.configs:
        from srflow_released import code_problem
        problem = code_problem(args.srflow_code, args.scale)
        if problem:
            parser.error(problem)
    if args.worker:
        return worker(args.worker, args)

    if args.interleaved:
        results = interleaved(args)
        add_ratios(results)
        print_table(f'{args.scale}x, HR {args.hr_size}, batch {args.batch}, device {args.device}, one process, '
                    f'median of {args.steps} interleaved rounds', results)
        print('/SR: time as a fraction of the SRFlow-equivalent configuration\'s (the paper: AdFlow at most 0.4)')
        adflow = next((r for r in results if r['config'] == 'adflow'), {})
        for r in results:
            if r.get('step_nll_ratio_to_srflow_released') and r['config'] != 'srflow_released':
                print(f'{r["config"]} / SRFlow\'s released code (NLL, GAN, sample): ' + ' '.join(
                    f'{r.get(k.replace("_s", "_ratio_to_srflow_released"), float("nan")):.2f}' for k in TIME_KEYS))
        if adflow.get('step_nll_ratio_random_to_learned_1x1'):
            print('random rotation / learned 1x1 (AdFlow): ' + ' '.join(
                f'{adflow[k.replace("_s", "_ratio_random_to_learned_1x1")]:.2f}' for k in TIME_KEYS))
        if args.json:
            with open(args.json, 'w') as f:
                json.dump({'settings': vars(args), 'results': results}, f, indent=2)
        return
    sides = [('current', REPO)] + ([('baseline', os.path.abspath(args.baseline))] if args.baseline else [])
    runs = {(side, name): [] for side, _ in sides for name in args.configs}
    for _ in range(args.repeats):
        for name in args.configs:
            for side, tree in reversed(sides):  # baseline first, then current, for each configuration
                runs[side, name].append(run_worker(name, args, tree))
    tables = {}
    for side, _ in sides:
        results = []
        for name in args.configs:
            good = [r for r in runs[side, name] if 'error' not in r]
            results.append(median_result(good) if good else runs[side, name][-1])
        add_ratios(results)
        if args.repeats > 1:
            rounds = per_round_ratios(runs, side, args.configs)
            for r in results:
                r.update(rounds.get(r['config'], {}))
        tables[side] = results
        print_table(f'{side} ({dict(sides)[side]}): {args.scale}x, HR {args.hr_size}, batch {args.batch}, device '
                    f'{args.device}, best of {args.steps} per run, median of {args.repeats} run(s)', results)
    print('/SR: time as a fraction of the SRFlow-equivalent configuration\'s (the paper: AdFlow at most 0.4)')
    if args.repeats > 1:
        print('median over rounds of the per-round ratios (NLL, GAN, sample):')
        for side, results in tables.items():
            for r in results:
                values = [r.get(f'{k.replace("_s", "")}_ratio_to_srflow_per_round') for k in TIME_KEYS]
                extra = [r.get(f'{k.replace("_s", "")}_ratio_to_learned_1x1_per_round') for k in TIME_KEYS]
                if any(v is not None for v in values):
                    line = ' '.join('-' if v is None else f'{v:.2f}' for v in values)
                    if any(v is not None for v in extra):
                        line += '; random / learned 1x1: ' + ' '.join('-' if v is None else f'{v:.2f}' for v in extra)
                    print(f'  {side:<9}{r["config"]:<20}/SR {line}')
    failed = [r['config'] for r in tables['current'] if 'error' in r]  # a baseline may lack an option (bf16)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'settings': vars(args), 'results': tables['current'], 'tables': tables,
                       'runs': {f'{side}/{name}': v for (side, name), v in runs.items()}}, f, indent=2)
    if failed:
        sys.exit(f'failed: {failed}')


if __name__ == '__main__':
    main()
