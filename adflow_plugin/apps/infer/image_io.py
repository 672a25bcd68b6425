"""Image files in and out of ``basicsr infer``: reading any 8- or 16-bit image, writing whole PNGs, names.

Read with ``cv2.IMREAD_UNCHANGED``: 8- or 16-bit, grayscale, grayscale + alpha, colour or colour +
alpha. The network sees RGB floats in [0, 1] (16-bit inputs at full precision). Grayscale is processed
as three equal channels and converted back to one (ITU-R BT.601 luma, as ``cv2.COLOR_BGR2GRAY``);
alpha is upscaled separately by bicubic interpolation (it is not the LR -> SR path) and re-attached;
the bit depth is kept (a 16-bit grayscale + alpha output is stored as RGBA with three equal channels:
OpenCV and Pillow write no 16-bit grayscale + alpha PNG). A JPEG's EXIF orientation is applied as image
viewers apply it, so the output (which carries no EXIF) displays as the input does. A truncated PNG or
JPEG (no end marker; OpenCV would decode it with a grey lower part) stops the run before anything is
written, as in ``basicsr prepare-data``. The LR is padded (reflect) to a multiple of
the network's ``lr_multiple`` and the output cropped back to ``scale`` x the input size. Outputs are
PNG (lossless; holds 16 bits and alpha).
"""
import os
import os.path as osp
from dataclasses import dataclass

import cv2
import numpy as np

from adflow_plugin.apps.infer.errors import InferError
from adflow_plugin.utils.img_check import TAIL_BYTES, apply_orientation, exif_orientation, truncation

#: File extensions treated as images (lower case); other files in an input folder are skipped.
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.pnm', '.jp2')
_MAX_VALUE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


@dataclass
class LRImage:
    """An input image prepared for the network.

    Attributes:
        bgr (ndarray): float32 HxWx3 in [0, 1] (grayscale replicated to three channels).
        alpha (ndarray | None): float32 HxW in [0, 1].
        gray (bool): The file was single-channel: the output is converted back to one channel.
        dtype (np.dtype): uint8 or uint16: the output's bit depth.
    """
    bgr: np.ndarray
    alpha: np.ndarray = None
    gray: bool = False
    dtype: np.dtype = np.dtype(np.uint8)

    def describe(self):
        kind = 'grayscale' if self.gray else 'colour'
        return f'{self.bgr.shape[1]}x{self.bgr.shape[0]} {kind}{" + alpha" if self.alpha is not None else ""}, ' \
               f'{8 * self.dtype.itemsize}-bit'


def read_image(path):
    """Read an 8- or 16-bit image file (grayscale, grayscale + alpha, colour or colour + alpha) as an
    :class:`LRImage`, a JPEG turned as its EXIF orientation says."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise InferError(f'{path}: cannot be read: {e.strerror}') from None
    problem = truncation(path, data[:8], data[-TAIL_BYTES:])
    if problem:
        raise InferError(problem)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if img is None:
        raise InferError(f'{path}: cannot be decoded as an image')
    img = apply_orientation(img, exif_orientation(path))
    # PNG colour type 4 (IHDR byte 25) is grayscale + alpha, which OpenCV expands to four channels
    gray_alpha = data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 25 and data[25] == 4
    if img.dtype not in _MAX_VALUE:
        raise InferError(f'{path}: pixel type {img.dtype} is not supported (8- and 16-bit images only)')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    maxval = _MAX_VALUE[img.dtype]
    alpha = None
    if img.ndim == 2:
        gray = True
        bgr = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] in (3, 4):
        gray = gray_alpha and img.shape[2] == 4
        bgr = img[:, :, :3]
        if img.shape[2] == 4:
            alpha = img[:, :, 3].astype(np.float32) / maxval
    else:
        raise InferError(f'{path}: {img.shape[2]} channels are not supported (1, 3 or 4)')
    return LRImage(bgr.astype(np.float32) / maxval, alpha, gray, img.dtype)


def _quantize(img, dtype):
    maxval = _MAX_VALUE[np.dtype(dtype)]
    return np.round(np.clip(img, 0, 1) * maxval).astype(dtype)


def _finalizer(lr_image):
    """Float BGR rows of the SR -> stored rows: clipped, back to one channel for grayscale, quantised."""

    def finalize(rows):
        rows = np.clip(rows, 0, 1)
        if lr_image.gray:
            rows = cv2.cvtColor(np.ascontiguousarray(rows), cv2.COLOR_BGR2GRAY)
        return _quantize(rows, lr_image.dtype)

    return finalize


def _with_alpha(sr, alpha, dtype):
    """Attach the bicubic-upscaled alpha to a stored SR image."""
    if alpha is None:
        return sr
    h, w = sr.shape[:2]
    a = _quantize(cv2.resize(alpha, (w, h), interpolation=cv2.INTER_CUBIC), dtype)
    if sr.ndim == 2 and np.dtype(dtype) == np.uint8:
        return np.dstack([sr, a])  # grayscale + alpha
    color = sr if sr.ndim == 3 else cv2.cvtColor(sr, cv2.COLOR_GRAY2BGR)
    return np.dstack([color, a])


def _encode_png(img):
    if img.ndim == 3 and img.shape[2] == 2:  # 8-bit grayscale + alpha: OpenCV writes 1, 3 or 4 channels only
        import io

        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(img), 'LA').save(buf, format='PNG')
        return buf.getvalue()
    ok, buf = cv2.imencode('.png', img)
    return buf.tobytes() if ok else None


def _write_png(path, img):
    """Write a PNG whole or not at all: an interrupted run or a full disk leaves no partial file behind."""
    data = _encode_png(img)
    if data is None:
        raise InferError(f'could not encode {path} as PNG')
    partial = path + '.partial'
    try:
        with open(partial, 'wb') as f:
            f.write(data)
        os.replace(partial, path)
    except BaseException as e:
        try:
            os.remove(partial)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise InferError(f'could not write {path}: {e.strerror}; nothing partial was left') from None
        raise


def check_output_folder(output):
    """Refuse an ``--output`` that names a file, lies under a file or has a name too long to create."""
    if osp.exists(output) and not osp.isdir(output):
        raise InferError(f'--output {output} is a file, not a folder; name a folder (it is created if missing)')
    parent = output
    while not osp.exists(parent or '.'):
        name = osp.basename(parent.rstrip(os.sep)) or parent
        if len(os.fsencode(name)) > 255:
            raise InferError(f'cannot create the --output folder {output}: the name {name[:20]}... is longer than '
                             '255 bytes')
        up = osp.dirname(parent.rstrip(os.sep))
        if up == parent:
            break
        parent = up
    if parent and osp.exists(parent) and not osp.isdir(parent):
        raise InferError(f'cannot create the --output folder {output}: {parent} is a file, not a folder')


def output_name(stem, scale, temperature=None, sample=None):
    """``<stem>_x<scale>_t<T>_s<k>.png`` for a flow sample, ``<stem>_x<scale>.png`` for a deterministic network
    (T printed as ``%g``: ``t1``, ``t0.9``, ``t0``)."""
    if temperature is None:
        return f'{stem}_x{scale}.png'
    return f'{stem}_x{scale}_t{float(temperature):g}_s{sample}.png'


def collect_inputs(paths):
    """Image files named by ``paths`` (files, or folders: their files, sorted, not recursive).

    Returns:
        (list[str], list[str]): the image files, and one message per skipped folder entry.
    """
    files, skipped = [], []
    for path in paths:
        if osp.isdir(path):
            entries = sorted(os.listdir(path))
            for name in entries:
                full = osp.join(path, name)
                if osp.isdir(full):
                    skipped.append(f'skipped {full}: a folder (folders are not searched recursively)')
                elif osp.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                    files.append(full)
                else:
                    skipped.append(f'skipped {full}: not an image file (image extensions: '
                                   f'{" ".join(IMAGE_EXTENSIONS)})')
        elif osp.isfile(path):
            if osp.splitext(path)[1].lower() not in IMAGE_EXTENSIONS:
                raise InferError(f'{path} is not an image file (image extensions: {" ".join(IMAGE_EXTENSIONS)})')
            files.append(path)
        else:
            raise InferError(f'input not found: {path}')
    return files, skipped
