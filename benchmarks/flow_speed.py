"""Training-step and sampling speed, and peak memory, of AdFlow against SRFlow and ESRGAN.

    .venv/bin/python benchmarks/flow_speed.py [--hr-size 160] [--batch 1] [--steps 3] [--device cpu]
                                              [--scale 4] [--json benchmarks/flow_speed.json]

Configurations, all at the same HR patch and batch:

* ``adflow``: the paper configuration (options/train_AdFlow_x{scale}.yml: K = 4, random rotations,
  1/sigmoid coupling);
* ``srflow``: SRFlow's released architecture (K = 16, learned 1x1, sigmoid coupling, 2 transition steps);
* ``adflow_learned_1x1``: AdFlow with learned invertible 1x1 convolutions instead of random rotations;
* ``esrgan``: BasicSR's RRDBNet + the VGG-style discriminator (an ESRGAN step: L1 + GAN on G, then D).

A flow training step is the NLL forward + backward + Adam step (BaseFlow); ``step_gan_s`` adds the
sample, the discriminator and its update (AdFlow stage 2). Inference is one sample (flows) or one
forward (ESRGAN). Each configuration runs in its own process, so the peak resident memory (CPU) or the
peak allocated CUDA memory belongs to it alone. The paper reports AdFlow 2.5x faster than SRFlow and
random rotations 37% faster to train than learned 1x1: this prints what it measures.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ['adflow', 'srflow', 'adflow_learned_1x1', 'esrgan']


def network_options(name, scale):
    import yaml
    from adflow_plugin.convert_srflow import srflow_network_options
    if name == 'srflow':
        return dict(srflow_network_options(scale))
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
    return min(times), sum(times) / len(times)


def worker(name, args):
    import torch

    import adflow_plugin  # noqa: F401
    from basicsr.archs import build_network
    from basicsr.losses import build_loss
    device = args.device
    torch.manual_seed(0)
    hr = torch.rand(args.batch, 3, args.hr_size, args.hr_size, device=device)
    lr = torch.nn.functional.avg_pool2d(hr, args.scale)
    d = build_network(dict(type='VGGStyleDiscriminatorAnySize', num_in_ch=3, num_feat=16 if name != 'esrgan' else 64,
                           input_size=args.hr_size)).to(device)
    gan = build_loss(dict(type='GANLoss', gan_type='vanilla', loss_weight=1e-2)).to(device)
    opt_d = torch.optim.Adam(d.parameters(), 1e-4)
    result = {'config': name}
    if name == 'esrgan':
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

        step_nll = None
        step_gan = step
    else:
        g = build_network(network_options(name, args.scale)).to(device)
        nll = build_loss(dict(type='FlowNLLLoss')).to(device)
        opt_g = torch.optim.Adam(g.parameters(), 1e-5)

        def step_nll():
            opt_g.zero_grad()
            out = g(lr, nll.dequantize(hr))
            nll(out['logp'], out['logdet'], out['shape']).backward()
            opt_g.step()

        def step_gan():
            opt_g.zero_grad()
            out = g(lr, nll.dequantize(hr), sample=True)
            loss = nll(out['logp'], out['logdet'], out['shape']) + gan(d(out['sr']), True, is_disc=False)
            loss.backward()
            opt_g.step()
            opt_d.zero_grad()
            (gan(d(hr), True, is_disc=True) + gan(d(out['sr'].detach()), False, is_disc=True)).backward()
            opt_d.step()

        def infer():
            g.eval()
            with torch.no_grad():
                g.decode(lr, temperature=1.0, seed=0)
            g.train()

        step_nll()  # ActNorm's data-dependent initialisation happens here, outside the timing
    result['params_g'] = sum(p.numel() for p in g.parameters())
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
    warm = 1
    for fn, key in ((step_nll, 'step_nll_s'), (step_gan, 'step_gan_s'), (infer, 'infer_s')):
        if fn is None:
            result[key] = None
            continue
        timed(fn, warm, device)
        best, mean = timed(fn, args.steps, device)
        result[key] = best
        result[key.replace('_s', '_mean_s')] = mean
    if device.startswith('cuda'):
        result['peak_mem_mb'] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result['peak_mem_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak RSS of the process
    print(json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--hr-size', type=int, default=160)
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--steps', type=int, default=3, help='timed repetitions (after one warm-up); best is shown')
    parser.add_argument('--scale', type=int, default=4, choices=[4, 8])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--configs', nargs='+', default=CONFIGS, choices=CONFIGS)
    parser.add_argument('--json', default=None, help='write the results here')
    parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args)

    results = []
    for name in args.configs:
        cmd = [sys.executable, os.path.abspath(__file__), '--worker', name, '--hr-size', str(args.hr_size), '--batch',
               str(args.batch), '--steps', str(args.steps), '--scale', str(args.scale), '--device', args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if out.returncode != 0:
            sys.exit(f'{name} failed:\n{out.stderr[-3000:]}')
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ref = next((r for r in results if r['config'] == 'srflow'), None)
    for r in results:
        for key in ('step_nll_s', 'step_gan_s', 'infer_s'):
            if ref and r[key] and ref[key]:
                r[key.replace('_s', '_speedup_vs_srflow')] = ref[key] / r[key]
    print(f'{args.scale}x, HR {args.hr_size}, batch {args.batch}, device {args.device}, best of {args.steps}')
    header = f'{"config":<20}{"params G":>12}{"NLL step s":>12}{"GAN step s":>12}{"sample s":>10}{"peak MB":>10}' \
             f'{"NLL x":>8}{"GAN x":>8}{"sample x":>10}'
    print(header)

    def fmt(v, width, spec='.3f'):
        return f'{format(v, spec) if v is not None else "-":>{width}}'

    for r in results:
        print(f'{r["config"]:<20}{r["params_g"]:>12,}{fmt(r["step_nll_s"], 12)}{fmt(r["step_gan_s"], 12)}'
              f'{fmt(r["infer_s"], 10)}{fmt(r["peak_mem_mb"], 10, ".0f")}'
              f'{fmt(r.get("step_nll_speedup_vs_srflow"), 8, ".2f")}'
              f'{fmt(r.get("step_gan_speedup_vs_srflow"), 8, ".2f")}'
              f'{fmt(r.get("infer_speedup_vs_srflow"), 10, ".2f")}')
    print('x: speed-up against the SRFlow-equivalent configuration (higher is faster)')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'settings': vars(args), 'results': results}, f, indent=2)


if __name__ == '__main__':
    main()
