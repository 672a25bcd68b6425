"""AdFlow for BasicSR.

``import adflow_plugin`` is the one registration point: it applies the BasicSR 1.4.2 compatibility
fixes and imports the plugin's archs, losses, metrics, models and datasets, which registers them in
BasicSR's ARCH/LOSS/METRIC/MODEL/DATASET registries. Importing it again is a no-op.
"""
from adflow_plugin import compat

compat.apply()

from adflow_plugin import archs, data, losses, metrics, models  # noqa: E402,F401  (registers)
from adflow_plugin.version import __version__  # noqa: E402,F401
