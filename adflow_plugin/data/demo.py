"""A small paired HR/LR demo set built from the photographs that scikit-image ships.

Nothing is downloaded: the photographs are files inside the installed ``skimage/data`` folder.
HR images are cropped so that every scale and every flow level layout can take them, and LR images
are made with MATLAB bicubic on 8-bit images (:func:`adflow_plugin.utils.matlab_resize.imresize_uint8`).

Layout (what BasicSR's ``PairedImageDataset`` reads, from folders or from LMDB)::

    ROOT/train/GT/<name>.png          ROOT/train/GT.lmdb
    ROOT/train/LRbicx4/<name>.png     ROOT/train/LRbicx4.lmdb
    ROOT/val/GT/<name>.png            ROOT/val/LRbicx4/<name>.png
"""
import json
import os
import os.path as osp
import shutil
from importlib.resources import files

import cv2
import numpy as np

from adflow_plugin.utils.matlab_resize import imresize_uint8

# Colour photographs (and grey textures, replicated to three channels) from skimage/data.
TRAIN_PHOTOS = ('astronaut.png', 'rocket.jpg', 'motorcycle_left.png', 'hubble_deep_field.jpg', 'ihc.png',
                'retina.jpg', 'brick.png', 'grass.png', 'gravel.png', 'camera.png')
VAL_PHOTOS = ('chelsea.png', 'coffee.png')
# every HR side is a multiple of this: lcm of the scales 4, 6, 8 and of the flow's 2^4 level layout
HR_MULTIPLE = 48
TRAIN_MAX_SIDE = 336
VAL_SIZE = 144
DEFAULT_ROOT = osp.join('datasets', 'demo')
_STAMP = 'demo_info.json'


def skimage_data_dir():
    return str(files('skimage') / 'data')


def read_photo(name):
    """Read a skimage photograph as uint8 BGR, HWC with 3 channels."""
    path = osp.join(skimage_data_dir(), name)
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FileNotFoundError(f'scikit-image photograph {path} is missing; reinstall scikit-image')
    if img.dtype != np.uint8:
        img = (img / np.iinfo(img.dtype).max * 255).round().astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def _crop_to_multiple(img, multiple):
    h, w = img.shape[:2]
    nh, nw = h // multiple * multiple, w // multiple * multiple
    top, left = (h - nh) // 2, (w - nw) // 2
    return img[top:top + nh, left:left + nw]


def train_hr(img):
    """Shrink large photographs (MATLAB bicubic) so the longer side is at most TRAIN_MAX_SIDE, then crop."""
    longest = max(img.shape[:2])
    if longest > TRAIN_MAX_SIDE:
        img = imresize_uint8(img, TRAIN_MAX_SIDE / longest)
    return _crop_to_multiple(img, HR_MULTIPLE)


def val_hr(img):
    h, w = img.shape[:2]
    top, left = (h - VAL_SIZE) // 2, (w - VAL_SIZE) // 2
    return img[top:top + VAL_SIZE, left:left + VAL_SIZE]


def write_lmdb(folder, lmdb_path):
    """Pack a PNG folder with BasicSR's ``make_lmdb_from_imgs`` (written under a temporary name, then renamed)."""
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs

    from adflow_plugin.data.lmdb_pack import lmdb_map_size
    names = sorted(f for f in os.listdir(folder) if f.endswith('.png'))
    largest = max((cv2.imread(osp.join(folder, n), cv2.IMREAD_UNCHANGED).nbytes for n in names), default=0)
    tmp = lmdb_path[:-len('.lmdb')] + '.partial.lmdb'
    shutil.rmtree(tmp, ignore_errors=True)
    make_lmdb_from_imgs(folder, tmp, names, [osp.splitext(n)[0] for n in names], n_thread=1,
                        map_size=lmdb_map_size(len(names), largest))
    os.replace(tmp, lmdb_path)


def build_demo_dataset(root=DEFAULT_ROOT, scales=(4, ), lmdb=True, force=False):
    """Build (or reuse) the demo set under ``root``.

    Args:
        root (str): Output folder.
        scales (tuple[int]): Scales to make LR folders for (4, 6 and/or 8).
        lmdb (bool): Also pack the training folders into LMDB.
        force (bool): Rebuild even if a complete set with the same settings exists.

    Returns:
        dict: ``{'root': root, 'train': {...}, 'val': {...}}`` with the paths of each folder/LMDB.
    """
    scales = tuple(sorted(int(s) for s in scales))
    for s in scales:
        if HR_MULTIPLE % s:
            raise ValueError(f'demo scale must divide {HR_MULTIPLE} (4, 6 or 8), got {s}')
    info = {'scales': list(scales), 'lmdb': bool(lmdb), 'train': list(TRAIN_PHOTOS), 'val': list(VAL_PHOTOS),
            'train_max_side': TRAIN_MAX_SIDE, 'val_size': VAL_SIZE, 'version': 1}
    stamp = osp.join(root, _STAMP)
    paths = _paths(root, scales, lmdb)
    if not force and osp.isfile(stamp):
        with open(stamp) as f:
            if json.load(f) == info:
                return paths
    shutil.rmtree(root, ignore_errors=True)
    for split, photos, make_hr in (('train', TRAIN_PHOTOS, train_hr), ('val', VAL_PHOTOS, val_hr)):
        os.makedirs(paths[split]['gt'], exist_ok=True)
        for s in scales:
            os.makedirs(paths[split][f'lq_x{s}'], exist_ok=True)
        for photo in photos:
            name = osp.splitext(photo)[0]
            hr = make_hr(read_photo(photo))
            cv2.imwrite(osp.join(paths[split]['gt'], f'{name}.png'), hr)
            for s in scales:
                cv2.imwrite(osp.join(paths[split][f'lq_x{s}'], f'{name}.png'), imresize_uint8(hr, 1 / s))
    if lmdb:
        write_lmdb(paths['train']['gt'], paths['train']['gt_lmdb'])
        for s in scales:
            write_lmdb(paths['train'][f'lq_x{s}'], paths['train'][f'lq_x{s}_lmdb'])
    with open(stamp, 'w') as f:
        json.dump(info, f)
    return paths


def _paths(root, scales, lmdb):
    paths = {'root': root}
    for split in ('train', 'val'):
        d = {'gt': osp.join(root, split, 'GT')}
        for s in scales:
            d[f'lq_x{s}'] = osp.join(root, split, f'LRbicx{s}')
        if split == 'train' and lmdb:
            d['gt_lmdb'] = d['gt'] + '.lmdb'
            for s in scales:
                d[f'lq_x{s}_lmdb'] = d[f'lq_x{s}'] + '.lmdb'
        paths[split] = d
    return paths
