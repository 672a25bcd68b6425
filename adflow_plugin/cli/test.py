from adflow_plugin.cli.pipeline import add_basicsr_arguments, run_pipeline


def register(subparsers):
    p = subparsers.add_parser(
        'test', help='evaluate a model from an options file (basicsr.test.test_pipeline)',
        description='Test with BasicSR\'s test pipeline: metrics in results/<name>/test_<name>_*.log, images in '
        'results/<name>/visualization/<dataset>/ under the current directory.')
    add_basicsr_arguments(p)
    p.set_defaults(func=lambda args: run_pipeline(args, is_train=False))
