"""``basicsr reproduce``: the paper's Table 2 and Fig. 7 claims in miniature, on any folders of photographs."""
import argparse

DESCRIPTION = """\
Trains, with one small shared encoder size and identical data, patches, batch, iterations and seed:
the L1 RRDB (the Fig. 7 ladder's bottom rung), ESRGAN from it (BasicSR's L1 + perceptual + GAN recipe),
BaseFlow (NLL) and AdFlow (NLL + GAN, from BaseFlow) at flow depths K = 1, 2, 4, all through
`basicsr train` and `basicsr test` on generated options files (OUT/options). Then it measures every
model on the evaluation photographs, per image (PSNR, SSIM, LR-PSNR, LPIPS; for flows LR-PSNR and
diversity over the samples) beside bicubic upscaling, and writes OUT/table.md (the paper's Table 2
layout, the Fig. 7 ladder, LR-PSNR per image), OUT/fig7.png, OUT/crops.png and OUT/results.json.

Data: --train-dir is any folder of photographs (2K photographs, as DIV2K, suit it). A few are held out
(--holdout) for checkpoint selection, as the paper selects on training data. Real 2K photographs
without installing anything: apt-get download mate-backgrounds && dpkg -x mate-backgrounds_*.deb mate
then --train-dir mate/usr/share/backgrounds/mate/nature. Training sub-images with less detail than the
flow's dequantisation noise are left out (--min-detail): on smooth patches no discriminator can tell a
flow's samples from the photographs. --eval-dir defaults to scikit-image's photographs; an evaluation
image that is also a training image is refused.

Running the same command again continues an interrupted reproduction (finished stages are reused).
"""


def register(subparsers):
    from adflow_plugin.apps.reproduce.presets import PRESETS
    p = subparsers.add_parser('reproduce', help="the paper's claims in miniature: L1, ESRGAN, BaseFlow, AdFlow "
                              'at K = 1, 2, 4 on a folder of photographs, with a Table-2 markdown and figures',
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--train-dir', required=True, metavar='DIR', help='folder of training photographs')
    p.add_argument('--eval-dir', metavar='DIR', help="folder of evaluation photographs (default: scikit-image's)")
    p.add_argument('--out', default='reproduction', metavar='DIR', help='output folder (default: %(default)s)')
    p.add_argument('--preset', choices=sorted(PRESETS), default='full',
                   help='full: about 70 min on 2 CPU cores with --jobs 2, 93 one by one (default); quick: about 9 '
                   'min; gpu: about 8 min on one large GPU with a wider encoder; tiny: seconds, for tests only')
    p.add_argument('--quick', dest='preset', action='store_const', const='quick', help='same as --preset quick')
    p.add_argument('--holdout', type=int, metavar='N', help='training photographs held out for checkpoint selection '
                   '(default: 2)')
    p.add_argument('--min-detail', type=float, metavar='X', help='leave out training sub-images with less detail '
                   '(std of the HR minus its 5x5 mean, [0, 1] units) than X; 0 keeps every one (default: 0.009, the '
                   "flow's dequantisation noise)")
    p.add_argument('--jobs', type=int, default=1, metavar='N',
                   help='run up to N training and test stages at once, as child processes sharing the cores (on a '
                   'CPU, small models train faster side by side than one after the other; default: %(default)s)')
    p.add_argument('--verbose', action='store_true', help="show BasicSR's output (default: OUT/logs/<stage>.log)")
    p.set_defaults(func=run_reproduce)


def run_reproduce(args):
    import os.path as osp

    from adflow_plugin.cli import CLIError, load_plugins
    from adflow_plugin.data.recipe import PrepareError
    from adflow_plugin.apps.reproduce.data import MATE_HINT, default_eval_files, list_images, split_holdout
    from adflow_plugin.apps.reproduce.pipeline import Reproduction, StageError
    from adflow_plugin.apps.reproduce.presets import get_preset

    load_plugins()
    if args.min_detail is not None and args.min_detail < 0:
        raise CLIError(f'--min-detail {args.min_detail:g}: the detail threshold cannot be negative (0 keeps every '
                       'sub-image)')
    if args.jobs < 1:
        raise CLIError(f'--jobs {args.jobs}: at least one stage must run at a time (1 runs them one by one)')
    preset = get_preset(args.preset, holdout=args.holdout, min_detail=args.min_detail)
    try:
        if not osp.isdir(args.train_dir):
            raise PrepareError(f'--train-dir {args.train_dir} is not a folder; {MATE_HINT}')
        train_files = list_images(args.train_dir)
        eval_files = list_images(args.eval_dir) if args.eval_dir else default_eval_files()
        split_holdout(train_files, preset['holdout'], preset['seed'])  # refused before anything is written
        _check_lpips()
        repro = Reproduction(args.out, preset, train_files, eval_files, args.train_dir,
                             args.eval_dir or 'scikit-image photographs', verbose=args.verbose, jobs=args.jobs)
        results, paths = repro.run()
    except (PrepareError, StageError) as e:
        raise CLIError(str(e)) from None
    for warning in results['warnings']:
        print(f'warning: {warning}')
    print(f'reproduce: {results["info"]["wall_time_min"]:.1f} min; wrote ' + ', '.join(paths.values()), flush=True)
    return 0


def _check_lpips():
    """LPIPS is in every table: fail before training if its backbone is not on this machine."""
    from adflow_plugin.cli import CLIError
    from adflow_plugin.metrics.lpips_metric import get_lpips_network
    try:
        get_lpips_network()
    except FileNotFoundError as e:
        raise CLIError(str(e).splitlines()[0]) from None
