"""Sizes and budgets of ``basicsr reproduce``: one shared encoder size per preset, the same data, patch
size, batch, seed and iteration budget for every method.

Estimated seconds per training iteration (``sec_per_iter``) only drive the progress line's "time left";
the pipeline corrects them by what it measures as it goes.
"""
import copy

SCALE = 4
LADDER_K = (1, 2, 4)  # Fig. 7's flow depths; K = 0 is the L1 rung

_BASE = dict(
    scale=SCALE,
    ks=LADDER_K,
    main_k=4,  # the K of the Table-2 rows (BaseFlow, AdFlow)
    seed=0,
    holdout=2,  # training-side photographs held out for checkpoint selection (the paper selects on training data)
    holdout_size=128,  # centre crop of each held-out photograph (HR side) used for selection
    baseflow_temperature=0.9,  # paper Sec. 4: BaseFlow samples at 0.9
    adflow_temperatures=(1.0, 0.8),  # paper: AdFlow at 1.0; the picture shows a second, lower temperature
    # every flow is also tested at T = 0 (each latent at its mode): the deterministic output, to set beside
    # the L1 RRDB's and ESRGAN's on the Fig. 7 ladder (a sample at T > 0 pays for its noise in LR-PSNR)
    test_mode=True,
    lr=5e-4,  # Adam, every stage-1 model (L1 RRDB, BaseFlow)
    lr_stage2=1e-4,  # Adam for the generator in the adversarial stage (ESRGAN, AdFlow)
    lr_d=1e-4,  # Adam for the discriminator
    d_feat=16,  # discriminator width (paper Sec. 3.4: 16), the same for ESRGAN and AdFlow here
    gan_weight_adflow=1e-2,  # the paper's lambda at 4x, on SRFlow's per-pixel NLL (as options/train_AdFlow_x4.yml)
    esrgan_weights=dict(pixel=1e-2, perceptual=1.0, gan=5e-3),  # BasicSR's stock ESRGAN recipe
    ema_decay=0.99,  # the EMA's horizon (1 / (1 - decay) iterations) must be well below the run's length
    grad_clip_norm=50,
    val_per_run=4,  # validations on the held-out crops per training run
    # training sub-images with less detail than the flow's dequantisation noise (data.detail) are left out:
    # on the mate photographs 77 % of 64-pixel patches are that smooth, and there the discriminator of
    # stage 2 cannot tell the flow's samples from the real images (benchmarks/discriminator_probe.py)
    min_detail=0.009,
)

PRESETS = {
    # for the test suite: every stage on tiny inputs in seconds; says nothing about the method
    'tiny': dict(_BASE, num_feat=8, num_block=1, num_grow_ch=4, hidden=8, ks=(1, 2), main_k=2, gt_size=32,
                 batch=2, crop=64, step=64, eval_size=64, holdout_size=64, num_samples=2, ema_decay=0.9, min_detail=0,
                 iters=dict(l1=4, esrgan=2, baseflow=4, adflow=2),
                 sec_per_iter=dict(l1=0.05, esrgan=0.1, baseflow=0.1, adflow=0.15)),
    # 9.2 minutes on 2 CPU cores: the pipeline and rough numbers, not the claims. Measured at this size
    # on the scikit-image photographs: the L1 RRDB's LR-PSNR still rises by about 0.6 dB per 1000
    # iterations at 12000 (38.2 dB, bicubic 40.6), and a BaseFlow K=4 started from it needs about 6000
    # iterations to come back to its starting point (29.2 dB at 1000, 36.9 at 4000, 38.9 at 7000)
    # It keeps every sub-image (min_detail 0), as measured; its stage 2 is too short for a live discriminator
    'quick': dict(_BASE, num_feat=16, num_block=2, num_grow_ch=8, hidden=16, gt_size=48, batch=4, crop=144,
                  step=288, eval_size=128, num_samples=4, ema_decay=0.98, min_detail=0,
                  iters=dict(l1=3000, esrgan=500, baseflow=1800, adflow=500),
                  sec_per_iter=dict(l1=0.015, esrgan=0.09, baseflow=0.06, adflow=0.08)),
    # the CPU preset (2 cores): the published numbers come from this one. Measured at this size on the
    # scikit-image photographs: the L1 RRDB passes bicubic's LR-PSNR (40.6 dB) between 3000 and 4000
    # iterations (32.0, 36.3, 39.6, 41.6 dB at 1000-4000), and a BaseFlow K=4 started from it falls to
    # 34.5 dB at T = 0.9 after 1000 iterations and climbs back more and more slowly (38.6 at 2000, 40.2 at
    # 3000), so the flows get 4000 iterations. Sub-images are cut at the patch size (64 px), so that the detail
    # filter (min_detail) judges exactly the patches the networks see: with 96-pixel sub-images K=4's stage-2
    # discriminator stayed at chance for 2000 iterations in two runs (and at D learning rates 4e-4 and 1e-3),
    # with 64-pixel ones it separated from about iteration 1300. Stage 2 gets 3000 iterations so that K=4's
    # adversarial game runs for more than a few hundred of them; ESRGAN gets the same budget
    'full': dict(_BASE, num_feat=32, num_block=4, num_grow_ch=16, hidden=32, gt_size=64, batch=8, crop=64,
                 step=64, eval_size=256, num_samples=10,
                 iters=dict(l1=4000, esrgan=3000, baseflow=4000, adflow=3000),
                 sec_per_iter=dict(l1=0.07, esrgan=0.31, baseflow=0.22, adflow=0.33)),
    # one large GPU, about 8 minutes, a wider encoder and the paper's patch size
    'gpu': dict(_BASE, num_feat=64, num_block=8, num_grow_ch=32, hidden=64, gt_size=160, batch=12, crop=240,
                step=240, eval_size=512, num_samples=10, num_gpu=1, ema_decay=0.999,
                iters=dict(l1=4000, esrgan=1500, baseflow=4000, adflow=1500),  # not run yet
                sec_per_iter=dict(l1=0.01, esrgan=0.03, baseflow=0.02, adflow=0.03)),
}


def get_preset(name, **overrides):
    """A copy of preset ``name`` with ``overrides`` applied (``None`` values are ignored)."""
    if name not in PRESETS:
        raise KeyError(f'unknown preset {name!r}; choose one of {sorted(PRESETS)}')
    preset = copy.deepcopy(PRESETS[name])
    preset.update({k: v for k, v in overrides.items() if v is not None})
    preset.setdefault('num_gpu', 0)
    preset['name'] = name
    if preset['main_k'] not in preset['ks']:
        raise ValueError(f'main_k {preset["main_k"]} must be one of ks {preset["ks"]}')
    return preset
