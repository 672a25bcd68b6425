"""Result folders as ``basicsr test`` writes them (flow samples, ESRGAN, GT) for small studies."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest

SCALE = 4
IMAGES = ('0801', 'img_2')  # an underscore in a name must not confuse the matching


def write_results(root, lr_size=(20, 16), images=IMAGES, seed=0):
    """LR images and three methods' SR images for them; returns the folders."""
    rng = np.random.default_rng(seed)
    dirs = {k: osp.join(str(root), k) for k in ('lr', 'flow', 'esrgan', 'gt')}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    w, h = lr_size
    for name in images:
        gt = rng.integers(0, 256, (h * SCALE, w * SCALE, 3), dtype=np.uint8)
        cv2.imwrite(osp.join(dirs['gt'], f'{name}.png'), gt)
        cv2.imwrite(osp.join(dirs['lr'], f'{name}.png'), cv2.resize(gt, (w, h), interpolation=cv2.INTER_AREA))
        for t in (0.8, 1.0):
            for s in (0, 1):
                img = rng.integers(0, 256, gt.shape, dtype=np.uint8)
                cv2.imwrite(osp.join(dirs['flow'], f'{name}_t{t:g}_s{s}_test_AdFlow_x4.png'), img)
        cv2.imwrite(osp.join(dirs['esrgan'], f'{name}_test_ESRGAN_x4.png'),
                    rng.integers(0, 256, gt.shape, dtype=np.uint8))
    return dirs


@pytest.fixture
def results(tmp_path):
    return write_results(tmp_path / 'results')


def method_args(dirs, t='1'):
    return ['--method', f'AdFlow={dirs["flow"]}:t={t}', '--method', f'ESRGAN={dirs["esrgan"]}',
            '--method', f'GT={dirs["gt"]}']
