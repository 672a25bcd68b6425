"""Images per second through BasicSR's PairedImageDataset: DF2K sub-images from LMDB vs from PNG folders.

Both runs read the same sub-images (the LMDB's ``meta_info.txt`` orders the PNG folder run too), with
the same random crops and flips (same seeds), the same batch size and the same DataLoader worker
count; each is run once and both rates are printed, with a checksum showing the crops agree.

    python benchmarks/data_speed.py                          # builds a small DF2K-style set in a temp folder
    python benchmarks/data_speed.py --root datasets/DF2K     # a set prepared with --keep-sub-folders

The PNG folders are the ``DF2K_*_sub`` folders ``basicsr prepare-data --keep-sub-folders`` leaves next
to the LMDBs. Both runs read files the page cache probably holds (just written, or read by the first
run); on a cold disk the LMDB's advantage is larger.
"""
import argparse
import contextlib
import os
import os.path as osp
import random
import sys
import tempfile
import time

import numpy as np


def build_small_set(root, scale, images, workers):
    """DF2K-style downloads of generated 576x768 images, prepared with the recipe's 480/240 sub-images."""
    import cv2

    from adflow_plugin.data.prepare import prepare_datasets
    rng = np.random.default_rng(0)
    downloads = osp.join(root, 'downloads')
    for folder in ('DIV2K_train_HR', osp.join('Flickr2K', 'Flickr2K_HR')):
        os.makedirs(osp.join(downloads, folder))
    for i in range(images):
        base = cv2.resize(rng.integers(0, 256, (37, 49, 3), dtype=np.uint8), (768, 576), interpolation=cv2.INTER_CUBIC)
        img = cv2.add(base, rng.integers(0, 48, (576, 768, 3), dtype=np.uint8))
        folder, name = ('DIV2K_train_HR', f'{i + 1:04d}') if i % 2 == 0 else (osp.join('Flickr2K', 'Flickr2K_HR'),
                                                                              f'{i + 1:06d}')
        cv2.imwrite(osp.join(downloads, folder, name + '.png'), img)
    out = osp.join(root, 'datasets')
    with open(os.devnull, 'w') as quiet, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        prepare_datasets(downloads, out, sets=['DF2K'], scales=[scale], workers=workers, keep_sub_folders=True,
                         log=lambda m: None)
    return osp.join(out, 'DF2K')


def _seed_worker(worker_id):
    random.seed(1000 + worker_id)
    np.random.seed(1000 + worker_id)


def measure(opt, samples, batch_size, workers):
    """Images per second and a checksum of every GT and LQ crop, for one pass of ``samples`` images."""
    import torch
    from basicsr.data.paired_image_dataset import PairedImageDataset
    from torch.utils.data import DataLoader, Subset

    dataset = PairedImageDataset(dict(opt, io_backend=dict(opt['io_backend'])))
    indices = [i % len(dataset) for i in range(samples)]
    random.seed(1000)  # crops when workers == 0
    np.random.seed(1000)
    torch.manual_seed(0)
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=workers,
                        worker_init_fn=_seed_worker, drop_last=False)
    seen, checksum = 0, 0.0
    start = time.perf_counter()
    for batch in loader:
        seen += batch['gt'].shape[0]
        checksum += float(batch['gt'].double().sum()) + float(batch['lq'].double().sum())
    return seen / (time.perf_counter() - start), seen, checksum, len(dataset)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', help='prepared DF2K folder holding the LMDBs and the *_sub PNG folders '
                        '(default: build a small set in a temporary folder)')
    parser.add_argument('--scale', type=int, default=4, choices=(4, 6, 8))
    parser.add_argument('--gt-size', type=int, default=None, help='HR crop (default: 160, or 144 at 6x)')
    parser.add_argument('--workers', type=int, default=2, help='DataLoader workers for both runs (default: 2)')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--samples', type=int, default=512, help='images drawn in each run (default: 512)')
    parser.add_argument('--images', type=int, default=16, help='source images of the small set (default: 16)')
    args = parser.parse_args(argv)

    import adflow_plugin  # noqa: F401  (BasicSR compatibility fixes before basicsr is imported)

    gt_size = args.gt_size or (144 if args.scale == 6 else 160)
    with tempfile.TemporaryDirectory() as tmp:
        if args.root:
            root = args.root
        else:
            start = time.perf_counter()
            root = build_small_set(tmp, args.scale, args.images, max(1, args.workers))
            print(f'small set: {args.images} generated 576x768 images prepared in {time.perf_counter() - start:.1f} s '
                  f'({root})')
        name = osp.basename(osp.normpath(root))
        hr_lmdb = osp.join(root, f'{name}_HR_sub.lmdb')
        lr_lmdb = osp.join(root, f'{name}_LRbicx{args.scale}_sub.lmdb')
        hr_dir, lr_dir = hr_lmdb[:-len('.lmdb')], lr_lmdb[:-len('.lmdb')]
        for path in (hr_lmdb, lr_lmdb, hr_dir, lr_dir):
            if not osp.isdir(path):
                sys.exit(f'{path} not found: prepare the set with basicsr prepare-data --keep-sub-folders')
        common = {
            'name': name, 'type': 'PairedImageDataset', 'phase': 'train', 'scale': args.scale, 'gt_size': gt_size,
            'use_hflip': True, 'use_rot': True, 'filename_tmpl': '{}'
        }
        runs = [
            ('LMDB', dict(common, dataroot_gt=hr_lmdb, dataroot_lq=lr_lmdb, io_backend={'type': 'lmdb'})),
            ('PNG folders', dict(common, dataroot_gt=hr_dir, dataroot_lq=lr_dir, io_backend={'type': 'disk'},
                                 meta_info_file=osp.join(hr_lmdb, 'meta_info.txt'))),
        ]
        results = []
        for label, opt in runs:
            rate, seen, checksum, size = measure(opt, args.samples, args.batch_size, args.workers)
            results.append(checksum)
            print(f'{label:12s}: {rate:8.1f} images/s  ({seen} crops of {gt_size}px at x{args.scale} from {size} '
                  f'sub-images, batch {args.batch_size}, {args.workers} workers)', flush=True)
        print(f'same crops: {"yes" if results[0] == results[1] else "NO (checksums differ)"}')


if __name__ == '__main__':
    main()
