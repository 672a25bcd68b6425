"""bfloat16 mixed precision (train.amp / val.amp / infer --amp / flowcheck --amp): the embedding and the
flow's networks under autocast, the flow's arithmetic in float32 (autocast runs on the CPU too)."""
import pytest
import torch
from torch.nn import functional as F

from adflow_plugin.apps.flowcheck import LOGDET_REL_TOL, ROUNDTRIP_TOL, photo_pair
from adflow_plugin.archs.adflow_arch import AdFlowNet
from adflow_plugin.archs.flow_layers import amp_dtype
from adflow_plugin.archs.jacobian_check import check_network
from adflow_plugin.losses.flow_nll_loss import FlowNLLLoss
from tests.conftest import in_process_model, tiny_flow_options


def trained_tiny_flow(**kw):
    """A small flow after a few Adam steps on a photograph: its coupling, injector and split-prior nets
    are no longer the zero maps they start as, so their precision shows in the NLL."""
    torch.manual_seed(0)
    opt = dict(scale=4, num_feat=16, num_block=2, num_grow_ch=8, embed_blocks=[0, 1], flow_depth=2, num_transition=1,
               hidden_channels=16, rotation_seed=0, split_cond=True)
    opt.update(kw)
    net = AdFlowNet(**opt).train()
    nll = FlowNLLLoss()
    lr, hr = photo_pair(4, 64, net.lr_multiple)
    adam = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(6):
        out = net(lr, nll.dequantize(hr))
        adam.zero_grad()
        nll(out['logp'], out['logdet'], out['shape']).backward()
        adam.step()
    return net.eval(), lr, hr


@pytest.mark.parametrize('kw', [dict(), dict(rotation='learned', coupling_scale='sigmoid', injector_first=True)],
                         ids=['adflow', 'srflow_layers'])
def test_bf16_nll_within_1_percent_and_exact_round_trip(kw):
    net, lr, hr = trained_tiny_flow(**kw)
    nll = FlowNLLLoss()
    torch.manual_seed(1)
    x = nll.dequantize(hr)  # one fixed batch for both precisions
    values = {}
    with torch.no_grad():
        for amp in (None, 'bf16'):
            cond = net.condition(lr, amp=amp)
            enc = net.encode(x, cond=cond)
            rec = net.decode(cond=cond, latents=enc['latents'])
            values[amp] = nll(enc['logp'], enc['logdet'], enc['shape']).item()
            assert enc['logdet'].dtype == torch.float32 and enc['logp'].dtype == torch.float32
            roundtrip = (rec - x).abs().max().item()
            assert roundtrip <= ROUNDTRIP_TOL, (amp, roundtrip)
    assert cond.levels[0].features.dtype == torch.bfloat16  # the embedding ran in bfloat16
    rel = abs(values['bf16'] - values[None]) / abs(values[None])
    assert 0 < rel < 0.01, values  # bf16 did change the networks' outputs, by less than 1 %
    # the log-determinant still equals autograd's Jacobian (float32 under the same autocast)
    m = net.lr_multiple
    report = check_network(net, lr[:, :, :m, :m], hr[:, :, :4 * m, :4 * m], amp=torch.bfloat16)
    assert report['logdet_rel_err'] <= LOGDET_REL_TOL and report['roundtrip_max_abs_err'] <= ROUNDTRIP_TOL, report


def test_amp_option_values():
    assert amp_dtype('bf16') is torch.bfloat16 and amp_dtype(None) is None and amp_dtype('none') is None
    with pytest.raises(ValueError, match="train.amp must be 'bf16'"):
        amp_dtype('fp16', 'train.amp')


def test_train_amp_runs_the_training_step_in_bf16(demo_data, tmp_path):
    """train.amp: bf16 through AdFlowModel (stage 2: NLL + a sample for the GAN), val.amp for sampling."""
    opt = tiny_flow_options(demo_data, 'amp', stage=2, val=False, amp='bf16')
    opt['val'] = {'amp': 'bf16'}
    model = in_process_model(opt, tmp_path)
    seen, seen_ema = [], []
    model.net_g.embed.body[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    model.net_g_ema.embed.body[0].register_forward_hook(lambda m, i, o: seen_ema.append(o.dtype))
    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 3, 32, 32, generator=gen)
    model.feed_data({'lq': F.avg_pool2d(gt, 4), 'gt': gt})
    model.optimize_parameters(1)
    assert seen == [torch.bfloat16]
    assert all(torch.isfinite(torch.as_tensor(v)) for v in model.log_dict.values()), model.log_dict
    assert model.skipped_steps == 0 and model.output.dtype == torch.float32
    sr = model.sample(F.avg_pool2d(gt, 4), 0.8, num_samples=1, seed=0)[0]
    assert torch.isfinite(sr).all() and sr.dtype == torch.float32
    assert seen_ema == [torch.bfloat16]  # val.amp: the EMA network samples in bf16
