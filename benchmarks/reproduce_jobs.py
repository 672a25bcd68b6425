"""Is ``basicsr reproduce --jobs N`` faster? Trainings one after the other with every core against side by side.

    .venv/bin/python benchmarks/reproduce_jobs.py reproduction/options/train_BaseFlow_K2.yml \\
        reproduction/options/train_BaseFlow_K4.yml [--iters 300] [--rounds 1]

Takes training options files written by ``basicsr reproduce`` (``OUT/options/train_*.yml``; their
relative weight paths are read from ``OUT``, the folder above ``options``), shortens each to ``--iters``
iterations without validation or checkpoints, and trains them through ``basicsr train`` in child
processes, in a scratch folder:

* ``one by one``: each alone with every core (``OMP_NUM_THREADS`` = the cores, as ``--jobs 1``);
* ``side by side``: all at once, the cores shared equally (as ``--jobs N`` with N the number of files).

The two ways alternate for ``--rounds`` rounds, so that both see the same load on a shared machine.
Printed per way: the wall time of the whole set and each training's seconds per iteration (BasicSR's
logged ``time``, without the first ``print_freq`` iterations); then the speed-up: one by one's wall
time over side by side's, and the rate of work while all run side by side (the sum over the trainings
of one by one's seconds per iteration over side by side's).
"""
import argparse
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from adflow_plugin.apps.reproduce.scheduler import cpu_count  # noqa: E402

WEIGHT_KEYS = (('network_g', 'pretrained_embed'), ('path', 'pretrain_network_g'), ('path', 'pretrain_network_d'))


def shortened(path, iters, tag):
    """The options of ``path`` for ``iters`` iterations, named ``<name>_<tag>``, weights made absolute."""
    with open(path) as f:
        opt = yaml.safe_load(f)
    root = osp.dirname(osp.dirname(osp.abspath(path)))
    for section, key in WEIGHT_KEYS:
        value = (opt.get(section) or {}).get(key)
        if value and not osp.isabs(value):
            opt[section][key] = osp.join(root, value)
    opt['name'] = f'{opt["name"]}_{tag}'
    opt['train']['total_iter'] = iters
    opt['path']['resume_state'] = None
    opt.pop('val', None)
    opt['datasets'] = {k: v for k, v in opt['datasets'].items() if k.startswith('train')}
    opt['logger'].update(print_freq=min(100, max(1, iters // 3)), save_checkpoint_freq=10**9, use_tb_logger=False)
    return opt


def seconds_per_iter(log_text):
    times = [float(t) for t in re.findall(r'time \(data\): ([0-9.]+)', log_text)]
    return statistics.mean(times[1:] or times) if times else float('nan')


def train_all(files, iters, tag, scratch, threads, together):
    """Train every file (all at once or one by one) with ``threads`` each; wall seconds, seconds/iteration."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    opts = []
    for path in files:
        opt = shortened(path, iters, tag)
        opt_path = osp.join(scratch, f'{opt["name"]}.yml')
        with open(opt_path, 'w') as f:
            yaml.safe_dump(opt, f, sort_keys=False)
        opts.append((opt['name'], opt_path))
    start = time.time()
    procs = []
    for name, opt_path in opts:
        with open(osp.join(scratch, f'{name}.out'), 'w') as out:
            proc = subprocess.Popen([sys.executable, '-m', 'adflow_plugin.cli', 'train', '-opt', opt_path], cwd=scratch,
                                    env=env, stdout=out, stderr=subprocess.STDOUT)
        procs.append((name, proc))
        if not together and proc.wait() != 0:
            raise SystemExit(f'reproduce_jobs: training {name} failed; see {osp.join(scratch, name + ".out")}')
    for name, proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f'reproduce_jobs: training {name} failed; see {osp.join(scratch, name + ".out")}')
    wall = time.time() - start
    speeds = {}
    for name, _ in opts:
        logs = [f for f in os.listdir(osp.join(scratch, 'experiments', name)) if f.endswith('.log')]
        with open(osp.join(scratch, 'experiments', name, logs[0])) as f:
            speeds[name.rsplit('_', 1)[0]] = seconds_per_iter(f.read())
    return wall, speeds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('options', nargs='+', help="training options files from a reproduction's OUT/options")
    parser.add_argument('--iters', type=int, default=300)
    parser.add_argument('--rounds', type=int, default=1)
    args = parser.parse_args(argv)
    for path in args.options:
        if not osp.isfile(path):
            parser.error(f'{path} is not a file; give training options written by basicsr reproduce (OUT/options)')
    cores, n = cpu_count(), len(args.options)
    ways = [('one by one', cores, False), ('side by side', max(1, cores // n), True)]
    results = {name: [] for name, _, _ in ways}
    with tempfile.TemporaryDirectory(prefix='reproduce_jobs_') as scratch:
        for r in range(args.rounds):
            for name, threads, together in ways:
                tag = f'{"par" if together else "seq"}{r}'
                results[name].append(train_all(args.options, args.iters, tag, scratch, threads, together))
                print(f'round {r + 1}, {name}: {results[name][-1][0]:.1f} s', flush=True)
    print(f'\n{n} trainings of {args.iters} iterations, {cores} cores, {args.rounds} round(s) (medians)\n')
    print('| way | threads each | wall time | ' + ' | '.join(f'{k} s/iter' for k in results['one by one'][0][1]) + ' |')
    print('|---|---|---|' + '---|' * len(results['one by one'][0][1]))
    walls, per = {}, {}
    for name, threads, _ in ways:
        walls[name] = statistics.median(w for w, _ in results[name])
        per[name] = [statistics.median(s[k] for _, s in results[name]) for k in results[name][0][1]]
        print(f'| {name} | {threads} | {walls[name]:.1f} s | ' + ' | '.join(f'{p:.3f}' for p in per[name]) + ' |')
    rate = sum(a / b for a, b in zip(per['one by one'], per['side by side']))
    print(f'\nspeed-up of side by side: {walls["one by one"] / walls["side by side"]:.2f}x in wall time (the '
          f'tail, after the shorter training finished, runs alone on its share of the cores); {rate:.2f}x in '
          'iterations done per second while all run (what a queue of stages, as --jobs keeps, gains)')


if __name__ == '__main__':
    main()
