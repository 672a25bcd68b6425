"""The applications built on the library: each one is what a ``basicsr`` subcommand runs.

``adflow_plugin/cli/<command>.py`` parses the command's arguments and calls the application here
(``basicsr infer`` -> :mod:`adflow_plugin.apps.infer`, ``basicsr compare`` -> :mod:`.compare`, ...).
The library the applications use (archs, data, losses, metrics, models, utils) lies one level up, as
in BasicSR. Importing this package registers nothing.
"""
