"""Validation during training embeds each image once, for all its temperatures and samples."""
import torch
from basicsr.data import build_dataloader, build_dataset

from tests.conftest import in_process_model, tiny_flow_options


def test_validation_embeds_each_image_once(demo_data, tmp_path):
    torch.manual_seed(0)
    opt = tiny_flow_options(demo_data, 'reuse')
    assert len(opt['val']['temperature']) == 2 and opt['val']['num_samples'] == 2
    model = in_process_model(opt, tmp_path)
    ds_opt = dict(opt['datasets']['val'], phase='val', scale=opt['scale'])
    loader = build_dataloader(build_dataset(ds_opt), ds_opt, num_gpu=0, dist=False, sampler=None, seed=0)
    embed = model.net_g_ema.embed
    calls = []
    trunk = embed.trunk
    embed.trunk = lambda x: (calls.append(tuple(x.shape)), trunk(x))[1]  # counts the real embedding's calls
    model.nondist_validation(loader, 1, None, save_img=False)
    assert len(loader) >= 2 and len(calls) == len(loader), (len(calls), len(loader))
    assert set(model.metric_results) == {'psnr_t0', 'psnr_t0.8', 'lr_psnr_t0', 'lr_psnr_t0.8'}
