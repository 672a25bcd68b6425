"""AdFlowModel's losses and checkpoint selection against values worked out by hand."""
import math
import os

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataloader, build_dataset

from adflow_plugin.utils.matlab_resize import imresize_uint8
from tests.conftest import in_process_model, tiny_flow_options

NO_DATA = {'train': {'gt_lmdb': 'unused', 'lq_x4_lmdb': 'unused'}}
REAL = [0.3, -1.2]  # the discriminator's fixed outputs for the real images of a batch of two
FAKE = [0.5, 2.5]  # and for the generator's samples
LAMBDA = 0.01


def softplus(x):  # -log(sigmoid(-x)): BCE-with-logits against label 0; softplus(-x) is against label 1
    return math.log1p(math.exp(x))


def fixed_discriminator(model, real, fake):
    """Make the (real) discriminator answer ``real`` for the batch's real images (the HR, dequantised
    under train.real_noise) and ``fake`` for anything else, through a forward hook; its graph stays
    connected so both backward passes run."""
    real_t = torch.tensor(real).view(-1, 1)
    fake_t = torch.tensor(fake).view(-1, 1)

    def hook(module, inputs, out):
        answer = real_t if torch.equal(inputs[0], model.real_d) else fake_t
        return out * 0 + answer

    return model.net_d.register_forward_hook(hook)


def test_relativistic_gan_losses_by_hand(tmp_path):
    opt = tiny_flow_options(NO_DATA, 'gan_by_hand', stage=2, val=False, ema_decay=0)
    opt['train']['gan_opt']['loss_weight'] = LAMBDA
    model = in_process_model(opt, tmp_path)
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 3, 32, 32, generator=g)
    model.feed_data({'lq': torch.nn.functional.avg_pool2d(gt, 4), 'gt': gt})
    fixed_discriminator(model, REAL, FAKE)
    model.optimize_parameters(1)
    log = model.log_dict
    mean_real, mean_fake = sum(REAL) / 2, sum(FAKE) / 2
    # generator (ESRGAN's relativistic average GAN): real judged against the mean fake with label 0,
    # fake against the mean real with label 1, averaged, times the weight
    g_real = sum(softplus(r - mean_fake) for r in REAL) / 2
    g_fake = sum(softplus(-(f - mean_real)) for f in FAKE) / 2
    assert log['l_g_gan'] == pytest.approx(LAMBDA * (g_real + g_fake) / 2, rel=1e-5)
    # discriminator: the opposite labels, each half weighted, no loss weight
    assert log['l_d_real'] == pytest.approx(0.5 * sum(softplus(-(r - mean_fake)) for r in REAL) / 2, rel=1e-5)
    assert log['l_d_fake'] == pytest.approx(0.5 * sum(softplus(f - mean_real) for f in FAKE) / 2, rel=1e-5)
    assert log['out_d_real'] == pytest.approx(mean_real) and log['out_d_fake'] == pytest.approx(mean_fake)


def write_val_set(root, count=2, size=64, scale=4):
    gt_dir, lq_dir = os.path.join(root, 'GT'), os.path.join(root, f'LRbicx{scale}')
    os.makedirs(gt_dir)
    os.makedirs(lq_dir)
    rng = np.random.default_rng(0)
    for i in range(count):
        base = cv2.resize(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(os.path.join(gt_dir, f'{i:04d}.png'), base)
        cv2.imwrite(os.path.join(lq_dir, f'{i:04d}.png'), imresize_uint8(base, 1 / scale))
    return gt_dir, lq_dir


def test_lower_lpips_keeps_net_g_best(tmp_path):
    """Two validations: net_g_best.pth holds the network of the one with the LOWER LPIPS."""
    gt_dir, lq_dir = write_val_set(str(tmp_path / 'val'))
    opt = tiny_flow_options(NO_DATA, 'best_lpips', stage=2, val=False)
    opt['datasets']['val'] = {'name': 'slice', 'type': 'PairedImageDataset', 'dataroot_gt': gt_dir,
                              'dataroot_lq': lq_dir, 'io_backend': {'type': 'disk'}}
    opt['val'] = {'val_freq': 1, 'save_img': False, 'temperature': 0.0, 'num_samples': 1, 'seed': 0,
                  'best_metric': 'lpips',
                  'metrics': {'lpips': {'type': 'calculate_lpips', 'better': 'lower', 'random_backbone': True}}}
    model = in_process_model(opt, tmp_path)
    val_opt = dict(opt['datasets']['val'], phase='val', scale=4)
    loader = build_dataloader(build_dataset(val_opt), val_opt, num_gpu=0, dist=False, sampler=None, seed=0)
    os.makedirs(model.opt['path']['models'])  # as BasicSR's trainer makes it
    best_path = os.path.join(model.opt['path']['models'], 'net_g_best.pth')
    ema = model.net_g_ema
    with torch.no_grad():
        model.net_g(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 32, 32))  # ActNorm initialised
    model.model_ema(0)
    states, values = [], []
    for it, noise in ((1, 0.05), (2, 0.03), (3, 0.03)):
        g = torch.Generator().manual_seed(it)  # a different network at each validation (zero-initialised
        with torch.no_grad():  # layers made non-zero, so the sample depends on every part)
            for p in ema.parameters():
                p.add_(torch.randn(p.shape, generator=g) * noise)
        states.append({k: v.clone() for k, v in ema.state_dict().items()})
        model.validation(loader, it, None, False)
        values.append(model.metric_results['lpips'])
        saved = torch.load(best_path, map_location='cpu', weights_only=True)['params_ema']
        best = int(np.argmin(values))  # the first of equal values stays
        for k, v in states[best].items():
            assert torch.equal(saved[k], v), (it, values, k)
    assert len(set(values)) == 3
    record = model.best_metric_results['slice']['lpips']
    assert record['val'] == min(values) and record['iter'] == int(np.argmin(values)) + 1
