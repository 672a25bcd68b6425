"""``basicsr demo``: build the demo data, train on it, test, and print one metrics line."""
import glob
import os.path as osp
import subprocess
import sys
import time

REPO_OPTIONS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'options')
# (pipeline, options file in options/) run in order
DEMO_STAGES = [('train', 'demo_BaseFlow_x4.yml'), ('train', 'demo_AdFlow_x4.yml'), ('test', 'test_demo_AdFlow_x4.yml')]


def register(subparsers):
    p = subparsers.add_parser(
        'demo', help='train and test a tiny model on the built-in demo data (CPU, minutes)',
        description='Builds datasets/demo from the photographs shipped with scikit-image, then runs '
        + ', '.join(f'basicsr {kind} -opt options/{name}' for kind, name in DEMO_STAGES)
        + ' in the current directory, and prints the test metrics on one line.')
    p.set_defaults(func=run_demo)


def last_test_metrics(name):
    """Metric values from the newest BasicSR test log of experiment ``name``."""
    logs = sorted(glob.glob(osp.join('results', name, f'test_{name}_*.log')))
    if not logs:
        return {}
    from adflow_plugin.apps.compare import parse_log
    metrics = {}
    for block in parse_log(logs[-1])[1].values():
        metrics.update(block)
    return metrics


def run_demo(args):
    import yaml

    from adflow_plugin.cli import CLIError
    from adflow_plugin.data.demo import build_demo_dataset

    start = time.time()
    build_demo_dataset(scales=(4, ))
    test_name = None
    for kind, name in DEMO_STAGES:
        path = osp.join(REPO_OPTIONS, name)
        # each stage in its own process, as a user would run it (BasicSR's logger is per process)
        cmd = [sys.executable, '-m', 'adflow_plugin.cli', kind, '-opt', path]
        print('+ basicsr ' + ' '.join(cmd[3:]), flush=True)
        if subprocess.run(cmd).returncode != 0:
            raise CLIError(f'stage "basicsr {kind} -opt {path}" failed (its output is above)')
        if kind == 'test':
            with open(path) as f:
                test_name = yaml.safe_load(f)['name']
    metrics = last_test_metrics(test_name)
    images = sorted(glob.glob(osp.join('results', test_name, 'visualization', '*', '*.png')))
    summary = ' '.join(f'{k}={v:.4f}' for k, v in metrics.items())
    print(f'demo metrics: {summary} | images: {len(images)} in {osp.join("results", test_name, "visualization")}'
          f' | {time.time() - start:.0f} s', flush=True)
    return 0 if metrics and images else 1
