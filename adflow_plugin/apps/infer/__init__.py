"""Super-resolve image files with a trained generator: AdFlow / BaseFlow (flows) or ESRGAN (``basicsr infer``).

The application behind ``basicsr infer``, in four files:

- :mod:`.checkpoint`: the network: an options file or a checkpoint, its architecture recognised
  (:func:`load_network`, :class:`SRNetwork`);
- :mod:`.image_io`: image files in and out (:func:`read_image`, PNG writing, input and output names);
- :mod:`.tiling`: one image through the network, whole or in blended tiles (:func:`upscale`);
- :mod:`.run`: the command over files (:func:`infer`).

Sampling
    A flow (a network with ``condition`` and ``decode``: :class:`~adflow_plugin.archs.adflow_arch.AdFlowNet`)
    draws one output per temperature and sample: the LR embedding is computed once per tile and reused
    for every temperature and sample. Sample ``k`` uses seed ``seed + k`` (tile ``j`` of a tiled image:
    ``seed + k + 1000003 j``, so tiles draw independent noise), the same for every temperature and every
    image: an image's outputs do not depend on the other inputs. Temperature 0 is the deterministic mode.
    Any other network is called as ``net(lq)``; temperatures and samples do not apply to it.
"""
from adflow_plugin.apps.infer.checkpoint import SRNetwork, load_network, rrdbnet_options, select_params
from adflow_plugin.apps.infer.errors import InferError
from adflow_plugin.apps.infer.image_io import (IMAGE_EXTENSIONS, LRImage, check_output_folder, collect_inputs,
                                               output_name, read_image)
from adflow_plugin.apps.infer.run import infer
from adflow_plugin.apps.infer.tiling import (BLEND_CHOICES, BLEND_MODES, DEFAULT_OVERLAP, blend_weights, tile_spans,
                                             tiling_difference, upscale, upscale_iter)

__all__ = [
    'BLEND_CHOICES', 'BLEND_MODES', 'DEFAULT_OVERLAP', 'IMAGE_EXTENSIONS', 'InferError', 'LRImage', 'SRNetwork',
    'blend_weights', 'check_output_folder', 'collect_inputs', 'infer', 'load_network', 'output_name', 'read_image',
    'rrdbnet_options', 'select_params', 'tile_spans', 'tiling_difference', 'upscale', 'upscale_iter'
]
