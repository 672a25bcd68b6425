"""The ``basicsr`` command: BasicSR's train/test pipelines with the AdFlow plugin registered.

Each subcommand lives in a module of this package exposing ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed arguments; returns an exit code).
"""
import argparse
import importlib
import sys

# subcommand modules, in the order ``basicsr --help`` lists them
COMMAND_MODULES = [
    'train', 'test', 'demo', 'prepare_data', 'fetch_weights', 'compare', 'convert_srflow', 'flowcheck', 'infer',
    'reproduce', 'study'
]


class CLIError(Exception):
    """An error in the user's input: printed as one line, no traceback; the command exits with ``code``."""

    def __init__(self, message, code=2):
        super().__init__(message)
        self.code = code


#: Exit status after Ctrl-C (SIGINT), as shells report a process killed by it.
INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that name the problem and point at ``--help``."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message} (see "{self.prog} --help")\n')


def load_plugins():
    """Import the AdFlow plugin and every package that declares a ``basicsr.plugins`` entry point."""
    from importlib.metadata import entry_points

    import adflow_plugin  # noqa: F401
    for ep in entry_points(group='basicsr.plugins'):
        ep.load()


def build_parser():
    parser = _Parser(
        prog='basicsr',
        description='BasicSR with the AdFlow plugin (flow-based fidelity for photo-realistic super-resolution). '
        'Experiment, result and tb_logger folders are created under the current working directory.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f'adflow_plugin.cli.{name}').register(sub)
    return parser


def main(argv=None):
    """Entry point of the ``basicsr`` console command (also ``python -m adflow_plugin.cli``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except CLIError as e:
        print(f'basicsr {args.command}: error: {e}', file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print(f'basicsr {args.command}: interrupted', file=sys.stderr)
        return INTERRUPTED
