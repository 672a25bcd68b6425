"""``basicsr compare``: results of several ``basicsr test`` runs as a Table-2-like markdown table and figures."""
import os.path as osp


def _pairs(values, flag):
    from adflow_plugin.cli import CLIError
    pairs = {}
    for item in values or []:
        key, sep, value = item.partition('=')
        if not sep or not key or not value:
            raise CLIError(f'{flag} expects NAME=VALUE, got {item!r}')
        pairs[key] = value
    return pairs


def register(subparsers):
    p = subparsers.add_parser(
        'compare', help='table (markdown) and figures from several test results',
        description='Reads the newest BasicSR log of each result folder (results/<name>/test_<name>_*.log, or a '
        'log file) and writes OUT/comparison.md (per metric: methods x data sets, like the paper\'s Table 2), '
        'OUT/lr_psnr_vs_lpips.png and, when flow depths K are known, OUT/k_sweep.png (metrics against K, like '
        'Fig. 7). Metrics named <metric>_t<T> are <metric> at sampling temperature T.')
    p.add_argument('result_dirs', nargs='+', metavar='RESULT_DIR', help='results/<name> folders or log files')
    p.add_argument('-o', '--out', default=osp.join('results', 'comparison'), metavar='DIR',
                   help='output folder (default: results/comparison)')
    p.add_argument('--label', action='append', metavar='EXPERIMENT=LABEL',
                   help='method name for an experiment (repeatable); experiments at different scales may '
                   'share a label, e.g. --label ESRGAN_x4=ESRGAN --label ESRGAN_x8=ESRGAN')
    p.add_argument('--k', action='append', metavar='NAME=K',
                   help='flow depth K of an experiment or label (repeatable); K=L1 marks the L1-loss rung. '
                   'Default: --k-option, else a K<number> part of the experiment name (AdFlow_x8_K16)')
    p.add_argument('--k-option', metavar='KEY', help='dotted options key holding K in the logged options, '
                   'e.g. network_g.K')
    p.add_argument('--metrics', nargs='+', metavar='METRIC', help='tables for these metrics only (default: all)')
    p.add_argument('--x-metric', default='lpips', help='x axis of the scatter figure (default: lpips)')
    p.add_argument('--y-metric', default='lr_psnr', help='y axis of the scatter figure (default: lr_psnr)')
    p.set_defaults(func=run_compare)


def run_compare(args):
    from adflow_plugin.cli import CLIError
    from adflow_plugin.apps.compare import CompareError, compare

    try:
        out = compare(args.result_dirs, args.out, labels=_pairs(args.label, '--label'), ks=_pairs(args.k, '--k'),
                      k_option=args.k_option, metrics=args.metrics, x_metric=args.x_metric,
                      y_metric=args.y_metric)
    except CompareError as e:
        raise CLIError(str(e)) from None
    print(out['markdown'])
    for path in out['files']:
        print(f'wrote {path}')
    for reason in out['skipped']:
        print(f'skipped {reason}')
    return 0
