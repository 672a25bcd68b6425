"""``basicsr prepare-data --verify``: re-read the prepared sets and check them against their sources' recipe."""
import json
import os
import os.path as osp
import random

import cv2
from tqdm import tqdm

from adflow_plugin.data.checksums import SUMS_FILE, read_sums, sha256_file
from adflow_plugin.data.image_ops import _max_diff
from adflow_plugin.data.lmdb_pack import _decode, _open_lmdb, check_lmdb
from adflow_plugin.data.recipe import INFO_FILE, SCALES, VERIFY_MARGIN, PrepareError, hr_multiple
from adflow_plugin.data.sources import SET_NAMES, TRAIN_SETS

__all__ = ['verify_datasets']


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
