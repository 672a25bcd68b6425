"""Image operations of ``basicsr prepare-data``: read, crop, cut into sub-images, make and compare LR.

Input. Files whose extension is not an image's are ignored with a warning. A file with an image
extension that cannot be decoded, or is truncated, stops the run with an error naming it.
Grayscale is replicated to three channels, an alpha channel is dropped (not composited) and 16-bit
images are converted to 8 bits (value / 257, rounded); each conversion is logged per file.
"""
import os

import cv2
import numpy as np

from adflow_plugin.data.checksums import sha256_bytes
from adflow_plugin.data.recipe import PNG_COMPRESSION, THRESH_SIZE, PrepareError
from adflow_plugin.utils.img_check import TAIL_BYTES, truncation
from adflow_plugin.utils.matlab_resize import imresize_uint8

__all__ = ['IMG_EXTENSIONS', 'read_image', 'crop_to_multiple', 'subimage_positions']

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')


def _check_complete(path, data):
    """Catch truncated PNG/JPEG files, which OpenCV may decode silently with a grey bottom part."""
    problem = truncation(path, data[:8], data[-TAIL_BYTES:])
    if problem:
        raise PrepareError(problem)


def read_image(path):
    """Read an image as uint8 BGR with 3 channels, converting what can be converted.

    Args:
        path (str): Image file.

    Returns:
        tuple[ndarray, list[str]]: The image (HWC, uint8, BGR) and one message per conversion made
        (grayscale replicated, alpha dropped, 16-bit converted).

    Raises:
        PrepareError: The file is empty, truncated, not an image, or of an unsupported type.
    """
    with open(path, 'rb') as f:
        data = f.read()
    if not data:
        raise PrepareError(f'{path}: empty file, not an image')
    _check_complete(path, data)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise PrepareError(f'{path}: not a readable image (damaged, truncated or not an image file)')
    notes = []
    if img.dtype == np.uint16:
        img = np.floor(img.astype(np.float64) / 257 + 0.5).astype(np.uint8)
        notes.append(f'{path}: 16-bit image converted to 8 bits (value / 257, rounded)')
    elif img.dtype != np.uint8:
        raise PrepareError(f'{path}: {img.dtype} pixels are not supported (8- or 16-bit images only)')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
        notes.append(f'{path}: grayscale image replicated to 3 channels')
    elif img.shape[2] == 4:
        img = np.ascontiguousarray(img[:, :, :3])
        notes.append(f'{path}: alpha channel dropped (not composited)')
    elif img.shape[2] != 3:
        raise PrepareError(f'{path}: {img.shape[2]}-channel images are not supported')
    return img, notes


def crop_to_multiple(img, multiple):
    """Keep the top-left ``(h // multiple * multiple, w // multiple * multiple)`` part."""
    h, w = img.shape[:2]
    return img[:h // multiple * multiple, :w // multiple * multiple]


def subimage_positions(length, crop_size, step, thresh_size=THRESH_SIZE):
    """Start offsets of sub-images along one side, as BasicSR's ``extract_subimages.py`` places them.

    Every ``step`` from 0 while the crop fits, plus one crop flush with the end when more than
    ``thresh_size`` pixels would be left over. Empty when the side is shorter than the crop.
    """
    if length < crop_size:
        return []
    positions = list(range(0, length - crop_size + 1, step))
    if length - (positions[-1] + crop_size) > thresh_size:
        positions.append(length - crop_size)
    return positions


def _write_png(path, img, level=PNG_COMPRESSION):
    """Write a PNG under a temporary name, then rename: a file with the final name is always whole."""
    ok, buf = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, level])
    if not ok:
        raise PrepareError(f'{path}: PNG encoding failed')
    tmp = path + '.part'
    data = buf.tobytes()
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, path)
    return sha256_bytes(data)


def _make_lr(hr, scale, lr_path, hr_path, hr_size, notes):
    """LR of an already cropped HR: MATLAB bicubic, or the pre-made LR file checked and cropped alike."""
    h, w = hr.shape[:2]
    if lr_path is None:
        lr = imresize_uint8(hr, 1 / scale)
    else:
        lr, lr_notes = read_image(lr_path)
        notes.extend(lr_notes)
        h0, w0 = hr_size
        if h0 % scale or w0 % scale or lr.shape[:2] != (h0 // scale, w0 // scale):
            raise PrepareError(f'{lr_path}: LR is {lr.shape[1]}x{lr.shape[0]}, but HR {hr_path} is {w0}x{h0}: '
                               f'expected exactly HR/{scale}')
        lr = lr[:h // scale, :w // scale]
    if lr.shape[:2] != (h // scale, w // scale):  # guards the resize's output size rounding
        raise PrepareError(f'{hr_path}: LR x{scale} came out {lr.shape[1]}x{lr.shape[0]}, expected '
                           f'{w // scale}x{h // scale}')
    return np.ascontiguousarray(lr)


def _max_diff(lr, hr, scale, margin):
    ref = imresize_uint8(hr, 1 / scale)
    if ref.shape != lr.shape:
        return None
    if margin:
        lr, ref = lr[margin:-margin, margin:-margin], ref[margin:-margin, margin:-margin]
    return int(np.abs(lr.astype(np.int16) - ref.astype(np.int16)).max())
