"""``python -m adflow_plugin.test -opt FILE``: BasicSR testing with the plugin."""
import sys

from adflow_plugin.cli import main

if __name__ == '__main__':
    sys.exit(main(['test'] + sys.argv[1:]))
