"""The settings of BasicSR's DF2K recipe as ``basicsr prepare-data`` applies them, and its one error type.

Sizes. A training HR image is cropped (top-left corner kept, as BasicSR's validation crop keeps it)
to a multiple of 48 = lcm(4, 6, 8, 16), so its LR at every scale is exactly HR/s, every sub-image
position is a multiple of every scale, and the HR sub-images do not depend on which scales are
requested. LR sub-images are cut from the whole-image LR at 480/s every 240/s, so the key
``0001_s007`` names the same region in every LMDB. A test GT image is cropped to a multiple of the
lcm over the requested scales of (scale, flow level layout): 8 at 4x, 48 at 6x, 16 at 8x, so one GT
folder serves every scale and LR = GT/s exactly.
"""
import math
from functools import reduce

__all__ = ['PrepareError', 'SCALES', 'CROP_SIZE', 'STEP', 'THRESH_SIZE', 'TRAIN_HR_MULTIPLE', 'hr_multiple']

SCALES = (4, 6, 8)
# HR side multiple the flow's level layout needs: 2**levels, 3 levels at 4x and 4 levels at 6x and 8x
FLOW_LEVEL_MULTIPLE = {4: 8, 6: 16, 8: 16}
# BasicSR's DF2K recipe (extract_subimages.py)
CROP_SIZE = 480
STEP = 240
THRESH_SIZE = 0
PNG_COMPRESSION = 3  # test-set PNGs, as extract_subimages.py writes its sub-images
LMDB_COMPRESSION = 1  # make_lmdb_from_imgs' default
# sub-image PNGs only live until make_lmdb_from_imgs re-encodes them at its level: write them at
# that level too (PNG encoding is a third of the run time at level 3)
SUB_PNG_COMPRESSION = LMDB_COMPRESSION
INFO_FILE = 'prepare_info.json'  # every set folder's record of its settings and sources
# LR pixels next to a sub-image (or a pre-made LR's crop) border where bicubic(HR) cannot be
# recomputed from the HR alone: the bicubic kernel reaches 2 LR pixels
VERIFY_MARGIN = 2


class PrepareError(ValueError):
    """A problem with the input or the output folders, stated in one line."""


def _lcm(values):
    return reduce(lambda a, b: a * b // math.gcd(a, b), values, 1)


def hr_multiple(scales):
    """Multiple that every HR side must have so that each scale and its flow level layout divide it.

    ``hr_multiple([4]) == 8``, ``hr_multiple([8]) == 16``, ``hr_multiple([6]) == 48``,
    ``hr_multiple([4, 6, 8]) == 48``.
    """
    return _lcm(_lcm([s, FLOW_LEVEL_MULTIPLE[s]]) for s in scales)


TRAIN_HR_MULTIPLE = hr_multiple(SCALES)  # 48, whatever scales a run asks for
