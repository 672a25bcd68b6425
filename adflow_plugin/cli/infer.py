"""``basicsr infer``: super-resolve image files with a trained AdFlow, BaseFlow or ESRGAN generator."""
import argparse

EPILOG = """\
network:
  --model OPTIONS.yml          network_g of the options file, weights from its path.pretrain_network_g
                               (key path.param_key_g), relative to the current directory as for basicsr test
  --model CKPT.pth --arch OPTIONS.yml
                               the checkpoint's weights (params_ema, else params) in network_g of OPTIONS.yml
  --model CKPT.pth             ESRGAN (RRDBNet) checkpoints only: the architecture is read from the weights;
                               2 upsampling stages mean x4 unless --scale 6. A flow checkpoint needs --arch.
  Checkpoints are read with torch.load(weights_only=True): one that needs full unpickling is refused.

images:
  8- and 16-bit, grayscale, grayscale + alpha, colour, colour + alpha; the bit depth, grayscale and alpha are
  kept (alpha is upscaled by bicubic interpolation). A JPEG's EXIF orientation is applied as image viewers
  apply it (the output has no EXIF and displays as the input does). A truncated PNG or JPEG stops the run
  before anything is written. Folders are read non-recursively; other files are skipped with a message.
  Any LR size works: it is padded (reflect) for the network and the output cropped back.

outputs (PNG, in --output):
  flows:  <stem>_x<scale>_t<T>_s<k>.png  for each temperature T and sample k = 0 .. N-1
  ESRGAN: <stem>_x<scale>.png            (deterministic: --temperature and --samples do not apply)
  Existing files are not overwritten unless --force (checked before anything runs). Each output is
  written as soon as it is made; Ctrl-C or a full disk leaves only complete files.

sampling (flows):
  Sample k uses seed S + k for every temperature and image (tile j of a tiled image: S + k + 1000003 j).
  Temperature 0 is the mode (deterministic). The LR embedding is computed once per tile and reused for
  every temperature and sample.

tiling:
  --tile P runs tiles of P x P LR pixels, spread evenly so that neighbours overlap by at least
  --tile-overlap pixels; network memory then depends on P, not on the image. --tile-blend center cuts each
  overlap in the middle; ramp cross-fades over its middle half; auto (default) takes center for
  deterministic outputs (ESRGAN, temperature 0) and ramp at temperature > 0, where each tile draws its own
  noise. At temperature 0 the result matches the untiled one up to the tile-border influence, which falls
  with the overlap (see adflow_plugin/apps/infer/tiling.py). Measured peak GPU memory, AdFlow x4 (paper size), a
  768 x 768 LR, 2 samples: 12.6 GiB untiled, 1.5 GiB with --tile 256, 0.45 GiB with --tile 128.

examples:
  basicsr infer --model options/test_AdFlow_x4.yml --input photos/ --output sr/ --samples 3
  basicsr infer --model net_g_best.pth --arch options/test_BaseFlow_x8.yml --input a.png --output sr/ -t 0.9
  basicsr infer --model ESRGAN_SRx4_DF2KOST_official-ff704c30.pth --input big.png --output sr/ --tile 256
"""


def register(subparsers):
    from adflow_plugin.apps.infer import BLEND_CHOICES, DEFAULT_OVERLAP

    p = subparsers.add_parser(
        'infer', help='super-resolve image files with a trained flow (AdFlow, BaseFlow) or ESRGAN',
        description='Super-resolve image files or folders: samples of a flow at chosen temperatures, or the '
        'output of a deterministic network such as ESRGAN.', epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', required=True, metavar='OPTIONS.yml|CKPT.pth',
                   help='options file (network_g + path.pretrain_network_g) or a checkpoint (see below)')
    p.add_argument('--arch', metavar='OPTIONS.yml',
                   help='with a checkpoint: the options file whose network_g builds the network')
    p.add_argument('--input', '-i', required=True, nargs='+', metavar='PATH', help='image files and/or folders')
    p.add_argument('--output', '-o', required=True, metavar='DIR', help='output folder (created)')
    p.add_argument('--scale', type=int, metavar='S', help='expected scale (checked); picks x6 for a 2-stage ESRGAN')
    p.add_argument('--temperature', '-t', type=float, nargs='+', metavar='T',
                   help='flow sampling temperatures (default: val.temperature of the options file, else 1.0; '
                   'paper: 0.9 BaseFlow, 1.0 AdFlow)')
    p.add_argument('--samples', '-n', type=int, metavar='N', help='samples per temperature (flows; default 1)')
    p.add_argument('--seed', type=int, default=0, metavar='S', help='base seed of the samples (default 0)')
    p.add_argument('--tile', type=int, default=0, metavar='PIXELS',
                   help='tile size in LR pixels; 0 (default) runs the whole image at once')
    p.add_argument('--tile-overlap', type=int, default=DEFAULT_OVERLAP, metavar='PIXELS',
                   help=f'minimum overlap of neighbouring tiles in LR pixels (default {DEFAULT_OVERLAP})')
    p.add_argument('--tile-blend', choices=BLEND_CHOICES, default='auto',
                   help='how overlapping tiles are combined (default auto: center for deterministic outputs, '
                   'ramp for samples at temperature > 0)')
    p.add_argument('--device', default='auto', help='auto (CUDA when available), cpu, cuda, cuda:1, ...')
    p.add_argument('--amp', choices=['none', 'bf16'], default='none',
                   help='bf16: bfloat16 mixed precision for the embedding and the flow\'s networks (the flow\'s '
                   'affine arithmetic stays float32), or for the whole of ESRGAN; faster on GPUs (default none)')
    p.add_argument('--force', action='store_true', help='overwrite existing output files')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.set_defaults(func=run_infer)


def run_infer(args):
    from adflow_plugin.cli import INTERRUPTED, CLIError
    from adflow_plugin.apps.infer import InferError, infer

    try:
        result = infer(args.input, args.output, args.model, arch=args.arch, scale=args.scale,
                       temperatures=args.temperature, samples=args.samples, seed=args.seed, tile=args.tile,
                       overlap=args.tile_overlap, blend=args.tile_blend, force=args.force, device=args.device,
                       show_progress=not args.no_progress, amp=args.amp)
    except InferError as e:
        raise CLIError(str(e)) from None
    except KeyboardInterrupt:
        raise CLIError(f'interrupted; the files written to {args.output} so far are complete (none is partial)',
                       INTERRUPTED) from None
    summary = f'wrote {len(result["written"])} file(s) to {args.output}'
    if result['skipped']:
        summary += f'; skipped {len(result["skipped"])} non-image entr{"y" if len(result["skipped"]) == 1 else "ies"}'
    if result['failed']:
        summary += f'; {len(result["failed"])} image(s) failed (see above)'
    print(summary)
    return 1 if result['failed'] else 0
