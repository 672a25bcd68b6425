"""Where ``basicsr prepare-data`` finds its input: the sets, their download layouts, pre-made LR folders.

Each set names the folders, under the downloads folder, where its archive may have been unpacked
(DIV2K, Flickr2K, BSD100, Urban100: the layouts ``datasets/README.md`` lists); the first that exists is
used. :func:`find_source_images` accepts the layouts inside such a folder.

Held out. The last ``holdout`` (30) Flickr2K images by name (000002621 ... 000002650 of the 2650; at
most half of the Flickr2K images found) are left out of the DF2K LMDBs and written like a test set to
``DF2K_holdout``: the training options select their best checkpoint on it (the paper selects on
training data), so the evaluation sets are used only by ``basicsr test``.
"""
import os
import os.path as osp
import re
from dataclasses import dataclass, field

from adflow_plugin.data.checksums import sha256_files
from adflow_plugin.data.image_ops import IMG_EXTENSIONS
from adflow_plugin.data.recipe import PrepareError

__all__ = [
    'SET_NAMES', 'TRAIN_SETS', 'TEST_SETS', 'HOLDOUT_SET', 'HOLDOUT_COUNT', 'Source', 'find_source_images',
    'pair_lr_folder', 'split_holdout'
]


@dataclass(frozen=True)
class SourceSpec:
    """One download folder of a set: ``candidates`` are tried in order under the downloads folder."""
    source_id: str
    candidates: tuple
    archive: str


TRAIN_SETS = {
    'DF2K': (SourceSpec('DIV2K_train_HR', ('DIV2K_train_HR', ), 'DIV2K_train_HR.zip (DIV2K, 800 images)'),
             SourceSpec('Flickr2K_HR', ('Flickr2K/Flickr2K_HR', 'Flickr2K_HR'), 'Flickr2K.tar (2650 images)')),
}
TEST_SETS = {
    'DIV2K_val': (SourceSpec('DIV2K_valid_HR', ('DIV2K_valid_HR', ), 'DIV2K_valid_HR.zip (100 images)'), ),
    'BSD100': (SourceSpec('BSD100', ('BSD100', 'B100', 'BSDS100'), 'BSD100 HR images (e.g. benchmark/B100/HR)'), ),
    'Urban100': (SourceSpec('Urban100', ('Urban100', ), 'Urban100 HR images (e.g. benchmark/Urban100/HR)'), ),
}
SET_NAMES = tuple(TRAIN_SETS) + tuple(TEST_SETS)
HOLDOUT_SET = 'DF2K_holdout'  # written with DF2K: training images kept out of its LMDBs, for validation
HOLDOUT_SOURCE = 'Flickr2K_HR'
HOLDOUT_COUNT = 30


@dataclass
class Source:
    """A found download folder: ``images`` maps the output stem to the file path."""
    set_name: str
    spec: SourceSpec
    folder: str
    images: dict
    ignored: list = field(default_factory=list)


def _list_folder(folder):
    """(image files, ignored non-image files) directly in ``folder``, sorted; hidden files skipped."""
    images, ignored = [], []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith('.') or not entry.is_file():
            continue
        (images if entry.name.lower().endswith(IMG_EXTENSIONS) else ignored).append(entry.path)
    return images, ignored


_SELFEXSR_HR = re.compile(r'^(?P<stem>.+)_SRF_\d+_HR$')


def find_source_images(folder):
    """Image files of one HR download folder, in one of the accepted layouts.

    Accepted, in this order: images directly in ``folder``; images in ``folder/HR`` (EDSR's
    ``benchmark.tar``: ``benchmark/B100/HR``, ``benchmark/Urban100/HR``); ``*_HR.*`` files in the first
    ``folder/image_SRF_*`` (the SelfExSR release; ``img_001_SRF_4_HR.png`` becomes ``img_001``).

    Returns:
        tuple[dict, list]: ``{stem: path}`` and the ignored non-image files.

    Raises:
        PrepareError: Missing folder, no images, or two files with the same stem.
    """
    if not osp.isdir(folder):
        raise PrepareError(f'folder not found: {folder}')
    images, ignored = _list_folder(folder)
    stem_of = lambda p: osp.splitext(osp.basename(p))[0]  # noqa: E731
    if not images and osp.isdir(osp.join(folder, 'HR')):
        images, more = _list_folder(osp.join(folder, 'HR'))
        ignored += more
    if not images:
        srf = sorted(d for d in os.listdir(folder) if d.startswith('image_SRF_') and osp.isdir(osp.join(folder, d)))
        if srf:
            files, _ = _list_folder(osp.join(folder, srf[0]))
            images = [p for p in files if _SELFEXSR_HR.match(stem_of(p))]
            stem_of = lambda p: _SELFEXSR_HR.match(osp.splitext(osp.basename(p))[0]).group('stem')  # noqa: E731
    if not images:
        raise PrepareError(f'{folder} holds no images (expected them directly in it, in HR/, or as '
                           'image_SRF_4/*_HR.png)')
    found = {}
    for p in images:
        stem = stem_of(p)
        if stem in found:
            raise PrepareError(f'{found[stem]} and {p} have the same name; keep one')
        found[stem] = p
    return found, ignored


def _resolve_source(downloads, set_name, spec):
    for cand in spec.candidates:
        folder = osp.join(downloads, cand)
        if osp.isdir(folder):
            images, ignored = find_source_images(folder)
            return Source(set_name, spec, folder, images, ignored)
    raise PrepareError(f'{set_name}: folder not found: {osp.join(downloads, spec.candidates[0])} (put the folder '
                       f'of {spec.archive} there, see datasets/README.md, or leave {set_name} out of --sets)')


def pair_lr_folder(lr_folder, scale, sources):
    """Match a pre-made LR folder to the HR source whose names it pairs with, one to one.

    An LR file pairs with HR ``<stem>.*`` when it is named ``<stem>.*`` or ``<stem>x<scale>.*`` (DIV2K's
    and Flickr2K's official ``DIV2K_train_LR_bicubic/X4/0001x4.png``). Sizes are checked when read.

    Returns:
        tuple[Source, dict]: The source and ``{stem: LR path}``.

    Raises:
        PrepareError: No source pairs, or some names have no partner on either side.
    """
    if not osp.isdir(lr_folder):
        raise PrepareError(f'LR folder not found: {lr_folder}')
    files, _ = _list_folder(lr_folder)
    if not files:
        raise PrepareError(f'LR folder {lr_folder} holds no images')
    best = None
    for src in sources:
        paired, extra = {}, []
        for p in files:
            stem = osp.splitext(osp.basename(p))[0]
            if stem.endswith(f'x{scale}') and stem[:-len(f'x{scale}')] in src.images:
                stem = stem[:-len(f'x{scale}')]
            (extra.append(p) if stem not in src.images else paired.__setitem__(stem, p))
        if best is None or len(paired) > len(best[1]):
            best = (src, paired, extra)
    src, paired, extra = best
    if not paired:
        raise PrepareError(f'LR folder {lr_folder}: no file pairs with an HR image of '
                           f'{", ".join(s.folder for s in sources)} (e.g. {osp.basename(files[0])})')
    missing = sorted(set(src.images) - set(paired))
    if missing or extra:
        raise PrepareError(
            f'LR folder {lr_folder} does not pair with HR folder {src.folder}: {len(missing)} HR images without '
            f'LR{" (e.g. " + missing[0] + ")" if missing else ""}, {len(extra)} LR images without HR'
            f'{" (e.g. " + osp.basename(extra[0]) + ")" if extra else ""}')
    return src, paired


def split_holdout(sources, count=HOLDOUT_COUNT):
    """Split DF2K's sources into (training sources, held-out source or None).

    The held-out images are the last ``count`` Flickr2K images in name order (000002621 ... 000002650
    of the full download), at most half of the Flickr2K images found; ``count`` 0 holds out nothing.
    """
    if count < 0:
        raise PrepareError(f'--holdout must be 0 or more, got {count}')
    train, held = [], None
    for src in sources:
        if src.spec.source_id == HOLDOUT_SOURCE and count:
            stems = sorted(src.images)
            take = min(count, len(stems) // 2)
            if take:
                keep, out = stems[:-take], stems[-take:]
                held = Source(HOLDOUT_SET, src.spec, src.folder, {s: src.images[s] for s in out})
                src = Source(src.set_name, src.spec, src.folder, {s: src.images[s] for s in keep}, src.ignored)
        train.append(src)
    return train, held


def _sources_info(sources):
    return {src.spec.source_id: {osp.basename(p): osp.getsize(p) for p in src.images.values()} for src in sources}


def _sources_sha256(sources, workers):
    """``{source id: {file name: sha256}}``: a source replaced by another of the same size is noticed."""
    digests = sha256_files([p for src in sources for p in src.images.values()], workers)
    return {src.spec.source_id: {osp.basename(p): digests[p] for p in src.images.values()} for src in sources}


def _lr_info(scales, lr_map, sources):
    """Per scale, where its LR comes from: 'bicubic', or the pre-made folder of each source."""
    info = {}
    for s in scales:
        made = {src.spec.source_id: osp.abspath(lr_map[(src.spec.source_id, s)][0])
                for src in sources if (src.spec.source_id, s) in lr_map}
        info[str(s)] = made or 'bicubic'
    return info
