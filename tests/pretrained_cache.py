"""The cache that the set-up's ``basicsr fetch-weights`` fills; tests that need it fail (never skip) without it."""
import os.path as osp

import pytest

from adflow_plugin.pretrained import cache_dir
from adflow_plugin.pretrained.fetch import expected_outputs


def require_fetched_weights():
    """The cache folder; fails the test with the command to run when the set-up step has not run."""
    root = cache_dir()
    missing = [p for p in expected_outputs() if not osp.isfile(osp.join(root, p))]
    if missing:
        pytest.fail(f'pretrained weights missing in {root} ({missing[0]}, ...): run `basicsr fetch-weights` '
                    '(python3 adflow_plugin/bootstrap.py test runs it)', pytrace=False)
    return root
