"""Prepare DF2K, DIV2K val, BSD100 and Urban100 as BasicSR's ESRGAN recipe does, with MATLAB-bicubic LR.

This is the logic behind ``basicsr prepare-data``. It follows BasicSR's own two scripts,
``scripts/data_preparation/extract_subimages.py`` (sub-images 480x480 every 240 px, ``thresh_size`` 0,
keys ``<image>_s001``) and ``create_lmdb.py`` (:func:`basicsr.utils.lmdb_util.make_lmdb_from_imgs`,
``meta_info.txt``), and makes every LR image itself with MATLAB's 8-bit bicubic
(:func:`adflow_plugin.utils.matlab_resize.imresize_uint8`), never ``cv2.resize``.

The steps live in their own modules: :mod:`.sources` (the download layouts), :mod:`.image_ops` (reading,
cropping, sub-images, LR), :mod:`.lmdb_pack` (writing and checking LMDBs), :mod:`.verify` (``--verify``),
:mod:`.recipe` (the recipe's settings). This module runs them: set folders, their lock, resuming, and the
worker processes (:mod:`.parallel`).

Layout, relative to the working directory (every shipped options file points into it)::

    datasets/downloads/DIV2K_train_HR/0001.png ...          the original archives' folders (input)
    datasets/downloads/Flickr2K/Flickr2K_HR/000001.png ...
    datasets/downloads/DIV2K_valid_HR/0801.png ...
    datasets/downloads/BSD100/  datasets/downloads/Urban100/
    datasets/DF2K/DF2K_HR_sub.lmdb  DF2K_LRbicx{4,6,8}_sub.lmdb   training set (LMDB, keys paired)
    datasets/DF2K_holdout/GT  LRbicx{4,6,8}                        held-out training images (validation)
    datasets/DIV2K_val/GT  LRbicx{4,6,8}                           test sets (PNG folders, same names)
    datasets/BSD100/GT     LRbicx{4,6,8}
    datasets/Urban100/GT   LRbicx{4,6,8}

Restarts. Every set folder holds ``prepare_info.json`` (settings and the source file list); a run
with other settings or sources refuses to touch it. Sub-images are written to
``<set>/<name>_sub/`` folders with a ``_done.txt`` log of finished source images; an LMDB is written
as ``<name>.partial.lmdb``, checked, then renamed, so a final ``.lmdb`` name always means complete.
Test-set PNGs are written under a temporary name and renamed. A second run skips what exists.
"""
import glob
import json
import os
import os.path as osp
import re
import shutil
import time
from contextlib import contextmanager

import numpy as np
from tqdm import tqdm

from adflow_plugin.data.checksums import append_sums, read_sums, sha256_files
from adflow_plugin.data.image_ops import _make_lr, _write_png, crop_to_multiple, read_image, subimage_positions
from adflow_plugin.data.lmdb_pack import _pack_task
from adflow_plugin.data.parallel import imap
from adflow_plugin.data.recipe import (CROP_SIZE, INFO_FILE, SCALES, STEP, SUB_PNG_COMPRESSION, THRESH_SIZE,
                                       TRAIN_HR_MULTIPLE, PrepareError, hr_multiple)
from adflow_plugin.data.sources import (HOLDOUT_COUNT, HOLDOUT_SET, SET_NAMES, TEST_SETS, TRAIN_SETS, _lr_info,
                                        _resolve_source, _sources_info, _sources_sha256, pair_lr_folder, split_holdout)
from adflow_plugin.data.verify import _verify_test_set, _verify_train_set, verify_datasets
from adflow_plugin.utils import write_json

__all__ = ['output_paths', 'prepare_datasets', 'default_workers']

DONE_FILE = '_done.txt'
LOCK_FILE = '.prepare-data.lock'
INFO_FORMAT = 1


def output_paths(out='datasets', scales=SCALES):
    """Where each set's outputs go: ``{set: {'gt': path, 'lq_x4': path, ...}}`` (the fixed layout)."""
    paths = {}
    for name in TRAIN_SETS:
        d = {'gt': osp.join(out, name, f'{name}_HR_sub.lmdb')}
        for s in scales:
            d[f'lq_x{s}'] = osp.join(out, name, f'{name}_LRbicx{s}_sub.lmdb')
        paths[name] = d
    for name in tuple(TEST_SETS) + (HOLDOUT_SET, ):
        d = {'gt': osp.join(out, name, 'GT')}
        for s in scales:
            d[f'lq_x{s}'] = osp.join(out, name, f'LRbicx{s}')
        paths[name] = d
    return paths


# ----------------------------------------------------------------------------------------------------
# set folders: settings stamp, lock, progress logs


def _claim_set_dir(set_dir, info, lr_info, finished, log):
    """Create or reuse a set folder; refuse one that holds other data. Returns the stored info.

    ``finished(old_info)`` tells whether the folder holds a usable output (a final LMDB, a complete
    test set). A folder holding only an earlier run's partial work with other settings or sources
    (e.g. one stopped by a damaged download that has since been replaced) is started over.
    """
    stamp = osp.join(set_dir, INFO_FILE)
    old = None
    if osp.isfile(stamp):
        with open(stamp) as f:
            old = json.load(f)
        if _info_diff(old, info, lr_info) and not finished(old):
            log(f'{set_dir}: starting over, its partial content was prepared differently '
                f'({"; ".join(_info_diff(old, info, lr_info))})')
            shutil.rmtree(set_dir)
            old = None
    if old is not None:
        diff = _info_diff(old, info, lr_info)
        old_lr = old.get('lr', {})
        if diff:
            raise PrepareError(f'{set_dir} already holds data prepared differently ({"; ".join(diff)}); remove it, '
                               'or choose another --out, to prepare it again')
        merged = dict(old, lr=dict(old_lr, **lr_info))
        merged.setdefault('source_sha256', info.get('source_sha256'))  # a folder stamped before checksums
    else:
        if osp.isdir(set_dir) and os.listdir(set_dir):
            raise PrepareError(f'{set_dir} already holds files not written by prepare-data (e.g. '
                               f'{sorted(os.listdir(set_dir))[0]}); move them away, or choose another --out')
        merged = dict(info, lr=lr_info)
    os.makedirs(set_dir, exist_ok=True)
    if merged != old:
        write_json(stamp, merged)
    return merged


def _info_diff(old, info, lr_info):
    """What differs between a stored and a wanted ``prepare_info.json``, as short phrases."""
    diff = [f'{k} {old.get(k)} -> {info.get(k)}' for k in sorted(set(info) | set(old))
            if k not in ('lr', 'sources', 'source_sha256') and old.get(k) != info.get(k)]
    if old.get('sources') != info['sources']:
        diff.append('source images differ')
    elif old.get('source_sha256') and info.get('source_sha256') and old['source_sha256'] != info['source_sha256']:
        changed = sorted(name for sid, files in info['source_sha256'].items() for name, digest in files.items()
                         if old['source_sha256'].get(sid, {}).get(name) != digest)
        more = f' and {len(changed) - 1} more' if len(changed) > 1 else ''
        diff.append(f'source image {changed[0] if changed else "?"}{more} changed (same size, other content: sha256 '
                    'differs)')
    old_lr = old.get('lr', {})
    diff += [f'LR x{s} from {old_lr[s]} -> {v}' for s, v in lr_info.items() if s in old_lr and old_lr[s] != v]
    return diff


def _read_done(sub_dir):
    """``{stem: number of sub-images}`` from a sub-image folder's log; a torn last line is ignored."""
    done = {}
    path = osp.join(sub_dir, DONE_FILE)
    if osp.isfile(path):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit() and line.endswith('\n'):
                    done[parts[0]] = int(parts[1])
    return done


@contextmanager
def _locked(out, log):
    """One prepare-data at a time per output folder (also waits for a killed run's workers to go)."""
    os.makedirs(out, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(osp.join(out, LOCK_FILE), 'w') as f:
        deadline, told = time.time() + 30, False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.time() > deadline:
                    raise PrepareError(f'another prepare-data is writing to {out} (lock {f.name}); wait for it '
                                       'to finish') from None
                if not told:
                    log(f'waiting for another prepare-data on {out} to finish...')
                    told = True
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------------------------------
# training set: sub-images, LMDB


def _train_image_task(task):
    """Cut one source image into HR and LR sub-images for the outputs it still lacks."""
    stem, hr_path, targets, crop_size, step = task
    hr, notes = read_image(hr_path)
    hr_size = hr.shape[:2]
    hr = crop_to_multiple(hr, TRAIN_HR_MULTIPLE)
    h, w = hr.shape[:2]
    hs, ws = subimage_positions(h, crop_size, step), subimage_positions(w, crop_size, step)
    if not hs or not ws:
        raise PrepareError(f'{hr_path}: {hr_size[1]}x{hr_size[0]} image ({w}x{h} after cropping to a multiple of '
                           f'{TRAIN_HR_MULTIPLE}) is smaller than the {crop_size}x{crop_size} sub-image; remove it '
                           'or lower --crop-size')
    for sub_dir, scale, lr_path in targets:
        img = hr if scale == 1 else _make_lr(hr, scale, lr_path, hr_path, hr_size, notes)
        size = crop_size // scale
        index = 0
        for y in hs:
            for x in ws:
                index += 1
                sub = img[y // scale:y // scale + size, x // scale:x // scale + size]
                _write_png(osp.join(sub_dir, f'{stem}_s{index:03d}.png'), np.ascontiguousarray(sub),
                           SUB_PNG_COMPRESSION)
    return stem, len(hs) * len(ws), [t[0] for t in targets], notes


def _prepare_train_set(name, sources, out, scales, lr_map, crop_size, step, workers, keep_sub_folders, log):
    set_dir = osp.join(out, name)
    info = {
        'format': INFO_FORMAT, 'kind': 'train', 'crop_size': crop_size, 'step': step, 'thresh_size': THRESH_SIZE,
        'hr_multiple': TRAIN_HR_MULTIPLE, 'sources': _sources_info(sources),
        'source_sha256': _sources_sha256(sources, workers)
    }
    outputs = [(1, f'{name}_HR_sub')] + [(s, f'{name}_LRbicx{s}_sub') for s in scales]
    _claim_set_dir(set_dir, info, _lr_info(scales, lr_map, sources),
                   lambda old: bool(glob.glob(osp.join(glob.escape(set_dir), '*_sub.lmdb'))), log)
    pending = [(s, n) for s, n in outputs if not osp.isdir(osp.join(set_dir, n + '.lmdb'))]
    if not pending:
        _remove_packed_sub_folders(set_dir, outputs, keep_sub_folders)
        log(f'{name}: complete ({", ".join(n + ".lmdb" for _, n in outputs)}), nothing to do')
        return 0, 0
    images = sorted((stem, path, src.spec.source_id) for src in sources for stem, path in src.images.items())
    done = {}
    for _, n in pending:
        os.makedirs(osp.join(set_dir, n), exist_ok=True)
        done[n] = _read_done(osp.join(set_dir, n))
    tasks = []
    for stem, path, sid in images:
        targets = [(osp.join(set_dir, n), s, lr_map.get((sid, s), (None, {}))[1].get(stem)) for s, n in pending
                   if stem not in done[n]]
        if targets:
            tasks.append((stem, path, targets, crop_size, step))
    if tasks:
        log(f'{name}: cutting {len(tasks)} of {len(images)} images into {crop_size}px sub-images for '
            f'{", ".join(n for _, n in pending)} ({workers} workers)')
    logs = {n: open(osp.join(set_dir, n, DONE_FILE), 'a') for _, n in pending}
    try:
        with tqdm(total=len(images), initial=len(images) - len(tasks), desc=f'{name} sub-images', unit='image',
                  dynamic_ncols=True) as bar:
            for stem, count, sub_dirs, notes in imap(_train_image_task, tasks, workers):
                for note in notes:
                    bar.write(note)
                for d in sub_dirs:
                    n = osp.basename(d)
                    logs[n].write(f'{stem} {count}\n')
                    logs[n].flush()
                    done[n][stem] = count
                bar.update(1)
    finally:
        for f in logs.values():
            f.close()
    # pack every pending output; the LMDBs are independent, so they are written in parallel
    pack = []
    for row, (s, n) in enumerate(pending):
        keys = sorted(f'{stem}_s{i:03d}' for stem, _, _ in images for i in range(1, done[n][stem] + 1))
        size = crop_size // s
        pack.append((osp.join(set_dir, n), osp.join(set_dir, n + '.lmdb'), keys, (size, size, 3), row, s,
                     osp.join(set_dir, outputs[0][1]), osp.join(set_dir, outputs[0][1] + '.lmdb')))
    log(f'{name}: packing {len(pack)} LMDBs with make_lmdb_from_imgs ({", ".join(n + ".lmdb" for _, n in pending)})')
    for lmdb_path in imap(_pack_task, pack, workers):
        log(f'{name}: {lmdb_path} written and checked')
    _remove_packed_sub_folders(set_dir, outputs, keep_sub_folders)
    return len(tasks), len(pack)


def _remove_packed_sub_folders(set_dir, outputs, keep):
    """Delete the sub-image PNG folders whose LMDB is complete (also a killed run's leftovers)."""
    if keep:
        return
    for _, n in outputs:
        sub_dir = osp.join(set_dir, n)
        if osp.isdir(osp.join(set_dir, n + '.lmdb')) and osp.isfile(osp.join(sub_dir, DONE_FILE)):
            shutil.rmtree(sub_dir, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------
# test sets: GT and LRbicx{s} folders


def _test_image_task(task):
    """Write one test image's GT and LR files that are missing."""
    stem, hr_path, multiple, targets = task
    hr, notes = read_image(hr_path)
    hr_size = hr.shape[:2]
    hr = crop_to_multiple(hr, multiple)
    if hr.size == 0:
        raise PrepareError(f'{hr_path}: {hr_size[1]}x{hr_size[0]} image is smaller than {multiple} px, the multiple '
                           'every GT side is cropped to')
    sums = {}
    for folder, scale, lr_path in targets:
        img = hr if scale == 1 else _make_lr(hr, scale, lr_path, hr_path, hr_size, notes)
        sums[f'{osp.basename(folder)}/{stem}.png'] = _write_png(osp.join(folder, f'{stem}.png'), img)
    return stem, notes, sums


def _test_set_finished(set_dir, info):
    """Whether GT and every LR folder of an earlier run hold all of its images."""
    n = sum(len(v) for v in info.get('sources', {}).values())
    folders = ['GT'] + [f'LRbicx{s}' for s in info.get('lr', {})]
    return all(osp.isdir(osp.join(set_dir, f)) and
               sum(e.endswith('.png') for e in os.listdir(osp.join(set_dir, f))) == n for f in folders)


def _prepare_test_set(name, sources, out, scales, lr_map, workers, log):
    set_dir = osp.join(out, name)
    multiple = hr_multiple(scales)
    info = {'format': INFO_FORMAT, 'kind': 'test', 'gt_multiple': multiple, 'sources': _sources_info(sources),
            'source_sha256': _sources_sha256(sources, workers)}
    _claim_set_dir(set_dir, info, _lr_info(scales, lr_map, sources), lambda old: _test_set_finished(set_dir, old),
                   log)
    folders = [(1, osp.join(set_dir, 'GT'))] + [(s, osp.join(set_dir, f'LRbicx{s}')) for s in scales]
    for _, folder in folders:
        os.makedirs(folder, exist_ok=True)
        for f in os.listdir(folder):  # a killed run's half-written file
            if f.endswith('.part'):
                os.remove(osp.join(folder, f))
    # a file renamed into place by a run killed before it recorded the checksum is whole: record it now
    sums = read_sums(set_dir)
    unrecorded = [osp.join(folder, f) for _, folder in folders for f in sorted(os.listdir(folder))
                  if f.endswith('.png') and f'{osp.basename(folder)}/{f}' not in sums]
    append_sums(set_dir, {f'{osp.basename(osp.dirname(p))}/{osp.basename(p)}': d
                          for p, d in sha256_files(unrecorded, workers).items()})
    tasks = []
    for src in sources:
        for stem, path in sorted(src.images.items()):
            targets = [(folder, s, lr_map.get((src.spec.source_id, s), (None, {}))[1].get(stem))
                       for s, folder in folders if not osp.isfile(osp.join(folder, f'{stem}.png'))]
            if targets:
                tasks.append((stem, path, multiple, targets))
    total = sum(len(src.images) for src in sources)
    if not tasks:
        log(f'{name}: complete ({", ".join(osp.basename(f) for _, f in folders)}), nothing to do')
        return 0
    log(f'{name}: writing GT (cropped to a multiple of {multiple}) and LR x{", x".join(map(str, scales))} for '
        f'{len(tasks)} of {total} images ({workers} workers)')
    with tqdm(total=total, initial=total - len(tasks), desc=name, unit='image', dynamic_ncols=True) as bar:
        for stem, notes, sums in imap(_test_image_task, tasks, workers):
            append_sums(set_dir, sums)
            for note in notes:
                bar.write(note)
            bar.update(1)
    return len(tasks)


def _prepare_holdout_set(held, out, scales, lr_map, workers, log):
    """GT and LRbicx{s} folders of the held-out images, made exactly as a test set's."""
    return _prepare_test_set(HOLDOUT_SET, [held], out, scales, lr_map, workers, log)


# ----------------------------------------------------------------------------------------------------
# entry point


def default_workers():
    return max(1, min(8, os.cpu_count() or 1))


def prepare_datasets(downloads=osp.join('datasets', 'downloads'), out='datasets', sets=SET_NAMES, scales=SCALES,
                     workers=None, lr_dirs=(), crop_size=CROP_SIZE, step=STEP, keep_sub_folders=False, verify=False,
                     verify_samples=20, seed=0, log=None, holdout=HOLDOUT_COUNT):
    """Prepare the training LMDBs and test folders (the recipe in this module's docstring and :mod:`.recipe`'s).

    Args:
        downloads (str): Folder holding the downloaded archives' folders.
        out (str): Output root (``datasets``).
        sets (list[str]): Any of ``SET_NAMES``.
        scales (list[int]): Any of 4, 6, 8.
        workers (int | None): Worker processes. Default: up to 8, one per CPU.
        lr_dirs (list[tuple[int, str]]): Pre-made LR folders ``(scale, folder)``, each paired by name
            with one HR download folder; their images are used instead of bicubic after a size check.
        crop_size (int): HR sub-image size (480 in BasicSR's recipe).
        step (int): HR sub-image step (240).
        keep_sub_folders (bool): Keep the ``*_sub`` PNG folders the LMDBs are packed from.
        verify (bool): Afterwards re-read every output (:func:`verify_datasets`).
        verify_samples (int): Images per output compared with bicubic(HR) by ``verify``.
        seed (int): Seed of the verification sample.
        log (callable | None): Where messages go. Default: ``tqdm.write``.
        holdout (int): With DF2K, this many Flickr2K images (the last by name, at most half) are kept out
            of the LMDBs and written to ``DF2K_holdout`` for validation (:func:`split_holdout`). Default: 30.

    Returns:
        dict: ``{'images': source images processed, 'lmdbs': LMDBs written}`` (both 0 when every
        output already existed).

    Raises:
        PrepareError: Bad input or output folders, stated in one line.
    """
    log = log or tqdm.write
    workers = default_workers() if workers is None else int(workers)
    scales = sorted(set(int(s) for s in scales))
    sets = list(dict.fromkeys(sets))
    if workers < 1:
        raise PrepareError(f'--workers must be at least 1, got {workers}')
    for s in scales:
        if s not in SCALES:
            raise PrepareError(f'scale {s} is not supported (choose from {", ".join(map(str, SCALES))})')
    for name in sets:
        if name not in SET_NAMES:
            raise PrepareError(f'unknown set {name} (choose from {", ".join(SET_NAMES)})')
    if any(n in TRAIN_SETS for n in sets):
        for s in scales:
            if crop_size <= 0 or step <= 0 or crop_size % s or step % s:
                raise PrepareError(f'--crop-size {crop_size} and --step {step} must be positive multiples of every '
                                   f'scale (x{s}) so that LR sub-images stay aligned')
    # every input problem is found before any work starts
    sources = {name: [_resolve_source(downloads, name, spec) for spec in {**TRAIN_SETS, **TEST_SETS}[name]]
               for name in sets}
    all_sources = [src for name in sets for src in sources[name]]
    stems = {}
    for name in sets:
        if name in TRAIN_SETS:
            for src in sources[name]:
                for stem, path in src.images.items():
                    if stem in stems:
                        raise PrepareError(f'{stems[stem]} and {path} would both give keys {stem}_s001...; rename one')
                    if not re.fullmatch(r'[A-Za-z0-9_\-]+', stem):
                        raise PrepareError(f'{path}: LMDB keys are made from file names; use letters, digits, _ '
                                           'and - only')
                    stems[stem] = path
    for src in all_sources:
        if src.ignored:
            shown = ', '.join(osp.basename(p) for p in src.ignored[:5])
            log(f'warning: ignoring {len(src.ignored)} non-image files in {src.folder}: {shown}'
                f'{", ..." if len(src.ignored) > 5 else ""}')
    lr_map = {}
    for scale, folder in lr_dirs:
        if int(scale) not in scales:
            raise PrepareError(f'--lr-dir {scale}:{folder}: scale {scale} is not among --scales')
        src, paired = pair_lr_folder(folder, int(scale), all_sources)
        key = (src.spec.source_id, int(scale))
        if key in lr_map:
            raise PrepareError(f'two LR folders for {src.folder} at x{scale}: {lr_map[key][0]} and {folder}')
        lr_map[key] = (folder, paired)
        log(f'x{scale} LR of {src.folder} taken from {folder} ({len(paired)} images, sizes checked on read)')
    held = None
    if any(n in TRAIN_SETS for n in sets):
        sources['DF2K'], held = split_holdout(sources['DF2K'], int(holdout))

    images = lmdbs = 0
    with _locked(out, log):
        for name in sets:
            if name in TRAIN_SETS:
                n, m = _prepare_train_set(name, sources[name], out, scales, lr_map, crop_size, step, workers,
                                          keep_sub_folders, log)
                if m:  # new LMDBs: check keys pair across scales and sample bicubic
                    _verify_train_set(name, out, scales, min(3, verify_samples), seed, log)
                lmdbs += m
                if held is not None:
                    n += _prepare_holdout_set(held, out, scales, lr_map, workers, log)
            else:
                n = _prepare_test_set(name, sources[name], out, scales, lr_map, workers, log)
            images += n
        if verify:
            verify_datasets(out, sets, scales, verify_samples, seed, log)
            if held is not None:
                _verify_test_set(HOLDOUT_SET, out, scales, verify_samples, seed, log)
    if images or lmdbs:
        log(f'prepare-data: {images} images processed, {lmdbs} LMDBs written under {out}')
    else:
        log(f'prepare-data: nothing to do, every output under {out} is complete (0 images processed)')
    return {'images': images, 'lmdbs': lmdbs}
