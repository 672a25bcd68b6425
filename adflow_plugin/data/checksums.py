"""SHA-256 checksums of ``basicsr prepare-data``'s source images and test-set outputs.

Source images: a download replaced by another of the same size (a re-encoded or corrected image) is
noticed on the next run, which a file size alone misses. Outputs: every GT and LR PNG of a test set is
recorded in ``<set>/SHA256SUMS`` (``sha256sum``'s format) when it is written, so ``--verify`` finds any file
changed or swapped afterwards, not only those in its bicubic sample. Hashing reads each file once, far
cheaper than the bicubic resize that made it.
"""
import hashlib
import os.path as osp
from concurrent.futures import ThreadPoolExecutor

__all__ = ['SUMS_FILE', 'sha256_bytes', 'sha256_file', 'sha256_files', 'read_sums', 'append_sums']

SUMS_FILE = 'SHA256SUMS'
_BLOCK = 1 << 20


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(_BLOCK), b''):
            h.update(block)
    return h.hexdigest()


def sha256_files(paths, workers=4):
    """``{path: hex digest}``; hashlib releases the GIL on large buffers, so threads read in parallel."""
    paths = list(paths)
    with ThreadPoolExecutor(max(1, min(workers, len(paths) or 1))) as pool:
        return dict(zip(paths, pool.map(sha256_file, paths)))


def read_sums(set_dir):
    """``{relative path: hex digest}`` from ``set_dir/SHA256SUMS``; a torn last line is ignored."""
    sums = {}
    path = osp.join(set_dir, SUMS_FILE)
    if osp.isfile(path):
        with open(path) as f:
            for line in f:
                digest, sep, name = line.rstrip('\n').partition('  ')
                if sep and len(digest) == 64 and line.endswith('\n'):
                    sums[name] = digest
    return sums


def append_sums(set_dir, entries):
    """Append ``{relative path: hex digest}`` to ``set_dir/SHA256SUMS`` (flushed: a kill loses at most a line)."""
    if not entries:
        return
    with open(osp.join(set_dir, SUMS_FILE), 'a') as f:
        for name, digest in entries.items():
            f.write(f'{digest}  {name}\n')
        f.flush()
