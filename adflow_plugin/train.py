"""``python -m adflow_plugin.train -opt FILE [--launcher pytorch]``: BasicSR training with the plugin.

For torchrun: ``torchrun --nproc_per_node=N -m adflow_plugin.train -opt FILE --launcher pytorch``.
"""
import sys

from adflow_plugin.cli import main

if __name__ == '__main__':
    sys.exit(main(['train'] + sys.argv[1:]))
