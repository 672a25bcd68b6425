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
    import torchvision.transforms.functional_tensor as ft  # BasicSR 1.4.2's import works
    assert hasattr(ft, 'rgb_to_grayscale')


def test_denormals_are_flushed_on_the_cpu():
    """``import adflow_plugin`` turns on flush-to-zero: a denormal input reads as 0 and a product that would
    be denormal is 0 (torch has no getter for the flag, so the effect itself is checked)."""
    bits = torch.tensor([0x007FFFFF], dtype=torch.int32)  # float32's largest denormal, 1.1754942e-38
    denormal = bits.view(torch.float32)
    assert (denormal * 1.0).view(torch.int32).item() == 0  # without flushing: the same bits, 0x007FFFFF
    assert (denormal * 2.0).view(torch.int32).item() == 0  # 2.35e-38 would be normal: the input read as 0
    assert (torch.tensor([1e-30], dtype=torch.float32) * 1e-10).item() == 0.0
    assert (torch.tensor([1e-30], dtype=torch.float32) * 1e-5).item() != 0.0  # normal results are kept


def test_resume_state_maps_to_cpu_without_gpu():
    assert compat.resume_map_location({'num_gpu': 0}) == 'cpu'
    if not torch.cuda.is_available():
        assert compat.resume_map_location({'num_gpu': 1}) == 'cpu'
