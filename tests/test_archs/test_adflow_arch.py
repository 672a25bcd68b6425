"""The whole generator at 4x, 6x and 8x (tiny widths): invertibility, log-dets, sampling, the L1 ladder."""
import math

import pytest
import torch
from basicsr.archs.rrdbnet_arch import RRDBNet

from adflow_plugin.archs.adflow_arch import AdFlowNet
from adflow_plugin.archs.jacobian_check import check_levels, check_network
from adflow_plugin.archs.rrdb_embed_arch import MultiScaleRRDBNet, RRDBEmbedNet, load_basicsr_rrdb
from adflow_plugin.losses.flow_nll_loss import FlowNLLLoss

TINY = dict(num_feat=8, num_block=2, num_grow_ch=4, embed_blocks=[0, 1], flow_depth=2, hidden_channels=8)


def tiny_net(scale, **kwargs):
    opts = dict(TINY, **kwargs)
    return AdFlowNet(scale=scale, **opts)


def lr_hr(scale, h=6, w=8, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(batch, 3, h * scale, w * scale, generator=g)
    lr = torch.nn.functional.avg_pool2d(hr, scale)
    return lr, hr


@pytest.mark.parametrize('scale', [4, 6, 8])
@pytest.mark.parametrize('coupling_scale,rotation', [('inv_sigmoid', 'random'), ('sigmoid', 'learned')])
def test_roundtrip_after_training_steps(scale, coupling_scale, rotation):
    torch.manual_seed(0)
    net = tiny_net(scale, coupling_scale=coupling_scale, rotation=rotation)
    lr, hr = lr_hr(scale, h=8, w=8)
    loss_fn = FlowNLLLoss()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        out = net(lr, loss_fn.dequantize(hr))
        loss = loss_fn(out['logp'], out['logdet'], out['shape'])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    net.eval()
    with torch.no_grad():
        enc = net.encode(hr, lr)
        rec = net.decode(lr, latents=enc['latents'])
    assert (rec - hr).abs().max().item() < 1e-4
    assert sum(z[0].numel() for z in enc['latents']) == hr[0].numel()


@pytest.mark.parametrize('scale', [4, 6, 8])
def test_sampling_temperature_and_seed(scale):
    torch.manual_seed(0)
    net = tiny_net(scale)
    lr, hr = lr_hr(scale)
    net(lr, hr)  # ActNorm initialisation
    net.eval()
    with torch.no_grad():
        t0a, t0b = net.decode(lr, temperature=0), net.decode(lr, temperature=0)
        s1, s2 = net.decode(lr, temperature=0.8, seed=5), net.decode(lr, temperature=0.8, seed=5)
        s3 = net.decode(lr, temperature=0.8, seed=6)
        cond = net.condition(lr)  # the embedding once, several samples
        s1_cached = net.decode(temperature=0.8, seed=5, cond=cond)
    assert torch.equal(t0a, t0b)
    assert torch.equal(s1, s2) and torch.equal(s1, s1_cached)
    assert (s1 - s3).abs().max() > 1e-3
    assert s1.shape == hr.shape


@pytest.mark.parametrize('scale,size', [(4, (7, 9)), (6, (5, 11)), (8, (3, 1))])
def test_any_lr_size_is_padded_and_cropped(scale, size):
    net = tiny_net(scale)
    lr, hr = lr_hr(scale, *size, batch=1)
    net(lr, hr)
    net.eval()
    with torch.no_grad():
        sr = net.decode(lr, temperature=0.7, seed=0)
        enc = net.encode(hr, lr)
        rec = net.decode(lr, latents=enc['latents'])
    assert sr.shape == hr.shape
    assert (rec - hr).abs().max().item() < 1e-4


@pytest.mark.parametrize('scale,hr_size', [(4, 8), (8, 16)])
def test_network_logdet_matches_jacobian(scale, hr_size):
    torch.manual_seed(0)
    net = tiny_net(scale).double()
    lr, hr = lr_hr(scale, hr_size // scale, hr_size // scale, batch=1)
    net(lr.double(), hr.double())
    net.eval()
    rep = check_network(net, lr.double(), hr.double())
    assert rep['logdet_rel_err'] < 1e-4, rep
    assert rep['roundtrip_max_abs_err'] < 1e-6, rep


def test_levels_logdet_match_jacobian_6x():
    torch.manual_seed(0)
    net = tiny_net(6).double()
    lr, hr = lr_hr(6, 8, 8, batch=1)
    net(lr.double(), hr.double())
    net.eval()
    for rep in check_levels(net, lr.double()):
        assert rep['logdet_rel_err'] < 1e-4, rep
        assert rep['roundtrip_max_abs_err'] < 1e-6, rep


def test_flow_depth_zero_laplace_is_l1():
    """Sec. 3.1: the one-layer flow z = y - g(x) with a unit Laplace prior has NLL = L1 (sum) + D log 2."""
    torch.manual_seed(0)
    net = AdFlowNet(scale=4, num_feat=8, num_block=1, num_grow_ch=4, flow_depth=0, prior='laplace')
    lr, hr = lr_hr(4, batch=2)
    out = net(lr, hr)
    g = net.embed.image(lr)
    dims = hr[0].numel()
    l1_sum = (hr - g).abs().flatten(1).sum(1)
    nll = FlowNLLLoss(quant=0, unit='nats').nll(out['logp'], out['logdet'], out['shape'])
    torch.testing.assert_close(nll, l1_sum + dims * math.log(2), rtol=1e-6, atol=1e-3)
    # temperature 0 returns g(x): the RRDB's own prediction
    with torch.no_grad():
        torch.testing.assert_close(net.decode(lr, temperature=0), g)


def test_flow_depth_zero_predicted_scale_is_eq4():
    torch.manual_seed(0)
    net = AdFlowNet(scale=4, num_feat=8, num_block=1, num_grow_ch=4, flow_depth=0, prior='laplace',
                    predict_scale=True)
    lr, hr = lr_hr(4, batch=1)
    out = net(lr, hr)
    pred = net.embed.image(lr)
    g, logb = pred[:, :3], pred[:, 3:]
    expected = ((hr - g).abs() / logb.exp()).sum() + logb.sum() + hr.numel() * math.log(2)
    nll = FlowNLLLoss(quant=0, unit='nats').nll(out['logp'], out['logdet'], out['shape'])
    torch.testing.assert_close(nll[0], expected, rtol=1e-6, atol=1e-3)


def test_laplace_prior_flow_roundtrip():
    net = tiny_net(4, prior='laplace')
    lr, hr = lr_hr(4)
    net(lr, hr)
    net.eval()
    with torch.no_grad():
        enc = net.encode(hr, lr)
        assert torch.isfinite(enc['logp']).all()
        assert (net.decode(lr, latents=enc['latents']) - hr).abs().max() < 1e-4
        assert torch.isfinite(net.decode(lr, temperature=1.0, seed=1)).all()


def test_embedding_loads_basicsr_rrdbnet_checkpoint():
    torch.manual_seed(0)
    rrdb = RRDBNet(3, 3, num_feat=8, num_block=3, num_grow_ch=4)
    embed = RRDBEmbedNet(num_feat=8, num_block=3, num_grow_ch=4, embed_blocks=[0, 2], upsample=[2])
    left = load_basicsr_rrdb(embed, rrdb.state_dict())
    assert sorted(left) == ['conv_hr.bias', 'conv_hr.weight', 'conv_last.bias', 'conv_last.weight', 'conv_up2.bias',
                            'conv_up2.weight']
    assert torch.equal(embed.conv_up1.weight, rrdb.conv_up1.weight)
    with pytest.raises(KeyError):
        load_basicsr_rrdb(RRDBEmbedNet(num_feat=8, num_block=4, num_grow_ch=4, embed_blocks=[0]), rrdb.state_dict())


def test_multiscale_rrdbnet_x4_equals_basicsr_rrdbnet():
    torch.manual_seed(0)
    ours = MultiScaleRRDBNet(3, 3, scale=4, num_feat=8, num_block=2, num_grow_ch=4)
    stock = RRDBNet(3, 3, num_feat=8, num_block=2, num_grow_ch=4)
    stock.load_state_dict(ours.state_dict(), strict=True)
    x = torch.rand(1, 3, 6, 7)
    torch.testing.assert_close(ours(x), stock(x))
    for scale in (6, 8):
        net = MultiScaleRRDBNet(3, 3, scale=scale, num_feat=8, num_block=1, num_grow_ch=4)
        assert net(x).shape == (1, 3, 6 * scale, 7 * scale)


@pytest.mark.parametrize('prior, unit_std', [('gaussian', 1.0), ('laplace', math.sqrt(2))])
def test_drawn_latents_scale_with_temperature(prior, unit_std):
    """Encode a sample back: the latents it was drawn from have standard deviation T times the prior's.

    A fresh network's split priors are zero-initialised (mean 0, scale 1), so every latent is the drawn
    noise itself; with the same seed the draws at T and at 1 differ exactly by the factor T."""
    torch.manual_seed(0)
    net = tiny_net(4, prior=prior)
    lr, hr = lr_hr(4, h=8, w=8)
    net(lr, hr)  # ActNorm initialisation
    net.eval()
    with torch.no_grad():
        drawn = {t: net.encode(net.decode(lr, temperature=t, seed=3), lr)['latents'] for t in (1.0, 0.5, 0.25)}
    for t in (0.5, 0.25):
        for z1, zt in zip(drawn[1.0], drawn[t]):
            torch.testing.assert_close(zt, t * z1, atol=2e-4, rtol=1e-3)
    flat = {t: torch.cat([z.flatten() for z in zs]) for t, zs in drawn.items()}
    for t, z in flat.items():
        assert z.std().item() == pytest.approx(t * unit_std, rel=0.1), (t, z.std().item())
