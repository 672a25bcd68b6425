"""Every ``basicsr reproduce`` preset that the suite does not run end to end (quick, full and the GPU one, which
no CPU can run in full) builds each of its trainings with BasicSR, loads the checkpoints it starts from
at the preset's sizes and takes a training step at the preset's patch size: a preset whose networks or
checkpoint chain do not fit together fails here, not minutes into a run."""
import math
import os

import pytest
import torch

from adflow_plugin.apps.reproduce import runs
from adflow_plugin.apps.reproduce.presets import get_preset
from tests.conftest import in_process_model

DATA = {key: f'/nonexistent/{key}' for key in ('train_gt', 'train_lq', 'holdout_gt', 'holdout_lq')}


@pytest.mark.parametrize('name', ['quick', 'full', 'gpu'])
def test_preset_trainings_build_load_and_step(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the options name checkpoints relative to the stages' folder, as in OUT
    preset = get_preset(name, num_gpu=0)
    gt, scale = preset['gt_size'], preset['scale']
    torch.manual_seed(0)
    batch = dict(lq=torch.rand(1, 3, gt // scale, gt // scale), gt=torch.rand(1, 3, gt, gt))
    for run in runs.train_runs(preset):
        opt = runs.train_options(run, preset, DATA)
        model = in_process_model(opt, tmp_path)  # loads the L1 (or BaseFlow) weights it starts from
        if runs.run_kind(run) in ('esrgan', 'adflow'):
            assert hasattr(model, 'net_d') and model.get_bare_model(model.net_d).input_size == gt
        model.feed_data(batch)
        model.optimize_parameters(1)
        losses = {k: float(v) for k, v in model.log_dict.items()}
        assert losses and all(math.isfinite(v) for v in losses.values()), (run, losses)
        os.makedirs(model.opt['path']['models'], exist_ok=True)  # BasicSR's trainer makes it before training
        for which in ('latest', int(preset['iters']['l1'])) if run == runs.L1 else ('latest', ):
            model.save_network(model.net_g, 'net_g', which)  # where the runs after it load from
        del model
