"""``basicsr convert-srflow``: SRFlow's released checkpoint -> a BasicSR checkpoint of the equivalent AdFlowNet."""


def register(subparsers):
    p = subparsers.add_parser(
        'convert-srflow', help="convert SRFlow's released 4x/8x checkpoint (SRFlow_DF2K_4X.pth, _8X.pth)",
        description="Maps SRFlow's state dict (RRDB.*, flowUpsamplerNet.*) to this plugin's AdFlowNet names and "
        "writes DST as a BasicSR checkpoint ({'params': ...}) for path.pretrain_network_g with strict_load_g: true "
        '(options/test_SRFlow_x4.yml, options/train_AdFlow_from_SRFlow_x4.yml, and the _x8 files). The source is '
        'read with torch.load(weights_only=True), so a checkpoint cannot run code. Refuses, and writes nothing, '
        'when a key is missing, unexpected or of the wrong shape. Dropped on purpose: the RRDB image head '
        '(HRconv, conv_last), its last upconv, and flowUpsamplerNet.f, none of which SRFlow\'s flow uses.')
    p.add_argument('src', metavar='SRC.pth', help="SRFlow's checkpoint (SRFlow_DF2K_4X.pth or SRFlow_DF2K_8X.pth)")
    p.add_argument('dst', metavar='DST.pth', help='BasicSR checkpoint to write')
    p.add_argument('--scale', type=int, required=True, choices=(4, 8), help='4 or 8: the layout of SRC')
    p.add_argument('--force', action='store_true', help='overwrite DST if it exists')
    p.set_defaults(func=run_convert)


def run_convert(args):
    from adflow_plugin.cli import CLIError
    from adflow_plugin.apps.convert_srflow import ConversionError, convert_file

    try:
        report = convert_file(args.src, args.dst, args.scale, overwrite=args.force)
    except ConversionError as e:
        raise CLIError(str(e)) from None
    print(f'{args.src}: SRFlow {args.scale}x, {len(report["mapped"])} tensors mapped, '
          f'{len(report["dropped"])} dropped ({", ".join(report["dropped"])}), '
          f'{len(report["initialized"])} ActNorm "initialized" flags set')
    print(f'wrote {args.dst} ({report["num_params"]:,} values): use it as path.pretrain_network_g with '
          f'strict_load_g: true and the network_g of options/test_SRFlow_x{args.scale}.yml')
    return 0
