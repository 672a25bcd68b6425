"""SRFlow's released checkpoints -> AdFlowNet (``basicsr convert-srflow``).

No SRFlow weights or code are available here, so the tests build a state dict with SRFlow's exact key
names and shapes from the spec below (written from SRFlow's public code: RRDBNet, FlowUpsamplerNet,
FlowStep, CondAffineSeparatedAndCond, Split2d), give every tensor its own values, convert it and check
that each value lands where its name says, that the network loads strictly and round-trips, and that a
flow step, a transition step and a split prior compute SRFlow's formulas on those tensors.
"""
import contextlib
import io
import math
import os
import re
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from adflow_plugin.archs.flow_layers import ActNorm, Condition
from adflow_plugin.archs.rrdb_embed_arch import RRDBEmbedNet
from adflow_plugin.apps.convert_srflow import (ConversionError, build_srflow_network, convert_file, convert_state_dict,
                                               srflow_network_options)

# the released models: RRDB nf 64, nb 23, gc 32; flow K 16, 2 unconditional steps per level, hidden 64,
# 320 conditioning channels; L 3 at 4x, 4 at 8x; splits on levels l < L - 1 (1-based)
LEVELS = {4: 3, 8: 4}
UPCONVS = {4: 2, 8: 3}
K, NB, NF, GC, HIDDEN, COND = 16, 23, 64, 32, 64, 320


def srflow_spec(scale):
    """[(SRFlow key, shape, our key or None if dropped)] in SRFlow's state-dict order."""
    spec = []

    def conv(src, dst, cin, cout, k=3, bias=True):
        spec.append((f'{src}.weight', (cout, cin, k, k), dst and f'{dst}.weight'))
        if bias:
            spec.append((f'{src}.bias', (cout, ), dst and f'{dst}.bias'))

    def actnorm(src, dst, c):
        spec.append((f'{src}.bias', (1, c, 1, 1), f'{dst}.bias'))
        spec.append((f'{src}.logs', (1, c, 1, 1), f'{dst}.logs'))

    def zeros_conv(src, dst, cin, cout):
        conv(src, dst, cin, cout)
        spec.append((f'{src}.logs', (cout, 1, 1), f'{dst}.logs'))

    def coupling_net(src, dst, cin, cout):  # SRFlow's F(): Conv2d+ActNorm, ReLU, 1x1 Conv2d+ActNorm, ReLU, Conv2dZeros
        conv(f'{src}.0', f'{dst}.0', cin, HIDDEN, bias=False)
        actnorm(f'{src}.0.actnorm', f'{dst}.0.actnorm', HIDDEN)
        conv(f'{src}.2', f'{dst}.2', HIDDEN, HIDDEN, k=1, bias=False)
        actnorm(f'{src}.2.actnorm', f'{dst}.2.actnorm', HIDDEN)
        zeros_conv(f'{src}.4', f'{dst}.4', HIDDEN, cout)

    conv('RRDB.conv_first', 'embed.conv_first', 3, NF)
    for n in range(NB):
        for r in (1, 2, 3):
            for m in range(1, 6):
                conv(f'RRDB.RRDB_trunk.{n}.RDB{r}.conv{m}', f'embed.body.{n}.rdb{r}.conv{m}', NF + (m - 1) * GC,
                     GC if m < 5 else NF)
    conv('RRDB.trunk_conv', 'embed.conv_body', NF, NF)
    for u in range(1, UPCONVS[scale] + 1):  # the flow reads fea_up2 (4x) / fea_up2, fea_up4 (8x): not the last
        conv(f'RRDB.upconv{u}', f'embed.conv_up{u}' if u < UPCONVS[scale] else None, NF, NF)
    conv('RRDB.HRconv', None, NF, NF)
    conv('RRDB.conv_last', None, NF, 3)

    i, c = 0, 3
    for level in range(LEVELS[scale]):
        c, i = c * 4, i + 1  # squeeze: no parameters
        for t in range(2):
            pre, dst = f'flowUpsamplerNet.layers.{i}', f'levels.{level}.transitions.{t}'
            actnorm(f'{pre}.actnorm', f'{dst}.actnorm', c)
            spec.append((f'{pre}.invconv.weight', (c, c), f'{dst}.rotation.weight'))
            i += 1
        for k in range(K):
            pre, dst = f'flowUpsamplerNet.layers.{i}', f'levels.{level}.steps.{k}'
            actnorm(f'{pre}.actnorm', f'{dst}.actnorm', c)
            spec.append((f'{pre}.invconv.weight', (c, c), f'{dst}.rotation.weight'))
            coupling_net(f'{pre}.affine.fAffine', f'{dst}.coupling.net', c // 2 + COND, 2 * (c - c // 2))
            coupling_net(f'{pre}.affine.fFeatures', f'{dst}.injector.net', COND, 2 * c)
            i += 1
        if level + 1 < LEVELS[scale] - 1:
            zeros_conv(f'flowUpsamplerNet.layers.{i}.conv', f'levels.{level}.split.conv', c // 2, c)
            c, i = c // 2, i + 1
    conv('flowUpsamplerNet.f.0', None, COND, 96)
    return spec


def distinctive_state(scale, seed=0):
    """Every tensor its own random values, at magnitudes that keep the flow well conditioned."""
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, shape, _ in srflow_spec(scale):
        fan = math.prod(shape[1:]) or 1
        if key.endswith('invconv.weight'):  # a rotation times a near-identity: invertible, distinct
            q = torch.linalg.qr(torch.randn(shape, generator=g, dtype=torch.float64))[0]
            v = (q @ (torch.eye(shape[0], dtype=torch.float64) + 0.2 / math.sqrt(shape[0]) *
                      torch.randn(shape, generator=g, dtype=torch.float64))).float()
        elif key.endswith(('.bias', '.logs')):
            v = 0.05 * torch.randn(shape, generator=g)
        elif key.startswith('RRDB.'):
            v = 0.3 / math.sqrt(fan) * torch.randn(shape, generator=g)
        elif key.endswith(('.4.weight', 'conv.weight')):  # SRFlow's zero-initialised convolutions
            v = 0.02 / math.sqrt(fan) * torch.randn(shape, generator=g)
        else:
            v = 1.0 / math.sqrt(fan) * torch.randn(shape, generator=g)
        state[key] = v
    return state


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    # two cores shared with other processes: one thread avoids spinning (10x faster here)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def net4():
    with torch.no_grad():
        return build_srflow_network(4)


@pytest.fixture(scope='module')
def converted(tmp_path_factory, net4):
    """{scale: (source state, source path, converted path, report, CLI output)}: 4x through ``basicsr
    convert-srflow`` (in process), 8x through :func:`convert_file`."""
    from adflow_plugin.cli import main
    root = tmp_path_factory.mktemp('srflow')
    out = {}
    for scale in (4, 8):
        state = distinctive_state(scale, seed=scale)
        src, dst = root / f'SRFlow_DF2K_{scale}X.pth', root / f'SRFlow_{scale}x_converted.pth'
        torch.save(state, src)
        printed = io.StringIO()
        if scale == 4:
            with contextlib.redirect_stdout(printed):
                assert main(['convert-srflow', str(src), str(dst), '--scale', '4']) == 0
            report = convert_state_dict(state, scale, net4)[1]
        else:
            report = convert_file(str(src), str(dst), scale)
        out[scale] = (state, src, dst, report, printed.getvalue())
    return out


@pytest.mark.parametrize('scale', [4, 8])
def test_every_value_lands_where_its_name_says(converted, scale):
    state, _, dst, report, _ = converted[scale]
    spec = srflow_spec(scale)
    ckpt = torch.load(dst, map_location='cpu', weights_only=True)
    assert list(ckpt) == ['params']
    net = build_srflow_network(scale)
    net.load_state_dict(ckpt['params'], strict=True)
    ours = net.state_dict()
    mapped = {src: dst for src, _, dst in spec if dst}
    dropped = sorted(src for src, _, dst in spec if dst is None)
    assert report['mapped'] == mapped
    assert sorted(report['dropped']) == dropped and len(dropped) == 8
    assert len(mapped) == {4: 1725, 8: 2072}[scale]
    for src, dst in mapped.items():
        assert torch.equal(ours[dst], state[src]), (src, dst)
    flags = [k for k in ours if k.endswith('.initialized')]
    assert len(ours) == len(mapped) + len(flags)
    assert all(ours[k].item() == 1 for k in flags)  # SRFlow's ActNorms are initialised: never re-initialise


@pytest.mark.parametrize('scale', [4, 8])
def test_converted_network_roundtrips_and_keeps_its_actnorms_in_training(converted, scale):
    _, _, dst, _, _ = converted[scale]
    net = build_srflow_network(scale)
    net.load_state_dict(torch.load(dst, weights_only=True)['params'], strict=True)
    g = torch.Generator().manual_seed(1)
    hr = torch.rand(1, 3, 2 * scale, 4 * scale, generator=g, dtype=torch.float64)
    lr = F.avg_pool2d(hr, scale)
    net.double().eval()
    with torch.no_grad():
        enc = net.encode(hr, lr)
        rec = net.decode(lr, latents=enc['latents'])
    # float64; random weights amplify rounding by ~1e6. (Sampling from such weights can overflow: SRFlow's
    # decode divides by sigmoid(.) + 1e-4 48 times, the instability AdFlow's reparametrisation removes.)
    assert (rec - hr).abs().max().item() < 1e-6
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    with torch.no_grad():
        net(lr, hr)  # a training-mode forward must not re-initialise the loaded ActNorms
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_one_step_computes_srflow_formulas(converted):
    """A conditional step, a transition step and a split prior against SRFlow's formulas written out on the
    SRFlow-named tensors: ActNorm (x + b) e^logs; 1x1 conv; injector fFeatures then coupling fAffine, each
    (x + shift) * (sigmoid(s + 2) + 1e-4) with (shift, s) the even/odd output channels; split mean/logs."""
    state, _, dst, _, _ = converted[4]
    net = build_srflow_network(4).double().eval()
    net.load_state_dict(torch.load(dst, weights_only=True)['params'], strict=True)
    s = {k: v.double() for k, v in state.items()}
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 24, 3, 5, generator=g, dtype=torch.float64)  # level 2 (index 1): 24 channels
    ft = torch.randn(2, COND, 3, 5, generator=g, dtype=torch.float64)

    def actnorm(p, v):
        return (v + s[f'{p}.bias']) * torch.exp(s[f'{p}.logs'])

    def f_net(p, v):
        h = F.relu(actnorm(f'{p}.0.actnorm', F.conv2d(v, s[f'{p}.0.weight'], padding=1)))
        h = F.relu(actnorm(f'{p}.2.actnorm', F.conv2d(h, s[f'{p}.2.weight'])))
        h = F.conv2d(h, s[f'{p}.4.weight'], s[f'{p}.4.bias'], padding=1) * torch.exp(s[f'{p}.4.logs'] * 3)
        return h[:, 0::2], h[:, 1::2]

    pre = 'flowUpsamplerNet.layers.23'  # level 2: squeeze 20, transitions 21-22, first step 23
    z = actnorm(f'{pre}.actnorm', x)
    z = F.conv2d(z, s[f'{pre}.invconv.weight'][:, :, None, None])
    shift, raw = f_net(f'{pre}.affine.fFeatures', ft)
    scale = torch.sigmoid(raw + 2.) + 1e-4
    z = (z + shift) * scale
    logdet = torch.log(scale).sum((1, 2, 3))
    z1, z2 = z[:, :12], z[:, 12:]
    shift, raw = f_net(f'{pre}.affine.fAffine', torch.cat([z1, ft], 1))
    scale = torch.sigmoid(raw + 2.) + 1e-4
    z = torch.cat([z1, (z2 + shift) * scale], 1)
    logdet = logdet + torch.log(scale).sum((1, 2, 3)) + 15 * (s[f'{pre}.actnorm.logs'].sum() +
                                                              torch.linalg.slogdet(s[f'{pre}.invconv.weight'])[1])
    with torch.no_grad():
        ours, ours_ld = net.levels[1].steps[0](x, Condition(ft))
    torch.testing.assert_close(ours, z, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours_ld, logdet, rtol=1e-12, atol=1e-9)

    pre = 'flowUpsamplerNet.layers.21'  # transition: ActNorm and 1x1 only
    z = F.conv2d(actnorm(f'{pre}.actnorm', x), s[f'{pre}.invconv.weight'][:, :, None, None])
    with torch.no_grad():
        torch.testing.assert_close(net.levels[1].transitions[0](x, ft)[0], z, rtol=0, atol=1e-12)

    x1 = torch.randn(2, 6, 4, 4, generator=g, dtype=torch.float64)  # the split after level 1 (layer 19)
    h = F.conv2d(x1, s['flowUpsamplerNet.layers.19.conv.weight'], s['flowUpsamplerNet.layers.19.conv.bias'],
                 padding=1) * torch.exp(s['flowUpsamplerNet.layers.19.conv.logs'] * 3)
    with torch.no_grad():
        mean, logs = net.levels[0].split.prior(x1, None)
    torch.testing.assert_close(mean, h[:, 0::2], rtol=0, atol=1e-12)
    torch.testing.assert_close(logs, h[:, 1::2], rtol=0, atol=1e-12)


def test_srflow_rrdb_conditioning():
    """SRFlow's RRDBNet: last_lr_fea = body + trunk_conv(body) (not conv_first + ...), and the flow reads the
    upsampling features after the LeakyReLU (SRFlow's in-place LeakyReLU overwrites fea_up2)."""
    torch.manual_seed(0)
    emb = RRDBEmbedNet(num_feat=8, num_block=2, num_grow_ch=4, embed_blocks=[0, 1], upsample=[2, 2],
                       trunk_residual='body')
    x = torch.rand(1, 3, 4, 6)
    with torch.no_grad():
        body = emb.body(emb.conv_first(x))
        last_lr_fea = body + emb.conv_body(body)
        fea_up2 = F.leaky_relu(emb.conv_up1(F.interpolate(last_lr_fea, scale_factor=2, mode='nearest')), 0.2)
        trunk, _ = emb.trunk(x)
        ups = emb.upsampled(trunk, 1, activated=True)
    torch.testing.assert_close(trunk, last_lr_fea, rtol=0, atol=0)
    torch.testing.assert_close(ups[0], fea_up2, rtol=0, atol=0)
    opts = srflow_network_options(4)
    assert opts['trunk_residual'] == 'body' and opts['cond_upsample_act'] is True


def _refused(state, scale, net, *fragments):
    with pytest.raises(ConversionError) as e:
        convert_state_dict(state, scale, net)
    for f in fragments:
        assert f in str(e.value), str(e.value)
    return str(e.value)


def test_refuses_missing_unexpected_and_misshapen_keys(converted, net4):
    state = converted[4][0]
    missing = OrderedDict((k, v) for k, v in state.items() if k != 'flowUpsamplerNet.layers.30.invconv.weight')
    _refused(missing, 4, net4, 'missing 1 key', 'flowUpsamplerNet.layers.30.invconv.weight')
    extra = OrderedDict(state, **{'flowUpsamplerNet.layers.58.actnorm.bias': torch.zeros(1, 96, 1, 1)})
    _refused(extra, 4, net4, 'unexpected 1 key', 'flowUpsamplerNet.layers.58.actnorm.bias')
    extra = OrderedDict(state, **{'RRDB.upconv3.bias': torch.zeros(64)})
    _refused(extra, 4, net4, 'unexpected 1 key', 'RRDB.upconv3.bias')
    wrong = OrderedDict(state, **{'flowUpsamplerNet.layers.3.affine.fAffine.4.weight': torch.zeros(12, 64, 1, 1)})
    _refused(wrong, 4, net4, 'wrong shape', 'flowUpsamplerNet.layers.3.affine.fAffine.4.weight (12, 64, 1, 1)')
    prefixed = OrderedDict(('module.' + k, v) for k, v in state.items())  # saved from DataParallel: accepted
    params, report = convert_state_dict(prefixed, 4, net4)
    assert len(report['mapped']) == 1725


def test_refuses_what_is_not_an_srflow_checkpoint(converted, net4):
    _refused({'params': {}}, 4, net4, 'BasicSR checkpoint')
    _refused({'conv_first.weight': torch.zeros(1)}, 4, net4, 'not an SRFlow checkpoint')
    _refused([1, 2], 4, net4, 'not an SRFlow checkpoint')
    _refused({'RRDB.conv_first.weight': 3}, 4, net4, 'not named tensors')
    _refused(converted[8][0], 4, net4, "SRFlow's 8x layout", '--scale 8')
    with pytest.raises(ConversionError, match='4 or 8'):
        convert_state_dict(converted[4][0], 6)


class _RunsCode:

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_file_refusals_write_nothing_and_run_no_code(converted, tmp_path, monkeypatch):
    marker = str(tmp_path / 'code_ran')
    evil = tmp_path / 'evil.pth'
    torch.save({'RRDB.conv_first.weight': _RunsCode(marker)}, evil)
    dst = tmp_path / 'out.pth'
    with pytest.raises(ConversionError, match='weights-only'):
        convert_file(str(evil), str(dst), 4)
    assert not os.path.exists(marker) and not dst.exists()
    (tmp_path / 'text.pth').write_text('not a checkpoint')
    with pytest.raises(ConversionError, match='cannot be read'):
        convert_file(str(tmp_path / 'text.pth'), str(dst), 4)
    with pytest.raises(ConversionError, match='no such file'):
        convert_file(str(tmp_path / 'absent.pth'), str(dst), 4)
    src = converted[4][1]
    with pytest.raises(ConversionError, match='--scale 4'):
        convert_file(str(src), str(dst), 8)
    assert sorted(os.listdir(tmp_path)) == ['evil.pth', 'text.pth']

    def failing_save(obj, f, *args, **kwargs):  # the disk fills up halfway through
        with open(f, 'wb') as h:
            h.write(b'partial')
        raise OSError('No space left on device')

    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(ConversionError, match='cannot write .*No space left'):
        convert_file(str(src), str(dst), 4)
    assert sorted(os.listdir(tmp_path)) == ['evil.pth', 'text.pth']  # no DST, no temporary file
    monkeypatch.undo()
    existing = converted[4][2]
    with pytest.raises(ConversionError, match='--force'):
        convert_file(str(src), str(existing), 4)


def test_cli_converts_and_refuses(converted, tmp_path, capsys):
    from adflow_plugin.cli import main
    _, src, dst, _, printed = converted[4]
    assert '1725 tensors mapped, 8 dropped' in printed and f'wrote {dst}' in printed
    assert main(['convert-srflow', str(src), str(tmp_path / 'x8.pth'), '--scale', '8']) == 2
    err = capsys.readouterr().err
    assert "basicsr convert-srflow: error: this is SRFlow's 4x layout, not 8x" in err
    assert not (tmp_path / 'x8.pth').exists()


def trained_like_srflow_state(scale, lr, hr):
    """The distinctive state with every ActNorm initialised from data (as SRFlow's first training step does),
    so that sampling is as well conditioned as a real model's; returned under SRFlow's names."""
    spec = srflow_spec(scale)
    state = distinctive_state(scale, seed=10 + scale)
    net = build_srflow_network(scale)
    net.load_state_dict(convert_state_dict(state, scale, net)[0], strict=True)
    for m in net.modules():
        if isinstance(m, ActNorm):
            m.set_initialized(False)
    net.train()
    with torch.no_grad():
        net(lr, hr)
    ours = net.state_dict()
    return OrderedDict((src, ours[dst].clone() if dst else state[src]) for src, _, dst in spec), net.eval()


def test_basicsr_test_runs_the_shipped_options_on_a_converted_checkpoint(tmp_path, cli):
    """convert-srflow, then `basicsr test` with options/test_SRFlow_x4.yml (strict load) on two small images."""
    import cv2
    import numpy as np
    import yaml
    from basicsr.utils import img2tensor, tensor2img

    from adflow_plugin.utils.matlab_resize import imresize_uint8
    from tests.conftest import OPTIONS

    g = torch.Generator().manual_seed(3)
    for d in ('GT', 'LR'):
        (tmp_path / 'data' / d).mkdir(parents=True)
    for i in range(2):
        coarse = torch.rand(1, 3, 6, 8, generator=g)
        hr = F.interpolate(coarse, size=(48, 64), mode='bicubic', align_corners=False).clamp(0, 1)
        img = (hr[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        cv2.imwrite(str(tmp_path / 'data' / 'GT' / f'im{i}.png'), img)
        cv2.imwrite(str(tmp_path / 'data' / 'LR' / f'im{i}.png'), imresize_uint8(img, 1 / 4))
    lq = img2tensor(cv2.imread(str(tmp_path / 'data' / 'LR' / 'im0.png')).astype(np.float32) / 255.)[None]
    gt = img2tensor(cv2.imread(str(tmp_path / 'data' / 'GT' / 'im0.png')).astype(np.float32) / 255.)[None]
    state, net = trained_like_srflow_state(4, lq, gt)
    torch.save(state, tmp_path / 'SRFlow_DF2K_4X.pth')
    from adflow_plugin.cli import main
    assert main(['convert-srflow', str(tmp_path / 'SRFlow_DF2K_4X.pth'), str(tmp_path / 'x4.pth'), '--scale', '4']) == 0

    with open(os.path.join(OPTIONS, 'test_SRFlow_x4.yml')) as f:
        opt = yaml.safe_load(f)
    opt['num_gpu'] = 0
    opt['datasets'] = {'test_1': dict(opt['datasets']['test_1'], name='tiny', dataroot_gt=str(tmp_path / 'data' / 'GT'),
                                      dataroot_lq=str(tmp_path / 'data' / 'LR'))}
    opt['path']['pretrain_network_g'] = str(tmp_path / 'x4.pth')
    assert opt['path']['strict_load_g'] is True
    opt['val']['metrics'] = {k: v for k, v in opt['val']['metrics'].items() if k in ('psnr', 'ssim', 'lr_psnr')}
    opt['val']['num_samples'] = 1
    opt['val']['pbar'] = False
    with open(tmp_path / 'test.yml', 'w') as f:
        yaml.safe_dump(opt, f)
    cli(['test', '-opt', tmp_path / 'test.yml'], cwd=tmp_path, env={'OMP_NUM_THREADS': '1'})

    logs = list((tmp_path / 'results' / 'test_SRFlow_x4').glob('test_test_SRFlow_x4_*.log'))
    text = logs[0].read_text()
    for metric in ('psnr', 'ssim', 'lr_psnr'):
        value = re.search(rf'# {metric}: (\S+)', text)
        assert value and math.isfinite(float(value.group(1))), text[-2000:]
    saved = sorted((tmp_path / 'results' / 'test_SRFlow_x4' / 'visualization' / 'tiny').glob('im0_*.png'))
    assert len(saved) == 1, saved
    with torch.no_grad():  # the network the checkpoint came from (conversion is exact: tested above)
        sr = net.decode(lq, temperature=0.9, seed=0)  # AdFlowModel: val.seed + 1000 * image index
    assert torch.isfinite(sr).all()
    diff = np.abs(tensor2img(sr).astype(int) - cv2.imread(str(saved[0])).astype(int))
    assert diff.max() <= 1, diff.max()
    # the same converted checkpoint through `basicsr infer` (network from the SRFlow options): same sample
    cli(['infer', '--model', tmp_path / 'x4.pth', '--arch', os.path.join(OPTIONS, 'test_SRFlow_x4.yml'), '--input',
         tmp_path / 'data' / 'LR', '--output', tmp_path / 'infer', '-t', '0.9', '--seed', '0', '--no-progress'],
        cwd=tmp_path, env={'OMP_NUM_THREADS': '1'})
    inferred = cv2.imread(str(tmp_path / 'infer' / 'im0_x4_t0.9_s0.png'))
    assert inferred is not None and inferred.shape == (48, 64, 3)
    assert np.abs(inferred.astype(int) - cv2.imread(str(saved[0])).astype(int)).max() <= 1
