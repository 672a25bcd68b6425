"""SRFlow's own released network, timed with the closures of ``flow_speed.py`` (``--srflow-code DIR``).

The paper's 2.5x is measured against SRFlow's code [30], not against this project's SRFlow-equivalent
configuration (SRFlow's layout built from our layers). This module builds ``SRFlowNet`` from a checkout of
https://github.com/andreas128/SRFlow (its ``code/`` folder; SRFlow's code also imports ``natsort``), with the
settings of its ``confs/SRFlow_DF2K_{4,8}X.yml``, so that both can be timed side by side in one run. Nothing
of SRFlow is copied into this project; the checkout is only imported.

SRFlow's own training keeps the RRDB frozen for the first half (``train_RRDB_delay: 0.5``); it is trained
here, as the RRDB of every other configuration is. Its RRDB also computes the unused full-resolution image
head on every call, as released.
"""
import os.path as osp
import sys


def _code_dir(code_dir):
    return code_dir if osp.isdir(osp.join(code_dir, 'models', 'modules')) else osp.join(code_dir, 'code')


def code_problem(code_dir, scale):
    """Why ``code_dir`` cannot give SRFlow's network at ``scale``, in one line; None if it can."""
    if not code_dir:
        return 'srflow_released needs --srflow-code DIR, a checkout of https://github.com/andreas128/SRFlow'
    code = _code_dir(code_dir)
    for need in (osp.join('models', 'modules', 'SRFlowNet_arch.py'), osp.join('confs', f'SRFlow_DF2K_{scale}X.yml')):
        if not osp.isfile(osp.join(code, need)):
            return (f'--srflow-code {code_dir}: no code/{need} there; give a checkout of '
                    'https://github.com/andreas128/SRFlow')
    return None


def load_srflow_net(code_dir, scale):
    """SRFlow's ``SRFlowNet`` (random weights) with the released layout at ``scale`` (4 or 8)."""
    import yaml
    problem = code_problem(code_dir, scale)
    if problem:
        raise SystemExit(problem)
    code = _code_dir(code_dir)
    conf = osp.join(code, 'confs', f'SRFlow_DF2K_{scale}X.yml')
    sys.path.insert(0, code)
    try:
        from models.modules.SRFlowNet_arch import SRFlowNet
    except ImportError as e:
        raise SystemExit(f'SRFlow\'s code in {code} does not import ({e}); it needs natsort and opencv '
                         '(.venv/bin/pip install natsort)') from None
    with open(conf) as f:
        opt = yaml.safe_load(f)
    net = opt['network_G']
    g = SRFlowNet(net['in_nc'], net['out_nc'], net['nf'], net['nb'], scale=net['upscale'], K=net['flow']['K'],
                  opt=opt)
    g.set_rrdb_training(True)
    return g


def build_released(args, hr, lr, d, gan, opt_d):
    """flow_speed.build's closures for SRFlow's own network: (g, step_nll, step_gan, infer, sample_n)."""
    import torch
    g = load_srflow_net(args.srflow_code, args.scale).to(hr.device)
    opt_g = torch.optim.Adam(g.parameters(), 1e-5)
    z_shape = {}

    def z_like(batch, hr_size, temperature):
        c, h, w = z_shape['chw']
        h, w = h * hr_size // hr.shape[-2], w * hr_size // hr.shape[-1]
        return torch.randn(batch, c, h, w, device=hr.device) * temperature

    def step_nll():
        opt_g.zero_grad()
        z, nll, _ = g(gt=hr, lr=lr, add_gt_noise=True)
        z_shape['chw'] = tuple(z.shape[1:])
        nll.mean().backward()
        opt_g.step()

    def step_gan():  # SRFlow never trained with a GAN: its NLL step plus a sample with gradients and D, as AdFlow's
        opt_g.zero_grad()
        enc = g.rrdbPreprocessing(lr)
        _, nll, _ = g(gt=hr, lr=lr, lr_enc=enc, add_gt_noise=True)
        sr, _ = g(lr=lr, z=z_like(hr.shape[0], hr.shape[-1], 1.0), eps_std=1.0, reverse=True, reverse_with_grad=True,
                  lr_enc=enc)
        (nll.mean() + gan(d(sr), True, is_disc=False)).backward()
        opt_g.step()
        opt_d.zero_grad()
        (gan(d(hr), True, is_disc=True) + gan(d(sr.detach()), False, is_disc=True)).backward()
        opt_d.step()

    def infer():
        g.eval()
        with torch.no_grad():
            g(lr=lr, z=z_like(lr.shape[0], hr.shape[-1], 1.0), eps_std=1.0, reverse=True)
        g.train()

    def sample_n(sample_lr, samples):
        g.eval()
        with torch.no_grad():
            enc = g.rrdbPreprocessing(sample_lr)
            for _ in range(samples):
                g(lr=sample_lr, z=z_like(1, sample_lr.shape[-1] * args.scale, 0.9), eps_std=0.9, reverse=True,
                  lr_enc=enc)
        g.train()

    step_nll()  # ActNorm's data-dependent initialisation, and the latent's shape
    return g, step_nll, step_gan, infer, sample_n
