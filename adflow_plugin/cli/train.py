from adflow_plugin.cli.pipeline import add_basicsr_arguments, run_pipeline


def register(subparsers):
    p = subparsers.add_parser(
        'train', help='train a model from an options file (basicsr.train.train_pipeline)',
        description='Train with BasicSR\'s trainer. Writes experiments/<name>/ (models, training_states, '
        'visualization, log) and tb_logger/<name>/ under the current directory. Multi-process: '
        'torchrun --nproc_per_node=N -m adflow_plugin.train -opt FILE --launcher pytorch')
    add_basicsr_arguments(p)
    p.set_defaults(func=lambda args: run_pipeline(args, is_train=True))
