"""``basicsr study create``: a study folder from the images of several ``basicsr test`` runs.

A study folder holds

    study.json        the plan: methods, images, crops (with the seed), pairs, each participant's trials
    participants.txt  one participant token per line (each participant's link is /p/<token>)
    public/           the only files the server sends: LR images and crops, under random names

Crops are cut from the SR files with array slicing and written as PNG, so no pixel is resampled.
Crop corners lie on the scale grid, so the box drawn on the LR image covers exactly the crop.
"""
import itertools
import json
import os
import os.path as osp
import random
import re
import secrets
import shutil
import tempfile

from adflow_plugin.apps.study import StudyError

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
# what follows "<image>_" in a flow sample's name: t<T>[_s<k>]_<suffix> (README, "basicsr test")
SAMPLE_RE = re.compile(r'^t(?P<t>-?\d+(?:\.\d+)?(?:e-?\d+)?)(?:_s(?P<s>\d+))?_(?P<suffix>.+)$')
METHOD_RE = re.compile(r'^(?P<name>[A-Za-z0-9][A-Za-z0-9_.+-]*)=(?P<dir>.+?)(?::t=(?P<t>[^:]+))?(?::s=(?P<s>\d+))?$')
STUDY_FILE = 'study.json'
PUBLIC = 'public'


def parse_method(spec):
    """``NAME=DIR[:t=T][:s=K]`` -> dict(name, dir, t, s)."""
    m = METHOD_RE.match(spec)
    if not m:
        raise StudyError(f'--method expects NAME=DIR[:t=T][:s=K] (NAME of letters, digits, _.+-), got {spec!r}')
    t = m['t']
    if t is not None:
        try:
            t = float(t)
        except ValueError:
            raise StudyError(f'--method {spec!r}: temperature {m["t"]!r} is not a number') from None
    return dict(name=m['name'], dir=m['dir'], t=t, s=None if m['s'] is None else int(m['s']))


def _image_files(folder, what):
    if not osp.isdir(folder):
        raise StudyError(f'{what} folder {folder} does not exist')
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTS) and osp.isfile(osp.join(folder, f)))
    if not files:
        hint = ''
        if osp.isdir(osp.join(folder, 'visualization')):
            hint = f'; pass the data set folder inside it, e.g. {osp.join(folder, "visualization", "<set>")}'
        raise StudyError(f'{what} folder {folder} has no images{hint}')
    return files


def match_method_files(method, stems):
    """For each LR stem, the one file of ``method`` that shows it.

    A file belongs to the longest LR stem it starts with: ``<stem>.png`` (GT), ``<stem>_<suffix>.png``
    (ESRGAN and other deterministic models) or ``<stem>_t<T>[_s<k>]_<suffix>.png`` (flow samples; the
    method's ``t`` and ``s`` pick one, ``s`` defaulting to 0 and ``t`` to the only temperature there is).
    """
    files = _image_files(method['dir'], f'method {method["name"]}:')
    by_stem = {s: [] for s in stems}
    ordered = sorted(stems, key=len, reverse=True)
    for f in files:
        base = osp.splitext(f)[0]
        for stem in ordered:
            if base == stem:
                by_stem[stem].append((None, None, f))
                break
            if base.startswith(stem + '_'):
                m = SAMPLE_RE.match(base[len(stem) + 1:])
                if m:
                    by_stem[stem].append((float(m['t']), int(m['s'] or 0), f))
                else:
                    by_stem[stem].append((None, None, f))
                break
    chosen = {}
    for stem in stems:
        cands = by_stem[stem]
        if not cands:
            raise StudyError(f'method {method["name"]} has no file for image {stem} in {method["dir"]} '
                             f'(expected {stem}.png, {stem}_<suffix>.png or {stem}_t<T>_s<k>_<suffix>.png); '
                             'every method needs every LR image')
        temps = sorted({c[0] for c in cands if c[0] is not None})
        if method['t'] is not None:
            cands = [c for c in cands if c[0] is not None and abs(c[0] - method['t']) < 1e-9]
            if not cands:
                raise StudyError(f'method {method["name"]}: no sample at temperature {method["t"]:g} for image {stem} '
                                 f'(temperatures there: {", ".join(f"{t:g}" for t in temps) or "none"})')
        elif len(temps) > 1:
            raise StudyError(f'method {method["name"]}: image {stem} has samples at temperatures '
                             f'{", ".join(f"{t:g}" for t in temps)}; '
                             f'pick one with {method["name"]}={method["dir"]}:t=T')
        want_s = 0 if method['s'] is None else method['s']
        if any(c[0] is not None for c in cands):
            picked = [c for c in cands if c[0] is not None and c[1] == want_s]
        else:
            picked = cands
        if len(picked) != 1:
            names = ', '.join(c[2] for c in cands)
            raise StudyError(f'method {method["name"]}: image {stem} has {len(picked)} files for sample s{want_s} '
                             f'({names}); pick one with :t=T and :s=K or keep one result per image in the folder')
        chosen[stem] = osp.join(method['dir'], picked[0][2])
    return chosen


def _read(path):
    import cv2
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise StudyError(f'cannot read image {path}')
    return img


def _balanced_sides(n, rng):
    """n booleans, half True (one more True when n is odd, at random), shuffled."""
    sides = [i % 2 == 0 for i in range(n)]
    if n % 2 and rng.random() < 0.5:
        sides = [not s for s in sides]
    rng.shuffle(sides)
    return sides


def plan_trials(num_crops, pairs, num_participants, rng):
    """Every participant judges every (crop, pair) once, in their own random order.

    Left/right is balanced: within a participant, each method of a pair is on the left in half of that
    pair's trials; participants 2q and 2q+1 see every (crop, pair) on opposite sides.
    Returns a list (per participant) of [crop, pair, first_method_left] triples.
    """
    plans = []
    for p in range(num_participants):
        if p % 2 == 0:
            sides = {}
            for j in range(len(pairs)):
                for c, side in zip(range(num_crops), _balanced_sides(num_crops, rng)):
                    sides[(c, j)] = side
        else:  # the complement of the previous participant's sides
            sides = {key: not side for key, side in sides.items()}
        trials = [[c, j, sides[(c, j)]] for c in range(num_crops) for j in range(len(pairs))]
        rng.shuffle(trials)
        plans.append(trials)
    return plans


def create_study(study_dir, methods, lr_dir, crop_size=128, crops_per_image=3, participants=5, seed=None,
                 images=None):
    """Validate everything, then build the study folder in one step (a temporary folder renamed at the end).

    Args:
        study_dir (str): folder to create; must not exist.
        methods (list[dict]): ``parse_method`` results, two or more, distinct names.
        lr_dir (str): the LR inputs the methods were run on (their stems name the images).
        crop_size (int): crop side in SR pixels, a multiple of the scale.
        crops_per_image (int): random crops per image (paper: 3).
        participants (int): number of participant tokens (paper: 5).
        seed (int | None): seed of crop positions and presentation orders; drawn and recorded when None.
        images (int | None): use only the first N LR images (sorted by name).
    Returns:
        dict: the plan written to ``study.json``.
    """
    if osp.exists(study_dir):
        raise StudyError(f'{study_dir} already exists; choose a new study folder (a study is never overwritten)')
    if len(methods) < 2:
        raise StudyError('a study needs at least two methods (--method NAME=DIR, repeated)')
    names = [m['name'] for m in methods]
    if len(set(names)) != len(names):
        raise StudyError(f'method names must be distinct, got {", ".join(names)}')
    for key, value, low in (('--crop-size', crop_size, 1), ('--crops-per-image', crops_per_image, 1),
                            ('--participants', participants, 1), ('--images', 1 if images is None else images, 1)):
        if value < low:
            raise StudyError(f'{key} must be at least {low}, got {value}')
    lr_files = _image_files(lr_dir, 'LR')
    if images is not None:
        lr_files = lr_files[:images]
    stems = [osp.splitext(f)[0] for f in lr_files]
    if len(set(stems)) != len(stems):
        raise StudyError(f'LR folder {lr_dir} has two files with the same name stem')
    files = {m['name']: match_method_files(m, stems) for m in methods}

    # sizes: every method's image of a stem has one size, an integer multiple of the LR's
    scale, shapes = None, {}
    for stem, lr_file in zip(stems, lr_files):
        lr_h, lr_w = _read(osp.join(lr_dir, lr_file)).shape[:2]
        ref = None
        for name in names:
            h, w = _read(files[name][stem]).shape[:2]
            if ref is None:
                ref = (name, h, w)
            elif (h, w) != ref[1:]:
                raise StudyError(f'image {stem}: {ref[0]} is {ref[2]}x{ref[1]} but {name} is {w}x{h}; all methods '
                                 'must super-resolve the same LR images at the same scale')
        h, w = ref[1:]
        if h % lr_h or w % lr_w or h // lr_h != w // lr_w:
            raise StudyError(f'image {stem}: SR {w}x{h} is no integer multiple of LR {lr_w}x{lr_h} '
                             f'({osp.join(lr_dir, lr_file)}); pass the LR inputs the methods were run on')
        s = h // lr_h
        if scale is not None and s != scale:
            raise StudyError(f'image {stem} is at scale {s} but earlier images at {scale}; one study, one scale')
        scale = s
        shapes[stem] = (h, w, lr_h, lr_w)
    for stem, (h, w, _, _) in shapes.items():
        if crop_size > min(h, w):
            raise StudyError(f'--crop-size {crop_size} is larger than image {stem} ({w}x{h})')
    if crop_size % scale:
        raise StudyError(f'--crop-size {crop_size} is no multiple of the scale {scale} '
                         '(the LR box must be whole pixels)')

    seed = secrets.randbelow(2**31) if seed is None else int(seed)
    rng = random.Random(seed)
    pairs = [list(p) for p in itertools.combinations(names, 2)]
    parent = osp.dirname(osp.abspath(study_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.study-', dir=parent)
    try:
        import cv2
        os.makedirs(osp.join(tmp, PUBLIC))
        image_list, crops = [], []
        for stem, lr_file in zip(stems, lr_files):
            h, w, lr_h, lr_w = shapes[stem]
            lr_public = secrets.token_hex(8) + '.png'
            lr_src = osp.join(lr_dir, lr_file)
            if lr_file.lower().endswith('.png'):
                shutil.copyfile(lr_src, osp.join(tmp, PUBLIC, lr_public))
            else:
                cv2.imwrite(osp.join(tmp, PUBLIC, lr_public), _read(lr_src))
            image_list.append(dict(name=stem, lr=lr_src, lr_public=lr_public, lr_size=[lr_w, lr_h], sr_size=[w, h],
                                   sources={n: files[n][stem] for n in names}))
            cell = crop_size // scale
            arrays = {n: _read(files[n][stem]) for n in names}
            for _ in range(crops_per_image):
                x = rng.randrange(0, lr_w - cell + 1) * scale
                y = rng.randrange(0, lr_h - cell + 1) * scale
                public = {}
                for n in names:
                    public[n] = secrets.token_hex(8) + '.png'
                    cv2.imwrite(osp.join(tmp, PUBLIC, public[n]), arrays[n][y:y + crop_size, x:x + crop_size])
                crops.append(dict(id=len(crops), image=len(image_list) - 1, x=x, y=y, size=crop_size, files=public))
        tokens = [secrets.token_urlsafe(12) for _ in range(participants)]
        plans = plan_trials(len(crops), pairs, participants, rng)
        plan = dict(
            version=1, seed=seed, scale=scale, crop_size=crop_size, crops_per_image=crops_per_image,
            methods=[dict(name=m['name'], dir=osp.abspath(m['dir']), t=m['t'], s=m['s']) for m in methods],
            lr_dir=osp.abspath(lr_dir), images=image_list, crops=crops, pairs=pairs,
            participants={tok: trials for tok, trials in zip(tokens, plans)})
        with open(osp.join(tmp, STUDY_FILE), 'w') as f:
            json.dump(plan, f, indent=1)
        with open(osp.join(tmp, 'participants.txt'), 'w') as f:
            f.write(''.join(t + '\n' for t in tokens))
        os.rename(tmp, study_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return plan


def load_study(study_dir):
    """The plan of a study folder made by ``create_study``."""
    path = osp.join(study_dir, STUDY_FILE)
    if not osp.isfile(path):
        raise StudyError(f'{study_dir} is no study folder (no {STUDY_FILE}); make one with "basicsr study create"')
    with open(path) as f:
        return json.load(f)
