"""LMDBs of ``basicsr prepare-data``: packed with BasicSR's ``make_lmdb_from_imgs``, checked, then named.

An LMDB is written as ``<name>.partial.lmdb`` from a folder of sub-image PNGs (as BasicSR's
``scripts/data_preparation/create_lmdb.py`` does), checked (:func:`check_lmdb`: ``meta_info.txt`` agrees
with the database; an LR LMDB's samples equal bicubic of the HR's), and only then renamed to
``<name>.lmdb``, so a final name always means complete.
"""
import os
import os.path as osp
import random
import re
import shutil
import sys

import cv2
import numpy as np
from tqdm import tqdm

from adflow_plugin.data.image_ops import _max_diff
from adflow_plugin.data.recipe import LMDB_COMPRESSION, VERIFY_MARGIN, PrepareError

__all__ = ['read_meta_info', 'check_lmdb']


def read_meta_info(lmdb_path):
    """``[(key, (h, w, c))]`` from an LMDB's ``meta_info.txt``."""
    path = osp.join(lmdb_path, 'meta_info.txt')
    if not osp.isfile(path):
        raise PrepareError(f'{lmdb_path}: no meta_info.txt')
    entries = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            m = re.fullmatch(r'(\S+)\.png \((\d+),(\d+),(\d+)\) \d+', line.strip())
            if not m:
                raise PrepareError(f'{path} line {n} is not "<key>.png (h,w,c) level": {line.strip()!r}')
            entries.append((m.group(1), tuple(int(v) for v in m.groups()[1:])))
    return entries


def _open_lmdb(path):
    import lmdb
    return lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False)


def _decode(env, key, where):
    with env.begin(write=False) as txn:
        buf = txn.get(key.encode('ascii'))
    if buf is None:
        raise PrepareError(f'{where}: key {key} is in meta_info.txt but not in the database')
    img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise PrepareError(f'{where}: the image under key {key} does not decode')
    return img


def check_lmdb(lmdb_path, expected_keys=None, expected_shape=None, samples=3, seed=0):
    """Check an LMDB written by ``make_lmdb_from_imgs``: meta_info agrees with the database.

    Args:
        lmdb_path (str): The ``.lmdb`` folder.
        expected_keys (list[str] | None): Keys it must hold, exactly.
        expected_shape (tuple | None): ``(h, w, c)`` every meta_info entry must have.
        samples (int): Images to decode and compare with their meta_info shape.
        seed (int): Seed of the sample.

    Returns:
        list: ``read_meta_info(lmdb_path)``.

    Raises:
        PrepareError: On any disagreement.
    """
    meta = read_meta_info(lmdb_path)
    keys = [k for k, _ in meta]
    if len(set(keys)) != len(keys):
        raise PrepareError(f'{lmdb_path}: meta_info.txt lists a key twice')
    if expected_keys is not None and set(keys) != set(expected_keys):
        gone = sorted(set(expected_keys) - set(keys))
        raise PrepareError(f'{lmdb_path}: {len(keys)} keys where {len(expected_keys)} were expected'
                           f'{" (missing e.g. " + gone[0] + ")" if gone else ""}')
    if expected_shape is not None:
        bad = [(k, s) for k, s in meta if s != tuple(expected_shape)]
        if bad:
            raise PrepareError(f'{lmdb_path}: {bad[0][0]} has shape {bad[0][1]}, expected {tuple(expected_shape)}')
    env = _open_lmdb(lmdb_path)
    try:
        entries = env.stat()['entries']
        if entries != len(meta):
            raise PrepareError(f'{lmdb_path}: the database holds {entries} images, meta_info.txt lists {len(meta)}')
        for key, shape in random.Random(seed).sample(meta, min(samples, len(meta))):
            img = _decode(env, key, lmdb_path)
            got = img.shape if img.ndim == 3 else img.shape + (1, )
            if got != shape:
                raise PrepareError(f'{lmdb_path}: key {key} decodes to {got}, meta_info.txt says {shape}')
    finally:
        env.close()
    return meta


class _LmdbBar(tqdm):
    """make_lmdb_from_imgs' progress bar, on its own line and named after its LMDB."""
    label = ''
    row = 0

    def __init__(self, *args, **kwargs):
        if sys.stderr.isatty():  # one line per LMDB written in parallel; in a log file, plain lines
            kwargs.setdefault('position', self.row)
        super().__init__(*args, **kwargs)

    def set_description(self, desc=None, refresh=True):
        # make_lmdb_from_imgs renames the bar for every image: redraw at tqdm's own pace only
        super().set_description(f'{self.label} {desc or ""}', refresh=False)


def lmdb_map_size(count, image_bytes):
    """An LMDB map size that ``count`` PNG-encoded images of at most ``image_bytes`` raw bytes each cannot
    outgrow: PNG is at worst a little larger than the raw pixels, and the map is sparse, so this costs no disk.
    (``make_lmdb_from_imgs`` otherwise guesses from its first image's PNG size, too small when that one
    compresses well.)"""
    return int(count * (image_bytes * 1.1 + 4096)) + (64 << 20)


def _pack_task(task):
    """Pack one sub-image folder: ``<name>.partial.lmdb``, check it, rename it to ``<name>.lmdb``."""
    from basicsr.utils import lmdb_util
    sub_dir, lmdb_path, keys, shape, row, scale, hr_sub_dir, hr_lmdb = task
    partial = lmdb_path[:-len('.lmdb')] + '.partial.lmdb'
    shutil.rmtree(partial, ignore_errors=True)
    names = [f'{k}.png' for k in keys]
    map_size = lmdb_map_size(len(keys), shape[0] * shape[1] * shape[2])
    bar = type('_Bar', (_LmdbBar, ), {'label': osp.basename(lmdb_path), 'row': row})
    saved = lmdb_util.tqdm
    lmdb_util.tqdm = bar
    try:
        lmdb_util.make_lmdb_from_imgs(sub_dir, partial, names, list(keys), compress_level=LMDB_COMPRESSION,
                                      map_size=map_size)
    finally:
        lmdb_util.tqdm = saved
    check_lmdb(partial, keys, shape)
    if scale > 1:
        _check_lr_samples(partial, keys, scale, hr_sub_dir, hr_lmdb)
    os.rename(partial, lmdb_path)
    return lmdb_path


def _check_lr_samples(lr_lmdb, keys, scale, hr_sub_dir, hr_lmdb, samples=20):
    """Before an LR LMDB gets its final name: sampled LR sub-images equal bicubic(HR sub-image)."""
    lr_env, hr_env = _open_lmdb(lr_lmdb), None
    try:
        for key in random.Random(len(keys)).sample(list(keys), min(samples, len(keys))):
            png = osp.join(hr_sub_dir, f'{key}.png')
            if osp.isfile(png):
                hr = cv2.imread(png, cv2.IMREAD_UNCHANGED)
            else:  # packed by an earlier run, sub-image folder removed
                hr_env = hr_env or _open_lmdb(hr_lmdb)
                hr = _decode(hr_env, key, hr_lmdb)
            d = _max_diff(_decode(lr_env, key, lr_lmdb), hr, scale, VERIFY_MARGIN)
            if d is None or d > 1:
                raise PrepareError(f'{lr_lmdb}: {key} is not bicubic(HR)/{scale} within one grey level (max '
                                   f'difference {d}), so it keeps its temporary name')
    finally:
        lr_env.close()
        if hr_env is not None:
            hr_env.close()
