"""Shared fixtures: the demo data set (built once per session) and a runner for the real CLI."""
import os
import subprocess
import sys

import pytest

import adflow_plugin  # noqa: F401  (registers the plugin for in-process tests)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONS = os.path.join(REPO, 'options')


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """The demo set at 4x, 6x and 8x, folders and LMDB, in a session temporary folder."""
    from adflow_plugin.data.demo import build_demo_dataset
    root = tmp_path_factory.mktemp('demo') / 'demo'
    return build_demo_dataset(str(root), scales=(4, 6, 8), lmdb=True)


def run_cli(args, cwd, timeout=600, check=True, env=None):
    """Run ``basicsr ARGS`` (the installed console command's module) in ``cwd``; return the CompletedProcess."""
    cmd = [sys.executable, '-m', 'adflow_plugin.cli'] + [str(a) for a in args]
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n'
                             f'--- stderr\n{proc.stderr[-4000:]}')
    return proc


@pytest.fixture
def cli():
    return run_cli
