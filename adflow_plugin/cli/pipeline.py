"""Shared arguments and launch of BasicSR's own ``train_pipeline`` / ``test_pipeline``."""
import argparse
import os
import sys

import yaml


def add_basicsr_arguments(parser):
    """BasicSR's own command-line arguments (``basicsr.utils.options.parse_options``)."""
    parser.add_argument('-opt', required=True, metavar='FILE', help='options YAML file')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='job launcher: none (one process), pytorch (torchrun), slurm')
    parser.add_argument('--auto_resume', action='store_true',
                        help='resume from the newest training state under experiments/<name>/training_states')
    parser.add_argument('--debug', action='store_true', help="debug mode: name prefixed 'debug_', frequent logs")
    parser.add_argument('--local_rank', type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--force_yml', nargs='+', default=None, metavar='KEY=VALUE',
                        help='override options, e.g. train:ema_decay=0.999 (keys in the file, or arguments of '
                        'the class a type: section builds, e.g. network_g:num_grow_ch=32)')


def check_options_file(path):
    """Fail early, in one line, on a missing or unreadable options file."""
    from adflow_plugin.cli import CLIError
    if not os.path.isfile(path):
        raise CLIError(f'options file not found: {path}')
    try:
        with open(path) as f:
            opt = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise CLIError(f'options file {path} is not valid YAML: {str(e).splitlines()[0]}') from None
    if not isinstance(opt, dict):
        raise CLIError(f'options file {path} must hold a YAML mapping, got {type(opt).__name__}')
    return opt


def basicsr_argv(args):
    """Rebuild the argument list that BasicSR's ``parse_options`` reads from ``sys.argv``."""
    argv = ['-opt', args.opt, '--launcher', args.launcher]
    if args.auto_resume:
        argv.append('--auto_resume')
    if args.debug:
        argv.append('--debug')
    if args.force_yml:
        argv += ['--force_yml'] + list(args.force_yml)
    return argv


def run_pipeline(args, is_train):
    """Run BasicSR's train or test pipeline with the plugin loaded; outputs go under the working directory.

    The options file (with the ``--force_yml`` overrides) is checked first, so that a run that cannot start
    stops with one line and creates nothing under experiments/ or results/.
    """
    opt = check_options_file(args.opt)
    from adflow_plugin.cli import CLIError, load_plugins
    load_plugins()
    from adflow_plugin.compat import ResumeError
    from adflow_plugin.utils.options_check import OptionsError, apply_force_yml, check_options
    try:
        check_options(apply_force_yml(opt, args.force_yml), is_train, auto_resume=args.auto_resume)
    except OptionsError as e:
        raise CLIError(f'{args.opt}: {e}') from None
    from basicsr.test import test_pipeline
    from basicsr.train import train_pipeline

    old_argv = sys.argv
    sys.argv = [old_argv[0]] + basicsr_argv(args)
    try:
        (train_pipeline if is_train else test_pipeline)(os.getcwd())
    except ResumeError as e:
        raise CLIError(str(e)) from None
    finally:
        sys.argv = old_argv
    return 0
