import sys

from adflow_plugin.cli import main

sys.exit(main())
