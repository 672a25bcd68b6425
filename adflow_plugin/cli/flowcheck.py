"""``basicsr flowcheck -opt FILE``: is the generator exactly invertible, is its log-determinant right?"""
import sys


def register(subparsers):
    p = subparsers.add_parser(
        'flowcheck', help='check invertibility and log-determinants of an options file\'s flow generator',
        description='Builds network_g from any options file (paper-size or tiny; loads path.pretrain_network_g '
        'when the file exists; a named checkpoint that is missing is an error unless --allow-untrained), encodes '
        'and decodes a real photograph (scikit-image\'s astronaut), checks the '
        'log-determinant against an autograd Jacobian on a tiny input in float64 (the whole network, or each '
        'level when the network is too large for that), draws a sample, and prints one JSON line: '
        'roundtrip_max_abs_err, logdet_max_rel_err, nll_bits_per_dim, params, sample_nonfinite, ... '
        'Exit status 1 when the round trip exceeds 1e-4 or the log-det disagrees by more than 1e-3 (relative). '
        'Run it when samples look wrong (NaNs, black squares).')
    p.add_argument('-opt', required=True, metavar='FILE', help='options YAML with network_g: {type: AdFlowNet, ...}')
    p.add_argument('--hr-size', type=int, default=None, metavar='N',
                   help='HR crop size of the photograph (default: the training gt_size, else 160)')
    p.add_argument('--scale', type=int, default=None, metavar='S', help='override network_g.scale')
    p.add_argument('--temperature', type=float, default=None, metavar='T',
                   help='temperature of the sample (default: the first val.temperature, else 1.0)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--allow-untrained', action='store_true',
                   help='when path.pretrain_network_g does not exist, check the untrained network (exit 0 if it '
                   'passes) instead of stopping with an error')
    p.add_argument('--amp', choices=['none', 'bf16'], default=None,
                   help='bf16: check with the embedding and the flow\'s networks under bfloat16 autocast, as '
                   'train.amp / val.amp / infer --amp run them (log-det check then in float32; default: the '
                   'options\' val.amp, else off)')
    p.set_defaults(func=run)


def run(args):
    from adflow_plugin.cli import CLIError, load_plugins
    from adflow_plugin.cli.pipeline import check_options_file
    check_options_file(args.opt)
    load_plugins()
    from adflow_plugin.apps.flowcheck import FlowCheckError, format_report, load_options, run_flowcheck
    try:
        report = run_flowcheck(load_options(args.opt), args.hr_size, args.scale, args.temperature, args.seed,
                               allow_untrained=args.allow_untrained, amp=args.amp)
    except FlowCheckError as e:
        raise CLIError(str(e)) from None
    print(format_report(report), flush=True)
    sys.stdout.flush()
    return 0 if report['ok'] else 1
