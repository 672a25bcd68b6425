"""``basicsr infer``: image formats, names, overwrite refusal, checkpoint loading, ESRGAN, and tiling.

The flow is a tiny AdFlowNet whose zero-initialised layers (coupling and injector outputs, split priors)
are made non-zero, so that its output depends on the LR and tile borders show; untrained, it would
decode mostly independently of the image. Its numbers say nothing about a trained model's.
"""
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs.rrdbnet_arch import RRDBNet

from adflow_plugin.apps.infer import (DEFAULT_OVERLAP, SRNetwork, blend_weights, load_network, tile_spans,
                                      tiling_difference, upscale)
from adflow_plugin.archs.adflow_arch import AdFlowNet
from adflow_plugin.cli import main
from adflow_plugin.data.demo import VAL_PHOTOS, read_photo
from tests.conftest import TINY_G

SCALE = 4


def tiny_flow(scale=SCALE, seed=0):
    torch.manual_seed(seed)
    opts = {k: v for k, v in TINY_G.items() if k != 'type'}
    net = AdFlowNet(scale=scale, **opts)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return net.eval()


class NotWeights:
    """Something a weights-only load must refuse to unpickle."""


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp('infer_models')
    flow = tiny_flow()
    torch.save({'params': flow.state_dict(), 'params_ema': flow.state_dict()}, root / 'flow.pth')
    opt = {'name': 'tiny', 'model_type': 'AdFlowModel', 'scale': SCALE, 'network_g': dict(TINY_G, scale=SCALE),
           'path': {'pretrain_network_g': str(root / 'flow.pth'), 'param_key_g': 'params_ema'},
           'val': {'temperature': 0.9}}
    with open(root / 'flow.yml', 'w') as f:
        yaml.safe_dump(opt, f)
    torch.manual_seed(0)
    esrgan = RRDBNet(3, 3, scale=4, num_feat=8, num_block=1, num_grow_ch=4).eval()
    torch.save({'params': esrgan.state_dict()}, root / 'esrgan.pth')
    torch.save({'params': flow.state_dict(), 'extra': NotWeights()}, root / 'unsafe.pth')
    return dict(root=root, flow=flow, esrgan=esrgan, options=str(root / 'flow.yml'), flow_ckpt=str(root / 'flow.pth'),
                esrgan_ckpt=str(root / 'esrgan.pth'), unsafe=str(root / 'unsafe.pth'))


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    """An odd-sized colour PNG, a 16-bit grayscale PNG, an RGBA PNG and a text file, in one folder."""
    folder = tmp_path_factory.mktemp('infer_inputs') / 'in'
    folder.mkdir()
    photo = read_photo(VAL_PHOTOS[0])
    odd = photo[40:53, 60:79]  # 13 x 19
    cv2.imwrite(str(folder / 'odd.png'), odd)
    gray = cv2.cvtColor(photo[100:111, 30:44], cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
    gray += np.arange(gray.size, dtype=np.uint16).reshape(gray.shape) % 200  # below 8-bit steps
    cv2.imwrite(str(folder / 'gray16.png'), gray)
    alpha = np.tile(np.linspace(0, 255, 10).round().astype(np.uint8), (12, 1))
    rgba = np.dstack([photo[:12, :10], alpha])
    cv2.imwrite(str(folder / 'rgba.png'), rgba)
    (folder / 'notes.txt').write_text('not an image')
    return dict(folder=str(folder), odd=odd, gray=gray, rgba=rgba)


def read(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def to_img(t):
    """Network output (1, 3, H, W) RGB float -> uint8 BGR, as BasicSR's tensor2img."""
    arr = t[0].clamp(0, 1).numpy().transpose(1, 2, 0)[:, :, ::-1]
    return np.round(arr * 255).astype(np.uint8)


def lq_tensor(bgr_uint8):
    return torch.from_numpy(bgr_uint8[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 255).unsqueeze(0)


def test_folder_of_formats_through_cli(cli, models, images, tmp_path):
    out = tmp_path / 'out'
    proc = cli(['infer', '--model', models['options'], '--input', images['folder'], '--output', out,
                '--temperature', '0', '0.7', '--samples', '2'], cwd=tmp_path)
    assert 'notes.txt: not an image file' in proc.stdout
    assert 'wrote 12 file(s)' in proc.stdout and 'skipped 1 non-image entry' in proc.stdout
    assert '3/3' in proc.stderr  # the progress bar
    names = sorted(os.listdir(out))
    assert names == sorted(f'{stem}_x4_t{t}_s{k}.png' for stem in ('odd', 'gray16', 'rgba') for t in ('0', '0.7')
                           for k in (0, 1))

    # odd size: padded for the flow (multiple of 2), cropped back to exactly 4x; equal to the network's own
    # output (AdFlowNet pads internally the same way)
    sr = read(out / 'odd_x4_t0_s0.png')
    assert sr.shape == (13 * 4, 19 * 4, 3) and sr.dtype == np.uint8
    with torch.no_grad():
        ref = to_img(models['flow'].decode(lq_tensor(images['odd']), temperature=0))
    assert np.abs(sr.astype(int) - ref).max() <= 1
    # temperature 0 is deterministic; samples at 0.7 differ
    assert np.array_equal(sr, read(out / 'odd_x4_t0_s1.png'))
    assert not np.array_equal(read(out / 'odd_x4_t0.7_s0.png'), read(out / 'odd_x4_t0.7_s1.png'))

    # 16-bit grayscale stays 16-bit grayscale and uses the 16-bit range
    g = read(out / 'gray16_x4_t0.7_s0.png')
    assert g.shape == (11 * 4, 14 * 4) and g.dtype == np.uint16
    assert np.any(g % 257 != 0)

    # RGBA: colour through the network, alpha upscaled separately and re-attached
    a = read(out / 'rgba_x4_t0_s0.png')
    assert a.shape == (12 * 4, 10 * 4, 4) and a.dtype == np.uint8
    expected_alpha = cv2.resize(images['rgba'][:, :, 3].astype(np.float32) / 255, (40, 48),
                                interpolation=cv2.INTER_CUBIC)
    assert np.abs(a[:, :, 3].astype(float) - np.clip(expected_alpha, 0, 1) * 255).max() <= 1


def test_refuses_to_overwrite_unless_forced(models, images, tmp_path, capsys):
    args = ['infer', '--model', models['options'], '--input', osp.join(images['folder'], 'odd.png'), '--output',
            str(tmp_path), '--no-progress']
    assert main(args) == 0
    # default temperature: val.temperature of the options file (0.9), one sample
    assert os.listdir(tmp_path) == ['odd_x4_t0.9_s0.png']
    before = read(tmp_path / 'odd_x4_t0.9_s0.png')
    assert main(args + ['--seed', '5']) == 2
    err = capsys.readouterr().err
    assert 'exist already' in err and '--force' in err and 'odd_x4_t0.9_s0.png' in err
    assert np.array_equal(read(tmp_path / 'odd_x4_t0.9_s0.png'), before)  # untouched
    assert main(args + ['--seed', '5', '--force']) == 0
    assert not np.array_equal(read(tmp_path / 'odd_x4_t0.9_s0.png'), before)


def test_esrgan_checkpoint_recognised_from_its_weights(models, images, tmp_path, capsys):
    args = ['infer', '--model', models['esrgan_ckpt'], '--input', osp.join(images['folder'], 'odd.png'), '--output',
            str(tmp_path), '--no-progress']
    assert main(args + ['--temperature', '0.5']) == 0
    out = capsys.readouterr().out
    assert 'ESRGAN recognised from the weights: RRDBNet num_feat=8 num_block=1 num_grow_ch=4 x4' in out
    assert 'deterministic: --temperature and --samples are ignored' in out
    assert os.listdir(tmp_path) == ['odd_x4.png']
    with torch.no_grad():
        ref = to_img(models['esrgan'](lq_tensor(images['odd'])))
    assert np.abs(read(tmp_path / 'odd_x4.png').astype(int) - ref).max() <= 1
    # the same layout fits a 6x MultiScaleRRDBNet only by name: its weights then must load into it
    net = load_network(models['esrgan_ckpt'], scale=6)
    assert type(net.net).__name__ == 'MultiScaleRRDBNet' and net.scale == 6
    # a checkpoint with its architecture given explicitly
    net = load_network(models['flow_ckpt'], arch=models['options'])
    assert net.stochastic and net.scale == 4 and net.temperatures == [0.9]


@pytest.mark.parametrize('case, expected', [
    ('flow_without_arch', 'AdFlowNet) checkpoint; a flow checkpoint does not record its architecture'),
    ('unsafe', 'NotWeights, which only full unpickling (able to run code) could load'),
    ('wrong_scale', '--scale 8 but the network upscales by 4'),
    ('missing_input', 'input not found'),
    ('not_an_image', 'is not an image file'),
])
def test_clear_errors(case, expected, models, images, tmp_path, capsys):
    inp = osp.join(images['folder'], 'odd.png')
    model = models['options']
    extra = []
    if case == 'flow_without_arch':
        model = models['flow_ckpt']
    elif case == 'unsafe':
        model, extra = models['unsafe'], ['--arch', models['options']]
    elif case == 'wrong_scale':
        extra = ['--scale', '8']
    elif case == 'missing_input':
        inp = str(tmp_path / 'nothing.png')
    elif case == 'not_an_image':
        inp = osp.join(images['folder'], 'notes.txt')
    code = main(['infer', '--model', model, '--input', inp, '--output', str(tmp_path / 'out'), '--no-progress'] +
                extra)
    err = capsys.readouterr().err
    assert code == 2 and expected in err and 'Traceback' not in err
    assert not (tmp_path / 'out').exists()


def test_undecodable_image_is_reported_and_the_rest_done(models, images, tmp_path, capsys):
    folder = tmp_path / 'in'
    folder.mkdir()
    (folder / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n garbage, not PNG chunks IEND')  # whole, undecodable
    cv2.imwrite(str(folder / 'good.png'), images['odd'])
    code = main(['infer', '--model', models['esrgan_ckpt'], '--input', str(folder), '--output', str(tmp_path / 'out'),
                 '--no-progress'])
    captured = capsys.readouterr()
    assert code == 1
    assert 'broken.png: cannot be decoded as an image; skipped' in captured.out
    assert '1 image(s) failed' in captured.out
    assert sorted(os.listdir(tmp_path / 'out')) == ['good_x4.png']


# ------------------------------------------------------------------------------------------------ tiling
@pytest.mark.parametrize('length, tile, overlap, multiple', [(64, 32, 16, 2), (62, 24, 4, 2), (48, 16, 3, 8),
                                                              (40, 100, 16, 1), (33, 10, 0, 1)])
def test_tile_spans_and_weights(length, tile, overlap, multiple):
    spans = tile_spans(length, tile, overlap, multiple)
    assert spans[0][0] == 0 and spans[-1][1] == length
    for (a0, e0), (a1, e1) in zip(spans, spans[1:]):
        assert a0 < a1 and e0 - a1 >= overlap  # advancing, overlapping by at least `overlap`
    for a, e in spans:
        assert a % multiple == 0 and e - a <= max(tile, multiple) or len(spans) == 1
    for mode in ('ramp', 'center'):
        total = np.zeros(length * 3)
        for (a, e), w in zip(spans, blend_weights(spans, 3, mode)):
            assert w.shape == ((e - a) * 3, ) and (w >= 0).all()
            total[a * 3:e * 3] += w
        np.testing.assert_allclose(total, 1, atol=1e-6)


class NearestUpsampler(torch.nn.Module):
    """A deterministic 'network' without borders effects: tiled and untiled must agree exactly."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.nn.functional.interpolate(x, scale_factor=SCALE, mode='nearest') + self.dummy


@pytest.mark.parametrize('blend', ['ramp', 'center'])
def test_tiling_is_exact_without_border_effects(blend):
    srnet = SRNetwork(NearestUpsampler(), SCALE, stochastic=False)
    img = np.random.default_rng(0).random((23, 37, 3), dtype=np.float32)
    ref = upscale(srnet, img)[0]
    np.testing.assert_array_equal(ref, np.repeat(np.repeat(img, SCALE, 0), SCALE, 1))
    for tile, overlap in ((8, 0), (8, 3), (10, 6), (16, 4)):
        out = upscale(srnet, img, tile=tile, overlap=overlap, blend=blend)[0]
        np.testing.assert_allclose(out, ref, atol=2e-6)


def test_tiled_matches_untiled_at_temperature_zero(models):
    """The issue's check: mean |tiled - untiled| < 1/255 at temperature 0 with the default overlap; printed
    (pytest -s): the maximum and mean differences with 2 x 2 tiles overlapping by 0, 8, 16 and the default."""
    srnet = SRNetwork(models['flow'], SCALE, True, models['flow'].lr_multiple)
    img = read_photo(VAL_PHOTOS[1])[20:84, 30:94].astype(np.float32) / 255  # 64 x 64 LR
    rows = []
    for overlap in (0, 8, 16, DEFAULT_OVERLAP):
        tile = (64 + overlap) // 2  # 2 x 2 tiles overlapping by exactly `overlap`
        rows += [dict(r, tile=tile) for r in tiling_difference(srnet, img, tile, [overlap], ('ramp', 'center'))]
    print('\nblend  | overlap (actual) | tile | max x 1/255 | mean x 1/255')
    for r in rows:
        print(f'{r["blend"]:6s} | {r["overlap"]:7d} ({r["actual_overlap"]:2d})    | {r["tile"]:4d} | '
              f'{r["max"] * 255:11.3f} | {r["mean"] * 255:.4f}')
    for blend in ('ramp', 'center'):
        table = [r for r in rows if r['blend'] == blend]
        assert [r['actual_overlap'] for r in table] == [0, 8, 16, DEFAULT_OVERLAP]
        none, default = table[0], table[-1]
        assert default['mean'] < 1 / 255, default
        assert default['max'] < 1 / 255, default  # the README's promise: every pixel within one grey level
        assert none['max'] > 1 / 255  # tile borders do show without overlap: the check is not vacuous
        assert default['max'] < none['max'] / 10, (none, default)
        assert [r['max'] for r in table] == sorted((r['max'] for r in table), reverse=True)  # falls with overlap


def test_esrgan_tiled_matches_untiled(models):
    """A real RRDBNet (receptive field of about 20 LR pixels): with the default overlap every pixel of
    the tiled result is within one grey level of the untiled one; without overlap the borders show."""
    torch.manual_seed(1)
    net = RRDBNet(3, 3, scale=SCALE, num_feat=8, num_block=1, num_grow_ch=4).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in net.parameters():  # larger weights than the 0.1-scaled init, so far pixels matter
            p.mul_(3).add_(torch.randn(p.shape, generator=g) * 0.02)
    srnet = SRNetwork(net, SCALE, stochastic=False)
    img = read_photo(VAL_PHOTOS[1])[20:84, 30:94].astype(np.float32) / 255  # 64 x 64 LR
    for blend in ('ramp', 'center'):
        none = tiling_difference(srnet, img, 32, [0], (blend, ))[0]
        default = tiling_difference(srnet, img, (64 + DEFAULT_OVERLAP) // 2, [DEFAULT_OVERLAP], (blend, ))[0]
        assert none['max'] > 1 / 255, none
        assert default['max'] < 1 / 255, default


def test_tiles_draw_independent_noise(models):
    srnet = SRNetwork(models['flow'], SCALE, True, models['flow'].lr_multiple)
    flat = np.full((16, 32, 3), 0.5, np.float32)
    out = upscale(srnet, flat, [(0.8, 0)], tile=16, overlap=0)[0]  # two tiles side by side
    left, right = out[:, :64], out[:, 64:]
    assert not np.allclose(left, right)
    same_noise = upscale(srnet, flat[:, :16], [(0.8, 0)])[0]
    np.testing.assert_allclose(left, same_noise, atol=1e-6)  # tile 0 uses the untiled seed


def test_tiled_cli_keeps_formats(models, images, tmp_path):
    assert main(['infer', '--model', models['options'], '--input', images['folder'], '--output', str(tmp_path),
                 '--temperature', '0', '--tile', '8', '--tile-overlap', '4', '--no-progress']) == 0
    assert read(tmp_path / 'gray16_x4_t0_s0.png').dtype == np.uint16
    assert read(tmp_path / 'rgba_x4_t0_s0.png').shape == (48, 40, 4)
    assert read(tmp_path / 'odd_x4_t0_s0.png').shape == (52, 76, 3)


def test_amp_bf16_sample_matches_float32(models, images, tmp_path):
    """--amp bf16 (in process through main): the same sample as float32 up to bfloat16's rounding of the
    networks; a flow and ESRGAN."""
    outs = {}
    for model in ('options', 'esrgan_ckpt'):
        for amp in ('none', 'bf16'):
            folder = tmp_path / f'{model}_{amp}'
            assert main(['infer', '--model', models[model], '--input', osp.join(images['folder'], 'odd.png'),
                         '--output', str(folder), '-t', '0.5', '--amp', amp, '--no-progress']) == 0
            (name, ) = os.listdir(folder)
            outs[model, amp] = read(folder / name).astype(int)
        diff = np.abs(outs[model, 'bf16'] - outs[model, 'none'])
        assert diff.max() <= 8 and diff.mean() < 1, (model, diff.max(), diff.mean())
        if model == 'options':  # the flow's networks did run in bfloat16 (the tiny ESRGAN may round alike)
            assert diff.max() > 0
