"""A skipped training step reaches nothing: G, D (with BatchNorm statistics), the EMA and both Adam states
stay as they were, whichever check failed; the schedulers follow the iteration count."""
import copy

import pytest
import torch

from tests.conftest import assert_same, in_process_model, tiny_flow_options


def batch(seed=0, scale=4, size=8):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(2, 3, size * scale, size * scale, generator=g)
    return {'lq': torch.nn.functional.avg_pool2d(gt, scale), 'gt': gt}


def optimizer_state(optimizer):
    """Adam's moments and step counts, and its settings but the learning rate (the scheduler's)."""
    state = copy.deepcopy(optimizer.state_dict())
    groups = [{k: v for k, v in g.items() if k != 'lr'} for g in state['param_groups']]
    return {'state': state['state'], 'groups': groups}


def snapshot(model):
    return {
        'g': copy.deepcopy(model.net_g.state_dict()),
        'd': copy.deepcopy(model.net_d.state_dict()),
        'ema': copy.deepcopy(model.net_g_ema.state_dict()),
        'optim_g': optimizer_state(model.optimizer_g),
        'optim_d': optimizer_state(model.optimizer_d),
    }


def nan_grad(param):
    """Every backward through ``param`` gives it a NaN gradient (the loss stays finite)."""
    return param.register_hook(lambda grad: torch.full_like(grad, float('nan')))


def trained_model(demo_data, tmp_path, name, **train):
    torch.manual_seed(0)
    opt = tiny_flow_options(demo_data, name, stage=2, val=False, **train)
    opt['train']['scheduler'] = {'type': 'MultiStepLR', 'milestones': [1], 'gamma': 0.5}
    model = in_process_model(opt, tmp_path)
    model.update_learning_rate(1)
    model.feed_data(batch())
    model.optimize_parameters(1)  # a clean step: ActNorm initialised, Adam states filled, EMA moved
    assert model.skipped_steps == 0
    return model


@pytest.mark.parametrize('path', ['nonfinite_loss', 'nonfinite_grad_g', 'nonfinite_grad_d'])
def test_skipped_step_reaches_nothing(demo_data, tmp_path, path):
    model = trained_model(demo_data, tmp_path, f'skip_{path}')
    before = snapshot(model)
    lr_before = model.get_current_learning_rate()
    data = batch(seed=1)
    handle = None
    if path == 'nonfinite_loss':
        data['lq'][0, 0, 0, 0] = float('nan')
    elif path == 'nonfinite_grad_g':
        handle = nan_grad(next(model.net_g.parameters()))
    else:
        handle = nan_grad(next(model.net_d.parameters()))
    model.update_learning_rate(2)  # as BasicSR's loop: the schedulers step before the training step
    model.feed_data(data)
    model.optimize_parameters(2)
    if handle:
        handle.remove()

    assert model.skipped_steps == 1 and model.consecutive_skips == 1 and model.log_dict['skipped_steps'] == 1
    after = snapshot(model)
    for part in before:  # parameters, buffers (ActNorm, BatchNorm statistics), Adam's moments and steps
        assert_same(after[part], before[part], part)
    # the schedule follows the iteration count (BasicSR steps from iteration 2): the milestone halved the rate
    assert model.schedulers[0].last_epoch == 1 and model.schedulers[1].last_epoch == 1
    assert model.get_current_learning_rate() == [lr / 2 for lr in lr_before]

    model.feed_data(batch(seed=2))
    model.optimize_parameters(3)  # a clean step: everything moves again, the run of skips ends
    assert model.consecutive_skips == 0
    moved = snapshot(model)
    for part in ('g', 'd', 'ema'):
        assert any(not torch.equal(v, before[part][k]) for k, v in moved[part].items()), part


def test_skipped_first_step_leaves_actnorm_uninitialised(demo_data, tmp_path):
    opt = tiny_flow_options(demo_data, 'skip_first', stage=2, val=False)
    model = in_process_model(opt, tmp_path)
    g_before = copy.deepcopy(model.net_g.state_dict())
    handle = nan_grad(next(model.net_d.parameters()))
    model.feed_data(batch())
    model.optimize_parameters(1)
    handle.remove()
    assert model.skipped_steps == 1
    assert_same(model.net_g.state_dict(), g_before, 'g')  # ActNorm initialises from the first clean step


def test_discriminator_skips_stop_training(demo_data, tmp_path):
    model = trained_model(demo_data, tmp_path, 'skip_d_stop', max_consecutive_skips=3)
    nan_grad(next(model.net_d.parameters()))  # the discriminator's gradient is non-finite at every step
    for it in (2, 3):
        model.feed_data(batch(seed=it))
        model.optimize_parameters(it)
    assert model.consecutive_skips == 2
    model.feed_data(batch(seed=4))
    with pytest.raises(RuntimeError, match='3 consecutive training steps had non-finite losses or gradients'):
        model.optimize_parameters(4)


def test_dataparallel_is_refused_with_torchrun(demo_data, tmp_path):
    opt = tiny_flow_options(demo_data, 'dp', stage=2, val=False)
    opt['num_gpu'] = 2
    with pytest.raises(ValueError, match=r'num_gpu: 2 .*DataParallel.*torchrun --nproc_per_node=2'):
        in_process_model(opt, tmp_path)
