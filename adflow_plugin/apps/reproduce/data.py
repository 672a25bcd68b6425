"""Paired 4x data for ``basicsr reproduce`` from folders of photographs (MATLAB 8-bit bicubic LR).

Layout under ``DATA``::

    DATA/train/GT.lmdb  DATA/train/LRbicx4.lmdb   sub-images of the training photographs (keys paired)
    DATA/holdout/GT  DATA/holdout/LRbicx4        centre crops of the held-out training photographs
    DATA/eval/GT  DATA/eval/LRbicx4              the evaluation photographs (centre crops), same names
    DATA/data_info.json                         what was made from what (a later run reuses it)

Sub-images with less detail than ``min_detail`` are left out of the training LMDBs. Detail is the
standard deviation of the HR minus its 5x5 box mean, in [0, 1] units; the default threshold is that of
the flow's dequantisation noise, U(-1/64, 1/64) at quant 32: 1 / (32 sqrt(12)) = 0.009. Photographs with a
shallow depth of field are mostly blur: in the mate nature set, 77 % of the 64-pixel training patches
have less detail than that noise, and on them a flow's samples plus noise cannot be told from the real
patches plus noise, so stage 2's discriminator has nothing to learn (``benchmarks/discriminator_probe.py``).

The held-out photographs are chosen with the preset's seed among the training folder's images and
never enter the training LMDB; checkpoint selection uses them, as the paper selects on training data.
An evaluation image that is also a training image (same pixels) is refused.
"""
import hashlib
import json
import os
import os.path as osp
import random
import shutil

import cv2
import numpy as np

from adflow_plugin.data.demo import skimage_data_dir, write_lmdb
from adflow_plugin.data.image_ops import IMG_EXTENSIONS, read_image, subimage_positions
from adflow_plugin.data.recipe import PrepareError
from adflow_plugin.utils import write_json
from adflow_plugin.utils.matlab_resize import imresize_uint8

# scikit-image's photographs (colour, and three grey ones replicated to RGB): the default evaluation set
SKIMAGE_EVAL_PHOTOS = ('astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg', 'motorcycle_left.png',
                       'hubble_deep_field.jpg', 'ihc.png', 'retina.jpg', 'camera.png', 'moon.png', 'coins.png')
# HR sides are multiples of this: the scale times the 4x flow's LR multiple (3 levels: LR sides even)
HR_MULTIPLE = 8
INFO = 'data_info.json'
MATE_HINT = ('real 2K photographs: `apt-get download mate-backgrounds && dpkg -x mate-backgrounds_*.deb mate` '
             'then --train-dir mate/usr/share/backgrounds/mate/nature')


def list_images(folder):
    """Image files directly in ``folder``, sorted by name."""
    if not osp.isdir(folder):
        raise PrepareError(f'{folder} is not a folder of photographs')
    files = sorted(osp.abspath(osp.join(folder, f)) for f in os.listdir(folder) if f.lower().endswith(IMG_EXTENSIONS))
    if not files:
        raise PrepareError(f'{folder} holds no image files ({", ".join(IMG_EXTENSIONS)})')
    return files


def default_eval_files():
    data = skimage_data_dir()
    return [osp.join(data, name) for name in SKIMAGE_EVAL_PHOTOS]


def _stem(path):
    return osp.splitext(osp.basename(path))[0]


def _file_digest(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def _pixels_digest(img):
    return hashlib.sha256(img.tobytes() + repr(img.shape).encode()).hexdigest()


def centre_crop(img, size, multiple=HR_MULTIPLE):
    """The centre ``size`` x ``size`` (or smaller side) crop, cut down to a multiple of ``multiple``."""
    h, w = img.shape[:2]
    ch, cw = min(h, size) // multiple * multiple, min(w, size) // multiple * multiple
    if ch == 0 or cw == 0:
        raise PrepareError(f'image of {w}x{h} is smaller than {multiple} pixels')
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top:top + ch, left:left + cw]


def detail(img):
    """Standard deviation of ``img`` (uint8 HxWxC) minus its 5x5 box mean, in [0, 1] units."""
    img = img.astype(np.float32) / 255
    return float((img - cv2.blur(img, (5, 5), borderType=cv2.BORDER_REFLECT)).std())


def _write_pair(folder_gt, folder_lr, name, hr, scale):
    cv2.imwrite(osp.join(folder_gt, f'{name}.png'), hr)
    cv2.imwrite(osp.join(folder_lr, f'{name}.png'), imresize_uint8(hr, 1 / scale))


def _pair_folders(root, scale):
    gt, lr = osp.join(root, 'GT'), osp.join(root, f'LRbicx{scale}')
    os.makedirs(gt, exist_ok=True)
    os.makedirs(lr, exist_ok=True)
    return gt, lr


def split_holdout(files, count, seed):
    """(training files, held-out files): ``count`` files drawn with ``seed``, at least one left to train on."""
    if count < 0:
        raise PrepareError(f'--holdout {count}: the number of held-out photographs cannot be negative')
    if count >= len(files):
        raise PrepareError(f'--holdout {count} leaves no training photograph out of {len(files)}')
    held = set(random.Random(seed).sample(range(len(files)), count))
    return [f for i, f in enumerate(files) if i not in held], [f for i, f in enumerate(files) if i in held]


def _unique_stems(files, what):
    stems = [_stem(f) for f in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise PrepareError(f'{what}: several files share the name {dup[0]} (different extensions); rename them')


def prepare_data(root, train_files, eval_files, preset, log=print):
    """Make the training LMDBs, the held-out and evaluation folders; reuse them if made from the same input.

    Returns:
        dict: paths (``train_gt``, ``train_lq``, ``holdout_gt``, ``holdout_lq``, ``eval_gt``, ``eval_lq``) and
        the lists of photographs used for each part.
    """
    scale = preset['scale']
    _unique_stems(train_files, 'training photographs')
    _unique_stems(eval_files, 'evaluation photographs')
    train_files, holdout_files = split_holdout(train_files, preset['holdout'], preset['seed'])
    min_detail = preset.get('min_detail', 0.0)
    info = dict(version=1, scale=scale, crop=preset['crop'], step=preset['step'], min_detail=min_detail,
                eval_size=preset['eval_size'],
                holdout_size=preset['holdout_size'], train=train_files, holdout=holdout_files, eval=eval_files,
                sha256={f: _file_digest(f) for f in train_files + holdout_files + eval_files})
    paths = dict(train_gt=osp.join(root, 'train', 'GT.lmdb'), train_lq=osp.join(root, 'train', f'LRbicx{scale}.lmdb'),
                 holdout_gt=osp.join(root, 'holdout', 'GT'), holdout_lq=osp.join(root, 'holdout', f'LRbicx{scale}'),
                 eval_gt=osp.join(root, 'eval', 'GT'), eval_lq=osp.join(root, 'eval', f'LRbicx{scale}'))
    result = dict(paths, train_files=train_files, holdout_files=holdout_files, eval_files=eval_files)
    info_path = osp.join(root, INFO)
    if osp.isfile(info_path):
        with open(info_path) as f:
            if json.load(f) == info:
                log(f'data: reusing {root}')
                return result
    shutil.rmtree(root, ignore_errors=True)

    train_digests = {}
    sub_gt, sub_lr = _pair_folders(osp.join(root, 'train', 'sub'), scale)
    count = kept = 0
    for path in train_files:
        img, _ = read_image(path)
        train_digests[_pixels_digest(img)] = path
        for y in subimage_positions(img.shape[0], preset['crop'], preset['step']):
            for x in subimage_positions(img.shape[1], preset['crop'], preset['step']):
                hr = img[y:y + preset['crop'], x:x + preset['crop']]
                count += 1
                if min_detail and detail(hr) < min_detail:
                    continue
                kept += 1
                _write_pair(sub_gt, sub_lr, f'{_stem(path)}_y{y:05d}_x{x:05d}', hr, scale)
    if count == 0:
        shutil.rmtree(root, ignore_errors=True)
        raise PrepareError(f'no training photograph is at least {preset["crop"]} pixels on each side')
    if kept == 0:
        shutil.rmtree(root, ignore_errors=True)
        raise PrepareError(f'none of the {count} training sub-images has detail {min_detail:g} or more; these '
                           'photographs are too smooth to train on, or lower --min-detail (0 keeps every one)')
    log(f'data: {kept} training sub-images of {preset["crop"]} px from {len(train_files)} photographs' +
        (f' ({count - kept} of {count} with detail under {min_detail:g} left out)' if min_detail else ''))
    write_lmdb(sub_gt, paths['train_gt'])
    write_lmdb(sub_lr, paths['train_lq'])
    shutil.rmtree(osp.join(root, 'train', 'sub'))

    gt, lr = _pair_folders(osp.join(root, 'holdout'), scale)
    for path in holdout_files:
        img, _ = read_image(path)
        train_digests[_pixels_digest(img)] = path
        _write_pair(gt, lr, _stem(path), centre_crop(img, preset['holdout_size']), scale)
    gt, lr = _pair_folders(osp.join(root, 'eval'), scale)
    for path in eval_files:
        img, _ = read_image(path)
        if _pixels_digest(img) in train_digests:
            raise PrepareError(f'evaluation image {path} is also a training image '
                               f'({train_digests[_pixels_digest(img)]}); evaluate on photographs not trained on')
        _write_pair(gt, lr, _stem(path), centre_crop(img, preset['eval_size']), scale)
    log(f'data: {len(holdout_files)} held-out and {len(eval_files)} evaluation photographs '
        f'(centre crops of {preset["holdout_size"]} and {preset["eval_size"]} px)')
    write_json(info_path, info)
    return result
