"""``basicsr prepare-data``: DF2K LMDBs and DIV2K val / BSD100 / Urban100 folders, MATLAB-bicubic LR."""
import argparse

RECIPE = """\
Prepares the data every shipped options file reads, as BasicSR's ESRGAN recipe does
(scripts/data_preparation/extract_subimages.py, then create_lmdb.py), with every LR image made by
MATLAB's 8-bit bicubic (never cv2.resize), so AdFlow and ESRGAN train and test on identical data.

Recipe:
  1. Put the downloads under --downloads (default datasets/downloads), as the archives unpack:
       DIV2K_train_HR/0001.png ...          (DIV2K_train_HR.zip)
       Flickr2K/Flickr2K_HR/000001.png ...  (Flickr2K.tar)
       DIV2K_valid_HR/0801.png ...          (DIV2K_valid_HR.zip)
       BSD100/ and Urban100/                (HR images directly, in HR/, or SelfExSR's image_SRF_4/*_HR.png;
                                             BSD100 may also be named B100 or BSDS100)
  2. DF2K (DIV2K train + Flickr2K): each HR image is cropped, top-left kept, to a multiple of
     48 = lcm(4, 6, 8, 16); LR = MATLAB bicubic 1/s for each --scales; HR sub-images 480x480 every
     240 px (thresh_size 0), LR sub-images 480/s every 240/s cut from the whole-image LR, keys
     <image>_s001 ... paired across scales; each sub-image folder packed by BasicSR's
     make_lmdb_from_imgs (meta_info.txt) into <name>.partial.lmdb, checked, renamed to <name>.lmdb.
  2b. Held out: the last --holdout (30) Flickr2K images by name (at most half of those found) are kept
     out of the DF2K LMDBs and written like a test set to DF2K_holdout/GT and LRbicx<s>: the training
     options validate and select net_g_best on them, so the test sets below stay unseen until testing.
  3. DIV2K_val, BSD100, Urban100: GT cropped, top-left kept, to a multiple of the lcm over --scales of
     8 (4x), 48 (6x), 16 (8x): 48 for 4 6 8; GT/<name>.png and LRbicx<s>/<name>.png = bicubic(GT)/s.
  4. A second run skips finished outputs; an interrupted run (Ctrl-C, kill) resumes where it stopped,
     and a final .lmdb name always means a complete, checked LMDB.
  5. --verify re-reads every output: keys in each database = meta_info.txt, HR and LR keys and shapes
     pair (LR = HR/s), and sampled LR images equal bicubic(HR) within one grey level; every test-set PNG
     matches the SHA-256 recorded when it was written (<set>/SHA256SUMS), so a file changed or swapped
     since is found whatever the sample. Source images are checksummed too: one replaced by another of
     the same size is noticed on the next run.

Resulting layout (under --out, default datasets):
  DF2K/DF2K_HR_sub.lmdb  DF2K/DF2K_LRbicx{4,6,8}_sub.lmdb
  DF2K_holdout/GT  DF2K_holdout/LRbicx{4,6,8}  (held-out training images, for validation)
  DIV2K_val/GT  BSD100/GT  Urban100/GT        with LRbicx{4,6,8}/ next to each GT

Input: non-image files are ignored with a warning; an undecodable or truncated image stops the run
naming the file; grayscale is replicated to 3 channels, alpha dropped, 16-bit converted to 8-bit,
each logged per file. A set folder that holds data prepared differently is never overwritten.
See datasets/README.md.
"""


def _lr_dir(value):
    scale, sep, folder = value.partition(':')
    if not sep or not scale.isdigit() or not folder:
        raise argparse.ArgumentTypeError(f'expected SCALE:FOLDER, e.g. 4:datasets/downloads/DIV2K_train_LR_bicubic/X4, '
                                         f'got {value!r}')
    return int(scale), folder


def register(subparsers):
    from adflow_plugin.data.prepare import default_workers
    from adflow_plugin.data.recipe import CROP_SIZE, SCALES, STEP
    from adflow_plugin.data.sources import HOLDOUT_COUNT, SET_NAMES
    p = subparsers.add_parser('prepare-data', help='prepare DF2K (LMDB) and DIV2K val, BSD100, Urban100 with '
                              'MATLAB-bicubic LR at 4x/6x/8x', description=RECIPE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--downloads', default='datasets/downloads', metavar='DIR',
                   help='folder holding the downloaded archives\' folders (default: %(default)s)')
    p.add_argument('--out', default='datasets', metavar='DIR', help='output root (default: %(default)s)')
    p.add_argument('--sets', nargs='+', choices=SET_NAMES, default=list(SET_NAMES), metavar='SET',
                   help=f'sets to prepare, from {", ".join(SET_NAMES)} (default: all)')
    p.add_argument('--scales', nargs='+', type=int, choices=SCALES, default=list(SCALES), metavar='S',
                   help='LR scales, from 4 6 8 (default: all)')
    p.add_argument('--workers', type=int, default=default_workers(), metavar='N',
                   help='worker processes (default: %(default)s, one per CPU up to 8)')
    p.add_argument('--lr-dir', type=_lr_dir, action='append', default=[], metavar='SCALE:FOLDER', dest='lr_dirs',
                   help='use a pre-made LR folder (e.g. 4:datasets/downloads/DIV2K_train_LR_bicubic/X4, files '
                   '0001x4.png) instead of bicubic for the HR folder it pairs with; names must pair one to one '
                   'and sizes equal HR/SCALE. Repeatable')
    p.add_argument('--crop-size', type=int, default=CROP_SIZE, metavar='PX',
                   help='HR sub-image size (default: %(default)s, BasicSR\'s recipe)')
    p.add_argument('--step', type=int, default=STEP, metavar='PX', help='HR sub-image step (default: %(default)s)')
    p.add_argument('--holdout', type=int, default=HOLDOUT_COUNT, metavar='N',
                   help='with DF2K: keep the last N Flickr2K images (by name, at most half) out of training and '
                   'write them to DF2K_holdout for validation (default: %(default)s; 0: none)')
    p.add_argument('--keep-sub-folders', action='store_true',
                   help='keep the *_sub PNG folders the LMDBs are packed from (deleted by default; pass it on '
                   'every run to keep them)')
    p.add_argument('--verify', action='store_true',
                   help='after preparing (nothing to do when finished), re-read and check every output')
    p.add_argument('--verify-samples', type=int, default=20, metavar='N',
                   help='images per output compared with bicubic(HR) by --verify (default: %(default)s)')
    p.set_defaults(func=run_prepare_data)


def _terminated(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (kill, a job scheduler): stop as Ctrl-C does


def run_prepare_data(args):
    import signal

    from adflow_plugin.cli import INTERRUPTED, CLIError
    from adflow_plugin.data.prepare import prepare_datasets
    from adflow_plugin.data.recipe import PrepareError
    signal.signal(signal.SIGTERM, _terminated)
    try:
        prepare_datasets(downloads=args.downloads, out=args.out, sets=args.sets, scales=args.scales,
                         workers=args.workers, lr_dirs=args.lr_dirs, crop_size=args.crop_size, step=args.step,
                         keep_sub_folders=args.keep_sub_folders, verify=args.verify,
                         verify_samples=args.verify_samples, holdout=args.holdout)
    except PrepareError as e:
        raise CLIError(str(e)) from None
    except KeyboardInterrupt:
        raise CLIError('interrupted; run the same command again to resume', INTERRUPTED) from None
    return 0
