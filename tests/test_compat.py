"""BasicSR 1.4.2 fixes applied by ``import adflow_plugin``."""
import os

import pytest
import torch

from adflow_plugin import compat


class Unpicklable:

    def __reduce__(self):
        raise RuntimeError('cannot pickle this')


def test_atomic_save_leaves_no_truncated_file(tmp_path):
    path = str(tmp_path / 'net_g_5.pth')
    with pytest.raises(RuntimeError, match='cannot pickle'):
        compat.atomic_torch_save({'params': {'w': torch.zeros(1000)}, 'bad': Unpicklable()}, path)
    assert not os.path.exists(path)  # nothing under the final name; --auto_resume cannot pick it
    compat.atomic_torch_save({'params': {'w': torch.ones(3)}}, path)
    assert torch.equal(torch.load(path, weights_only=True)['params']['w'], torch.ones(3))
    assert not os.path.exists(path + '.partial')


def test_basicsr_is_patched():
    import basicsr.train
    from basicsr.models.base_model import BaseModel
    assert basicsr.train.load_resume_state is compat.load_resume_state
    assert BaseModel.save_network is compat.save_network
    assert BaseModel.save_training_state is compat.save_training_state
    assert torch.is_flush_denormal_enabled() if hasattr(torch, 'is_flush_denormal_enabled') else True
    import torchvision.transforms.functional_tensor as ft  # BasicSR 1.4.2's import works
    assert hasattr(ft, 'rgb_to_grayscale')


def test_resume_state_maps_to_cpu_without_gpu():
    assert compat.resume_map_location({'num_gpu': 0}) == 'cpu'
    if not torch.cuda.is_available():
        assert compat.resume_map_location({'num_gpu': 1}) == 'cpu'
