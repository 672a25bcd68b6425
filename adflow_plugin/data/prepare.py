"""Prepare DF2K, DIV2K val, BSD100 and Urban100 as BasicSR's ESRGAN recipe does, with MATLAB-bicubic LR.

This is the logic behind ``basicsr prepare-data``. It follows BasicSR's own two scripts,
``scripts/data_preparation/extract_subimages.py`` (sub-images 480x480 every 240 px, ``thresh_size`` 0,
keys ``<image>_s001``) and ``create_lmdb.py`` (:func:`basicsr.utils.lmdb_util.make_lmdb_from_imgs`,
``meta_info.txt``), and makes every LR image itself with MATLAB's 8-bit bicubic
(:func:`adflow_plugin.utils.matlab_resize.imresize_uint8`), never ``cv2.resize``.

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

Sizes. A training HR image is cropped (top-left corner kept, as BasicSR's validation crop keeps it)
to a multiple of 48 = lcm(4, 6, 8, 16), so its LR at every scale is exactly HR/s, every sub-image
position is a multiple of every scale, and the HR sub-images do not depend on which scales are
requested. LR sub-images are cut from the whole-image LR at 480/s every 240/s, so the key
``0001_s007`` names the same region in every LMDB. A test GT image is cropped to a multiple of the
lcm over the requested scales of (scale, flow level layout): 8 at 4x, 48 at 6x, 16 at 8x, so one GT
folder serves every scale and LR = GT/s exactly.

Restarts. Every set folder holds ``prepare_info.json`` (settings and the source file list); a run
with other settings or sources refuses to touch it. Sub-images are written to
``<set>/<name>_sub/`` folders with a ``_done.txt`` log of finished source images; an LMDB is written
as ``<name>.partial.lmdb``, checked, then renamed, so a final ``.lmdb`` name always means complete.
Test-set PNGs are written under a temporary name and renamed. A second run skips what exists.

Held out. The last ``holdout`` (30) Flickr2K images by name (000002621 ... 000002650 of the 2650; at
most half of the Flickr2K images found) are left out of the DF2K LMDBs and written like a test set to
``DF2K_holdout``: the training options select their best checkpoint on it (the paper selects on
training data), so the evaluation sets are used only by ``basicsr test``.

Input. Files whose extension is not an image's are ignored with a warning. A file with an image
extension that cannot be decoded, or is truncated, stops the run with an error naming it.
Grayscale is replicated to three channels, an alpha channel is dropped (not composited) and 16-bit
images are converted to 8 bits (value / 257, rounded); each conversion is logged per file.
"""
import glob
import json
import math
import multiprocessing as mp
import os
import os.path as osp
import random
import re
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import reduce

import cv2
import numpy as np
from tqdm import tqdm

from adflow_plugin.data.checksums import SUMS_FILE, append_sums, read_sums, sha256_bytes, sha256_file, sha256_files
from adflow_plugin.utils import write_json
from adflow_plugin.utils.img_check import TAIL_BYTES, truncation
from adflow_plugin.utils.matlab_resize import imresize_uint8

__all__ = [
    'PrepareError', 'SCALES', 'SET_NAMES', 'TRAIN_SETS', 'TEST_SETS', 'CROP_SIZE', 'STEP', 'THRESH_SIZE',
    'TRAIN_HR_MULTIPLE', 'hr_multiple', 'output_paths', 'read_image', 'crop_to_multiple', 'subimage_positions',
    'find_source_images', 'pair_lr_folder', 'check_lmdb', 'prepare_datasets', 'verify_datasets', 'HOLDOUT_SET',
    'HOLDOUT_COUNT', 'split_holdout'
]

SCALES = (4, 6, 8)
# HR side multiple the flow's level layout needs: 2**levels, 3 levels at 4x and 4 levels at 6x and 8x
FLOW_LEVEL_MULTIPLE = {4: 8, 6: 16, 8: 16}
# BasicSR's DF2K recipe (extract_subimages.py)
CROP_SIZE = 480
STEP = 240
THRESH_SIZE = 0
PNG_COMPRESSION = 3  # test-set PNGs, as extract_subimages.py writes its sub-images
LMDB_COMPRESSION = 1  # make_lmdb_from_imgs' default
# sub-image PNGs only live until make_lmdb_from_imgs re-encodes them at its level: write them at
# that level too (PNG encoding is a third of the run time at level 3)
SUB_PNG_COMPRESSION = LMDB_COMPRESSION
IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
INFO_FILE = 'prepare_info.json'
DONE_FILE = '_done.txt'
LOCK_FILE = '.prepare-data.lock'
INFO_FORMAT = 1
# LR pixels next to a sub-image (or a pre-made LR's crop) border where bicubic(HR) cannot be
# recomputed from the HR alone: the bicubic kernel reaches 2 LR pixels
VERIFY_MARGIN = 2


class PrepareError(ValueError):
    """A problem with the input or the output folders, stated in one line."""


def _lcm(values):
    return reduce(lambda a, b: a * b // math.gcd(a, b), values, 1)


def hr_multiple(scales):
    """Multiple that every HR side must have so that each scale and its flow level layout divide it.

    ``hr_multiple([4]) == 8``, ``hr_multiple([8]) == 16``, ``hr_multiple([6]) == 48``,
    ``hr_multiple([4, 6, 8]) == 48``.
    """
    return _lcm(_lcm([s, FLOW_LEVEL_MULTIPLE[s]]) for s in scales)


TRAIN_HR_MULTIPLE = hr_multiple(SCALES)  # 48, whatever scales a run asks for


@dataclass(frozen=True)
class SourceSpec:
    """One download folder of a set: ``candidates`` are tried in order under the downloads folder."""
    source_id: str
    candidates: tuple
    archive: str


TRAIN_SETS = {
    'DF2K': (SourceSpec('DIV2K_train_HR', ('DIV2K_train_HR', ), 'DIV2K_train_HR.zip (DIV2K, 800 images)'),
             SourceSpec('Flickr2K_HR', ('Flickr2K/Flickr2K_HR', 'Flickr2K_HR'), 'Flickr2K.tar (2650 images)')),
}
TEST_SETS = {
    'DIV2K_val': (SourceSpec('DIV2K_valid_HR', ('DIV2K_valid_HR', ), 'DIV2K_valid_HR.zip (100 images)'), ),
    'BSD100': (SourceSpec('BSD100', ('BSD100', 'B100', 'BSDS100'), 'BSD100 HR images (e.g. benchmark/B100/HR)'), ),
    'Urban100': (SourceSpec('Urban100', ('Urban100', ), 'Urban100 HR images (e.g. benchmark/Urban100/HR)'), ),
}
SET_NAMES = tuple(TRAIN_SETS) + tuple(TEST_SETS)
HOLDOUT_SET = 'DF2K_holdout'  # written with DF2K: training images kept out of its LMDBs, for validation
HOLDOUT_SOURCE = 'Flickr2K_HR'
HOLDOUT_COUNT = 30


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
# images


def _check_complete(path, data):
    """Catch truncated PNG/JPEG files, which OpenCV may decode silently with a grey bottom part."""
    problem = truncation(path, data[:8], data[-TAIL_BYTES:])
    if problem:
        raise PrepareError(problem)


def read_image(path):
    """Read an image as uint8 BGR with 3 channels, converting what can be converted.

    Args:
        path (str): Image file.

    Returns:
        tuple[ndarray, list[str]]: The image (HWC, uint8, BGR) and one message per conversion made
        (grayscale replicated, alpha dropped, 16-bit converted).

    Raises:
        PrepareError: The file is empty, truncated, not an image, or of an unsupported type.
    """
    with open(path, 'rb') as f:
        data = f.read()
    if not data:
        raise PrepareError(f'{path}: empty file, not an image')
    _check_complete(path, data)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise PrepareError(f'{path}: not a readable image (damaged, truncated or not an image file)')
    notes = []
    if img.dtype == np.uint16:
        img = np.floor(img.astype(np.float64) / 257 + 0.5).astype(np.uint8)
        notes.append(f'{path}: 16-bit image converted to 8 bits (value / 257, rounded)')
    elif img.dtype != np.uint8:
        raise PrepareError(f'{path}: {img.dtype} pixels are not supported (8- or 16-bit images only)')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
        notes.append(f'{path}: grayscale image replicated to 3 channels')
    elif img.shape[2] == 4:
        img = np.ascontiguousarray(img[:, :, :3])
        notes.append(f'{path}: alpha channel dropped (not composited)')
    elif img.shape[2] != 3:
        raise PrepareError(f'{path}: {img.shape[2]}-channel images are not supported')
    return img, notes


def crop_to_multiple(img, multiple):
    """Keep the top-left ``(h // multiple * multiple, w // multiple * multiple)`` part."""
    h, w = img.shape[:2]
    return img[:h // multiple * multiple, :w // multiple * multiple]


def subimage_positions(length, crop_size, step, thresh_size=THRESH_SIZE):
    """Start offsets of sub-images along one side, as BasicSR's ``extract_subimages.py`` places them.

    Every ``step`` from 0 while the crop fits, plus one crop flush with the end when more than
    ``thresh_size`` pixels would be left over. Empty when the side is shorter than the crop.
    """
    if length < crop_size:
        return []
    positions = list(range(0, length - crop_size + 1, step))
    if length - (positions[-1] + crop_size) > thresh_size:
        positions.append(length - crop_size)
    return positions


def _write_png(path, img, level=PNG_COMPRESSION):
    """Write a PNG under a temporary name, then rename: a file with the final name is always whole."""
    ok, buf = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, level])
    if not ok:
        raise PrepareError(f'{path}: PNG encoding failed')
    tmp = path + '.part'
    data = buf.tobytes()
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, path)
    return sha256_bytes(data)


def _make_lr(hr, scale, lr_path, hr_path, hr_size, notes):
    """LR of an already cropped HR: MATLAB bicubic, or the pre-made LR file checked and cropped alike."""
    h, w = hr.shape[:2]
    if lr_path is None:
        lr = imresize_uint8(hr, 1 / scale)
    else:
        lr, lr_notes = read_image(lr_path)
        notes.extend(lr_notes)
        h0, w0 = hr_size
        if h0 % scale or w0 % scale or lr.shape[:2] != (h0 // scale, w0 // scale):
            raise PrepareError(f'{lr_path}: LR is {lr.shape[1]}x{lr.shape[0]}, but HR {hr_path} is {w0}x{h0}: '
                               f'expected exactly HR/{scale}')
        lr = lr[:h // scale, :w // scale]
    if lr.shape[:2] != (h // scale, w // scale):  # guards the resize's output size rounding
        raise PrepareError(f'{hr_path}: LR x{scale} came out {lr.shape[1]}x{lr.shape[0]}, expected '
                           f'{w // scale}x{h // scale}')
    return np.ascontiguousarray(lr)


# ----------------------------------------------------------------------------------------------------
# sources


@dataclass
class Source:
    """A found download folder: ``images`` maps the output stem to the file path."""
    set_name: str
    spec: SourceSpec
    folder: str
    images: dict
    ignored: list = field(default_factory=list)


def _list_folder(folder):
    """(image files, ignored non-image files) directly in ``folder``, sorted; hidden files skipped."""
    images, ignored = [], []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith('.') or not entry.is_file():
            continue
        (images if entry.name.lower().endswith(IMG_EXTENSIONS) else ignored).append(entry.path)
    return images, ignored


_SELFEXSR_HR = re.compile(r'^(?P<stem>.+)_SRF_\d+_HR$')


def find_source_images(folder):
    """Image files of one HR download folder, in one of the accepted layouts.

    Accepted, in this order: images directly in ``folder``; images in ``folder/HR`` (EDSR's
    ``benchmark.tar``: ``benchmark/B100/HR``, ``benchmark/Urban100/HR``); ``*_HR.*`` files in the first
    ``folder/image_SRF_*`` (the SelfExSR release; ``img_001_SRF_4_HR.png`` becomes ``img_001``).

    Returns:
        tuple[dict, list]: ``{stem: path}`` and the ignored non-image files.

    Raises:
        PrepareError: Missing folder, no images, or two files with the same stem.
    """
    if not osp.isdir(folder):
        raise PrepareError(f'folder not found: {folder}')
    images, ignored = _list_folder(folder)
    stem_of = lambda p: osp.splitext(osp.basename(p))[0]  # noqa: E731
    if not images and osp.isdir(osp.join(folder, 'HR')):
        images, more = _list_folder(osp.join(folder, 'HR'))
        ignored += more
    if not images:
        srf = sorted(d for d in os.listdir(folder) if d.startswith('image_SRF_') and osp.isdir(osp.join(folder, d)))
        if srf:
            files, _ = _list_folder(osp.join(folder, srf[0]))
            images = [p for p in files if _SELFEXSR_HR.match(stem_of(p))]
            stem_of = lambda p: _SELFEXSR_HR.match(osp.splitext(osp.basename(p))[0]).group('stem')  # noqa: E731
    if not images:
        raise PrepareError(f'{folder} holds no images (expected them directly in it, in HR/, or as '
                           'image_SRF_4/*_HR.png)')
    found = {}
    for p in images:
        stem = stem_of(p)
        if stem in found:
            raise PrepareError(f'{found[stem]} and {p} have the same name; keep one')
        found[stem] = p
    return found, ignored


def _resolve_source(downloads, set_name, spec):
    for cand in spec.candidates:
        folder = osp.join(downloads, cand)
        if osp.isdir(folder):
            images, ignored = find_source_images(folder)
            return Source(set_name, spec, folder, images, ignored)
    raise PrepareError(f'{set_name}: folder not found: {osp.join(downloads, spec.candidates[0])} (put the folder '
                       f'of {spec.archive} there, see datasets/README.md, or leave {set_name} out of --sets)')


def pair_lr_folder(lr_folder, scale, sources):
    """Match a pre-made LR folder to the HR source whose names it pairs with, one to one.

    An LR file pairs with HR ``<stem>.*`` when it is named ``<stem>.*`` or ``<stem>x<scale>.*`` (DIV2K's
    and Flickr2K's official ``DIV2K_train_LR_bicubic/X4/0001x4.png``). Sizes are checked when read.

    Returns:
        tuple[Source, dict]: The source and ``{stem: LR path}``.

    Raises:
        PrepareError: No source pairs, or some names have no partner on either side.
    """
    if not osp.isdir(lr_folder):
        raise PrepareError(f'LR folder not found: {lr_folder}')
    files, _ = _list_folder(lr_folder)
    if not files:
        raise PrepareError(f'LR folder {lr_folder} holds no images')
    best = None
    for src in sources:
        paired, extra = {}, []
        for p in files:
            stem = osp.splitext(osp.basename(p))[0]
            if stem.endswith(f'x{scale}') and stem[:-len(f'x{scale}')] in src.images:
                stem = stem[:-len(f'x{scale}')]
            (extra.append(p) if stem not in src.images else paired.__setitem__(stem, p))
        if best is None or len(paired) > len(best[1]):
            best = (src, paired, extra)
    src, paired, extra = best
    if not paired:
        raise PrepareError(f'LR folder {lr_folder}: no file pairs with an HR image of '
                           f'{", ".join(s.folder for s in sources)} (e.g. {osp.basename(files[0])})')
    missing = sorted(set(src.images) - set(paired))
    if missing or extra:
        raise PrepareError(
            f'LR folder {lr_folder} does not pair with HR folder {src.folder}: {len(missing)} HR images without '
            f'LR{" (e.g. " + missing[0] + ")" if missing else ""}, {len(extra)} LR images without HR'
            f'{" (e.g. " + osp.basename(extra[0]) + ")" if extra else ""}')
    return src, paired


# ----------------------------------------------------------------------------------------------------
# set folders: settings stamp, lock, progress logs


def _sources_info(sources):
    return {src.spec.source_id: {osp.basename(p): osp.getsize(p) for p in src.images.values()} for src in sources}


def _sources_sha256(sources, workers):
    """``{source id: {file name: sha256}}``: a source replaced by another of the same size is noticed."""
    digests = sha256_files([p for src in sources for p in src.images.values()], workers)
    return {src.spec.source_id: {osp.basename(p): digests[p] for p in src.images.values()} for src in sources}


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
# parallel map


def _worker_init(parent_pid):
    """Worker setup: Ctrl-C is the parent's job, die with the parent, one OpenCV thread."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith('linux'):
        try:
            import ctypes
            ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    try:  # the main process died before prctl took effect
        os.kill(parent_pid, 0)
    except OSError:
        os._exit(1)
    cv2.setNumThreads(1)


def _imap(func, tasks, workers):
    """``func`` over ``tasks`` (results in completion order) in ``workers`` processes, or inline for one."""
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield func(t)
        return
    # forkserver, not fork: forking a process whose torch/OpenCV threads hold locks can deadlock the
    # children (it did, when prepare-data ran inside a process that had trained a network). Workers are
    # forked from a clean server process that has imported this module once; they die with it, and it
    # exits when the main process does.
    if 'forkserver' in mp.get_all_start_methods():
        ctx = mp.get_context('forkserver')
        ctx.set_forkserver_preload([__name__])
        # The server imports this module (seconds: torch) before it ignores Ctrl-C itself: started with SIGINT
        # ignored (which exec keeps), a Ctrl-C for the terminal's process group prints no traceback from it.
        from multiprocessing import forkserver
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN) if threading.current_thread() is \
            threading.main_thread() else None
        try:
            forkserver.ensure_running()
        finally:
            if handler is not None:
                signal.signal(signal.SIGINT, handler)
    else:
        ctx = mp.get_context('spawn')
    # A Ctrl-C while the workers are being forked is held until they exist, then acted on: interrupted
    # half-way, the server would fork a worker after this process had gone, which dies with a traceback.
    interrupted = []
    held = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    handlers = {sig: signal.signal(sig, lambda *_: interrupted.append(True)) for sig in held}
    try:
        pool = ctx.Pool(min(workers, len(tasks)), initializer=_worker_init, initargs=(os.getpid(), ))
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    try:
        if interrupted:
            raise KeyboardInterrupt
        yield from pool.imap_unordered(func, tasks)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


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


def _pack_task(task):
    """Pack one sub-image folder: ``<name>.partial.lmdb``, check it, rename it to ``<name>.lmdb``."""
    from basicsr.utils import lmdb_util
    sub_dir, lmdb_path, keys, shape, row, scale, hr_sub_dir, hr_lmdb = task
    partial = lmdb_path[:-len('.lmdb')] + '.partial.lmdb'
    shutil.rmtree(partial, ignore_errors=True)
    names = [f'{k}.png' for k in keys]
    # PNG is at worst a little larger than the raw pixels; the map is sparse, so this costs no disk
    map_size = int(len(keys) * (shape[0] * shape[1] * shape[2] * 1.1 + 4096)) + (64 << 20)
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


def _lr_info(scales, lr_map, sources):
    """Per scale, where its LR comes from: 'bicubic', or the pre-made folder of each source."""
    info = {}
    for s in scales:
        made = {src.spec.source_id: osp.abspath(lr_map[(src.spec.source_id, s)][0])
                for src in sources if (src.spec.source_id, s) in lr_map}
        info[str(s)] = made or 'bicubic'
    return info


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
            for stem, count, sub_dirs, notes in _imap(_train_image_task, tasks, workers):
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
    for lmdb_path in _imap(_pack_task, pack, workers):
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
        for stem, notes, sums in _imap(_test_image_task, tasks, workers):
            append_sums(set_dir, sums)
            for note in notes:
                bar.write(note)
            bar.update(1)
    return len(tasks)


# ----------------------------------------------------------------------------------------------------
# the held-out slice of the training data


def split_holdout(sources, count=HOLDOUT_COUNT):
    """Split DF2K's sources into (training sources, held-out source or None).

    The held-out images are the last ``count`` Flickr2K images in name order (000002621 ... 000002650
    of the full download), at most half of the Flickr2K images found; ``count`` 0 holds out nothing.
    """
    if count < 0:
        raise PrepareError(f'--holdout must be 0 or more, got {count}')
    train, held = [], None
    for src in sources:
        if src.spec.source_id == HOLDOUT_SOURCE and count:
            stems = sorted(src.images)
            take = min(count, len(stems) // 2)
            if take:
                keep, out = stems[:-take], stems[-take:]
                held = Source(HOLDOUT_SET, src.spec, src.folder, {s: src.images[s] for s in out})
                src = Source(src.set_name, src.spec, src.folder, {s: src.images[s] for s in keep}, src.ignored)
        train.append(src)
    return train, held


def _prepare_holdout_set(held, out, scales, lr_map, workers, log):
    """GT and LRbicx{s} folders of the held-out images, made exactly as a test set's."""
    return _prepare_test_set(HOLDOUT_SET, [held], out, scales, lr_map, workers, log)


# ----------------------------------------------------------------------------------------------------
# verification


def _max_diff(lr, hr, scale, margin):
    ref = imresize_uint8(hr, 1 / scale)
    if ref.shape != lr.shape:
        return None
    if margin:
        lr, ref = lr[margin:-margin, margin:-margin], ref[margin:-margin, margin:-margin]
    return int(np.abs(lr.astype(np.int16) - ref.astype(np.int16)).max())


def _load_info(set_dir):
    path = osp.join(set_dir, INFO_FILE)
    if not osp.isfile(path):
        raise PrepareError(f'{set_dir} was not prepared (no {INFO_FILE}); run basicsr prepare-data')
    with open(path) as f:
        return json.load(f)


def _verify_train_set(name, out, scales, samples, seed, log):
    set_dir = osp.join(out, name)
    info = _load_info(set_dir)
    crop = info['crop_size']
    hr_path = osp.join(set_dir, f'{name}_HR_sub.lmdb')
    if not osp.isdir(hr_path):
        raise PrepareError(f'{hr_path} is missing or incomplete; run basicsr prepare-data')
    hr_meta = check_lmdb(hr_path, expected_shape=(crop, crop, 3), samples=samples, seed=seed)
    hr_keys = [k for k, _ in hr_meta]
    log(f'{name}: {hr_path}: {len(hr_keys)} keys, database = meta_info.txt, all ({crop},{crop},3)')
    hr_env = _open_lmdb(hr_path)
    try:
        for s in scales:
            lr_path = osp.join(set_dir, f'{name}_LRbicx{s}_sub.lmdb')
            if not osp.isdir(lr_path):
                raise PrepareError(f'{lr_path} is missing or incomplete; run basicsr prepare-data')
            check_lmdb(lr_path, expected_keys=hr_keys, expected_shape=(crop // s, crop // s, 3), samples=samples,
                       seed=seed)
            lr_env = _open_lmdb(lr_path)
            worst = 0
            try:
                for key in random.Random(seed).sample(hr_keys, min(samples, len(hr_keys))):
                    d = _max_diff(_decode(lr_env, key, lr_path), _decode(hr_env, key, hr_path), s, VERIFY_MARGIN)
                    if d is None or d > 1:
                        raise PrepareError(f'{lr_path}: {key} is not bicubic(HR)/{s} within one grey level '
                                           f'(max difference {d})')
                    worst = max(worst, d)
            finally:
                lr_env.close()
            log(f'{name}: {lr_path}: keys = HR keys, all ({crop // s},{crop // s},3) = HR/{s}; '
                f'{min(samples, len(hr_keys))} samples: max |LR - bicubic(HR)| = {worst} '
                f'(interior, {VERIFY_MARGIN} px margin)')
    finally:
        hr_env.close()


def _verify_test_set(name, out, scales, samples, seed, log):
    set_dir = osp.join(out, name)
    info = _load_info(set_dir)
    multiple = info['gt_multiple']
    need = hr_multiple(scales)
    if multiple % need:
        raise PrepareError(f'{set_dir}: GT was cropped to a multiple of {multiple}, scales {scales} need {need}')
    gt_dir = osp.join(set_dir, 'GT')
    names = sorted(f for f in os.listdir(gt_dir) if f.endswith('.png')) if osp.isdir(gt_dir) else []
    expected = sum(len(v) for v in info['sources'].values())
    if len(names) != expected:
        raise PrepareError(f'{gt_dir}: {len(names)} images where {expected} were expected; run basicsr prepare-data')
    sums = read_sums(set_dir)
    checked = 0

    def check_sum(path):  # the file as prepare-data wrote it (catches an image changed or swapped since)
        nonlocal checked
        rel = osp.relpath(path, set_dir).replace(os.sep, '/')
        if rel in sums:
            if sha256_file(path) != sums[rel]:
                raise PrepareError(f'{path} is not the file prepare-data wrote (its sha256 differs from {SUMS_FILE}): '
                                   'it was changed or swapped since; delete it and run basicsr prepare-data again')
            checked += 1
            return True
        return False

    gts = {}
    for n in names:
        check_sum(osp.join(gt_dir, n))
        img = cv2.imread(osp.join(gt_dir, n), cv2.IMREAD_UNCHANGED)
        if img is None or img.ndim != 3 or img.shape[2] != 3 or img.shape[0] % multiple or img.shape[1] % multiple:
            raise PrepareError(f'{osp.join(gt_dir, n)}: not a 3-channel image with sides multiple of {multiple}')
        gts[n] = img
    log(f'{name}: {gt_dir}: {len(names)} images, sides multiples of {multiple}')
    for s in scales:
        lr_dir = osp.join(set_dir, f'LRbicx{s}')
        lr_names = sorted(f for f in os.listdir(lr_dir) if f.endswith('.png')) if osp.isdir(lr_dir) else []
        if lr_names != names:
            raise PrepareError(f'{lr_dir}: names do not pair with {gt_dir} ({len(lr_names)} vs {len(names)} images)')
        premade = info.get('lr', {}).get(str(s), 'bicubic') != 'bicubic'
        margin = VERIFY_MARGIN if premade else 0
        sample = set(random.Random(seed).sample(names, min(samples, len(names))))
        worst = 0
        for n in names:
            lr = cv2.imread(osp.join(lr_dir, n), cv2.IMREAD_UNCHANGED)
            h, w = gts[n].shape[:2]
            if lr is None or lr.shape != (h // s, w // s, 3):
                raise PrepareError(f'{osp.join(lr_dir, n)}: shape {None if lr is None else lr.shape}, expected '
                                   f'GT/{s} = {(h // s, w // s, 3)}')
            # without a recorded checksum (a folder prepared before checksums), compare every file with bicubic
            if not check_sum(osp.join(lr_dir, n)) or n in sample:
                d = _max_diff(lr, gts[n], s, margin)
                if d is None or d > 1:
                    raise PrepareError(f'{osp.join(lr_dir, n)} is not bicubic(GT)/{s} within one grey level '
                                       f'(max difference {d})')
                worst = max(worst, d)
        log(f'{name}: {lr_dir}: names and shapes pair with GT/{s}; {len(sample)} samples: max |LR - bicubic(GT)| = '
            f'{worst}{f" (interior, {margin} px margin: pre-made LR)" if margin else ""}')
    log(f'{name}: {checked} files match the sha256 recorded when they were written ({SUMS_FILE})')


def verify_datasets(out='datasets', sets=SET_NAMES, scales=SCALES, samples=20, seed=0, log=None):
    """Re-read prepared outputs and check them.

    For a training set: every LMDB's database holds exactly the images its ``meta_info.txt`` lists,
    HR and LR keys are the same, every LR shape is HR/s, and ``samples`` random LR sub-images equal
    bicubic(HR sub-image) within one grey level away from their borders. For a test set: GT sides are
    multiples of the stored multiple, LR names pair with GT, every LR is GT/s in size, and ``samples``
    random LR images equal bicubic(GT) within one grey level.

    Raises:
        PrepareError: The first problem found.
    """
    log = log or tqdm.write
    scales = sorted(set(int(s) for s in scales))
    for name in sets:
        if name in TRAIN_SETS:
            _verify_train_set(name, out, scales, samples, seed, log)
        else:
            _verify_test_set(name, out, scales, samples, seed, log)


# ----------------------------------------------------------------------------------------------------
# entry point


def default_workers():
    return max(1, min(8, os.cpu_count() or 1))


def prepare_datasets(downloads=osp.join('datasets', 'downloads'), out='datasets', sets=SET_NAMES, scales=SCALES,
                     workers=None, lr_dirs=(), crop_size=CROP_SIZE, step=STEP, keep_sub_folders=False, verify=False,
                     verify_samples=20, seed=0, log=None, holdout=HOLDOUT_COUNT):
    """Prepare the training LMDBs and test folders (the recipe in this module's docstring).

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
