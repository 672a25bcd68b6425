"""Checks of image files shared by ``basicsr prepare-data`` and ``basicsr infer``."""
import os
import os.path as osp

__all__ = ['TAIL_BYTES', 'truncation', 'file_truncation', 'exif_orientation', 'apply_orientation']

#: An end marker must lie within this many bytes of the end of the file (tolerates a little trailing padding).
TAIL_BYTES = 1024


def truncation(path, head, tail):
    """Why a PNG or JPEG file is truncated (one line naming it), or None.

    OpenCV decodes a truncated PNG or JPEG without an error, filling the missing part with grey; the file's
    end marker (PNG ``IEND``, JPEG end-of-image) tells. ``head`` holds the file's first bytes (8 suffice),
    ``tail`` its last :data:`TAIL_BYTES`.
    """
    ext = osp.splitext(path)[1].lower()
    if ext == '.png' and head[:8] == b'\x89PNG\r\n\x1a\n' and b'IEND' not in tail:
        return f'{path}: truncated PNG (no IEND chunk at the end); download it again'
    if ext in ('.jpg', '.jpeg') and head[:2] == b'\xff\xd8' and b'\xff\xd9' not in tail:
        return f'{path}: truncated JPEG (no end-of-image marker); download it again'
    return None


def file_truncation(path):
    """:func:`truncation` of a file on disk, reading only its first and last bytes."""
    with open(path, 'rb') as f:
        head = f.read(8)
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - TAIL_BYTES))
        tail = f.read()
    return truncation(path, head, tail)


def exif_orientation(path):
    """The EXIF orientation (1 to 8) of a JPEG file, 1 when it has none (or is not a JPEG)."""
    if osp.splitext(path)[1].lower() not in ('.jpg', '.jpeg'):
        return 1
    from PIL import Image
    try:
        with Image.open(path) as im:
            value = im.getexif().get(0x0112, 1)
    except Exception:  # unreadable EXIF: shown as stored, as viewers do
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(img, orientation):
    """Turn an HxW[xC] array as an image viewer displays a JPEG with this EXIF orientation (PIL's
    ``ImageOps.exif_transpose``): 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
    7 transverse, 8 rotate 90 counter-clockwise."""
    import numpy as np
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops[orientation](img))
