"""Registers every ``*_loss.py`` module of this folder in BasicSR's registry."""
from adflow_plugin.utils import import_modules

_modules = import_modules(__name__, __path__, '_loss')
