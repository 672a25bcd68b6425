"""One image through the network, whole or in overlapping tiles blended together.

With ``tile`` > 0 the (padded) LR is cut into tiles of ``tile`` x ``tile`` LR pixels, spread evenly so
that neighbours overlap by at least ``overlap`` pixels; tile starts are multiples of ``lr_multiple`` so
that the flow's squeeze grid in every tile lines up with the whole image's. Each tile is run alone, so
network memory depends on the tile size, not the image (AdFlowNet x4 at the paper's size, a 768 x 768
LR, 2 samples: 12.6 GiB of GPU memory at its peak untiled, 1.5 GiB in tiles of 256, 0.45 GiB in tiles
of 128), and the results are blended into the output: ``center`` keeps each pixel from the tile it lies
deepest in (a cut in the middle of each overlap), ``ramp`` cross-fades linearly over the middle half of
each overlap (no seam), ``auto`` (the default) takes ``center`` when the output is deterministic
(ESRGAN, temperature 0) and ``ramp`` otherwise. Only the tile rows in progress are held in float;
finished rows are stored at the output bit depth.

At temperature 0 a tiled output matches the untiled one up to the influence of the tile borders, which
falls with the overlap (``center`` is the closer: it never uses a pixel nearer than half the overlap to
a tile border). Measured with full-size random-weight AdFlowNet x4 and ESRGAN x4 generators on a
256 x 256 LR in 4 x 4 tiles (float32 convolutions; :func:`tiling_difference`), the largest difference
at overlap 8 / 16 / 32 was 56 / 2.0 / 0.004 (AdFlowNet) and 1.8 / 0.001 / 0.001 (ESRGAN) grey levels of
255 with ``center``, and 78 / 10 / 0.13 and 23 / 0.06 / 0.001 with ``ramp``; hence the default overlap
of 32. (With TF32 convolutions, PyTorch's default on recent GPUs, tiles of another shape round
differently: a floor near 3 / 255 remained there for the random AdFlowNet whatever the overlap.) At
temperature > 0 each tile draws its own noise, so there is no untiled result to match: ``ramp`` fades
from one tile's sample to the next across the overlap.
"""
import numpy as np
import torch
from torch.nn import functional as F

from adflow_plugin.apps.infer.checkpoint import SRNetwork
from adflow_plugin.apps.infer.errors import InferError

#: Default overlap of neighbouring tiles, in LR pixels.
DEFAULT_OVERLAP = 32
BLEND_MODES = ('ramp', 'center')
#: ``blend`` values of :func:`upscale` and :func:`infer`: a mode, or 'auto'.
BLEND_CHOICES = ('auto', ) + BLEND_MODES
#: Fraction of each overlap (its middle) across which ``ramp`` blending goes from one tile to the next.
RAMP_WIDTH = 0.5
#: Seed offset between tiles (sample k of tile j uses seed + k + TILE_SEED_STRIDE * j).
TILE_SEED_STRIDE = 1000003
#: Outputs made together per pass over the tiles of a tiled image (untiled, each output is made alone).
TILED_CHUNK = 4


def tile_spans(length, tile, overlap=DEFAULT_OVERLAP, multiple=1):
    """Start and end of the tiles along one axis (LR pixels).

    Tiles are ``tile`` long (rounded down to a multiple of ``multiple``), start at multiples of ``multiple``,
    and are spread evenly from 0 to ``length``, as few as keep every overlap at least ``overlap`` (it may
    come out larger). ``length`` must be a multiple of ``multiple`` (the LR is padded first). ``tile`` <= 0
    or >= ``length``: one tile.
    """
    if length % multiple:
        raise ValueError(f'length {length} is not a multiple of {multiple} (pad the LR first)')
    if tile <= 0 or tile >= length:
        return [(0, length)]
    tile = max(multiple, tile // multiple * multiple)
    if tile >= length:
        return [(0, length)]
    step = (tile - overlap) // multiple * multiple
    if overlap < 0 or step < multiple:
        raise InferError(f'tiles of {tile} LR pixels cannot overlap by {overlap} and still advance (tile starts are '
                         f'multiples of {multiple}): use a larger --tile or a smaller --tile-overlap')
    count = -(-(length - tile) // step) + 1
    # floor(i * (length - tile) / (count - 1)) to a multiple: gaps <= step, so overlaps >= tile - step >= overlap
    starts = [(length - tile) * i // (count - 1) // multiple * multiple for i in range(count)]
    return [(start, start + tile) for start in starts]


def blend_weights(spans, scale, mode='ramp', ramp_width=None):
    """Per-tile blending weights along one axis, at HR resolution, summing to 1 at every HR pixel.

    ``ramp``: the weight falls linearly from 1 to 0 across the middle ``ramp_width`` fraction (default
    :data:`RAMP_WIDTH`) of each overlap; ``center``: 1 up to the middle of each overlap, 0 beyond.
    """
    if mode not in BLEND_MODES:
        raise InferError(f'unknown blend mode {mode!r}; use one of {", ".join(BLEND_MODES)}')
    ramp_width = RAMP_WIDTH if ramp_width is None else ramp_width
    weights = []
    for i, (a, e) in enumerate(spans):
        x = np.arange(a * scale, e * scale, dtype=np.float64) + 0.5
        w = np.ones_like(x)
        prev_end = spans[i - 1][1] * scale if i > 0 else None
        next_start = spans[i + 1][0] * scale if i + 1 < len(spans) else None
        if mode == 'ramp':
            if prev_end is not None and prev_end > a * scale:
                w *= _ramp(x, a * scale, prev_end, ramp_width)
            if next_start is not None and next_start < e * scale:
                w *= 1 - _ramp(x, next_start, e * scale, ramp_width)
        else:
            if prev_end is not None:
                w[x < (a * scale + prev_end) // 2] = 0
            if next_start is not None:
                w[x >= (next_start + e * scale) // 2] = 0
        weights.append(w)
    total = np.zeros(spans[-1][1] * scale)
    for (a, e), w in zip(spans, weights):
        total[a * scale:e * scale] += w
    return [(w / total[a * scale:e * scale]).astype(np.float32) for (a, e), w in zip(spans, weights)]


def _ramp(x, lo, hi, width):
    """0 -> 1 linearly across the middle ``width`` fraction of the overlap [lo, hi); 0 before, 1 after."""
    mid, half = (lo + hi) / 2, max((hi - lo) * width / 2, 0.5)
    return np.clip((x - (mid - half)) / (2 * half), 0, 1)


def _pad_to_multiple(lq, multiple):
    """Pad (bottom, right) to a multiple, as AdFlowNet pads (reflect, or replicate when the image is too small)."""
    h, w = lq.shape[2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return lq
    mode = 'reflect' if ph < h and pw < w else 'replicate'
    return F.pad(lq, (0, pw, 0, ph), mode=mode)


def upscale(srnet, bgr, jobs=((1.0, 0), ), tile=0, overlap=DEFAULT_OVERLAP, blend='auto', finalize=None,
            progress=None):
    """Super-resolve one image, optionally in overlapping tiles.

    Args:
        srnet (SRNetwork): The generator.
        bgr (ndarray): float32 HxWx3 BGR image in [0, 1].
        jobs (list[tuple[float, int]]): ``(temperature, seed)`` of each output of a flow. A deterministic
            network produces one output whatever this holds.
        tile (int): Tile size in LR pixels (0: the whole image at once).
        overlap (int): Minimum overlap of neighbouring tiles, LR pixels.
        blend (str): 'ramp' or 'center' (see :func:`blend_weights`), or 'auto': 'center' when every output
            is deterministic (a deterministic network, or temperature 0), else 'ramp'.
        finalize (callable | None): Float32 BGR rows (clipped to [0, 1]) -> the array stored in the output;
            called once per band of finished rows. Default: float32 rows as they are.
        progress (callable | None): Called with (tiles done, tiles in all) after each tile.

    Returns:
        list[ndarray]: One (scale*H)x(scale*W)[xC] array per output.
    """
    return [out for _, out in upscale_iter(srnet, bgr, jobs, tile, overlap, blend, finalize, progress)]


@torch.no_grad()
def upscale_iter(srnet, bgr, jobs=((1.0, 0), ), tile=0, overlap=DEFAULT_OVERLAP, blend='auto', finalize=None,
                 progress=None, chunk=None):
    """:func:`upscale`, yielding ``(job index, output)`` as each output is finished, so that a caller can
    write it and let it go: untiled, one output at a time (the LR embedding computed once and reused);
    tiled, :data:`TILED_CHUNK` at a time (the embedding of each tile computed once per chunk). ``chunk``
    overrides both (``len(jobs)``: every output in one pass, as :func:`upscale` did before)."""
    finalize = finalize or (lambda rows: np.clip(rows, 0, 1))
    jobs = list(jobs) if srnet.stochastic else [None]
    if blend == 'auto':
        blend = 'ramp' if srnet.stochastic and any(t > 0 for t, _ in jobs) else 'center'
    s, m = srnet.scale, srnet.lr_multiple
    h, w = bgr.shape[:2]
    lq = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1))).unsqueeze(0)
    lq = _pad_to_multiple(lq.to(srnet.device), m)
    hp, wp = lq.shape[2:]
    ys, xs = tile_spans(hp, tile, overlap, m), tile_spans(wp, tile, overlap, m)
    wy, wx = blend_weights(ys, s, blend), blend_weights(xs, s, blend)
    # one view per tile, the same object for every chunk: SRNetwork.run keeps the last tile's embedding
    tiles = {(r, c): lq[:, :, y0:y1, x0:x1] for r, (y0, y1) in enumerate(ys) for c, (x0, x1) in enumerate(xs)}
    step = max(1, chunk) if chunk else 1 if len(tiles) == 1 else TILED_CHUNK
    chunks = [list(range(i, min(i + step, len(jobs)))) for i in range(0, len(jobs), step)]
    total = len(tiles) * len(chunks)
    done_tiles = 0
    out_h, out_w = h * s, w * s
    try:
        for indices in chunks:
            chunk_jobs = [jobs[i] for i in indices]
            outs = [None] * len(chunk_jobs)
            pending = None
            for r, (y0, y1) in enumerate(ys):
                bands = [np.zeros(((y1 - y0) * s, wp * s, 3), np.float32) for _ in chunk_jobs]
                for c, (x0, x1) in enumerate(xs):
                    index = r * len(xs) + c
                    tile_jobs = [(t, seed + TILE_SEED_STRIDE * index) for t, seed in chunk_jobs] \
                        if srnet.stochastic else chunk_jobs
                    srs = srnet.run(tiles[(r, c)], tile_jobs)
                    for band, sr in zip(bands, srs):
                        if sr.shape[2:] != ((y1 - y0) * s, (x1 - x0) * s):
                            raise InferError(f'the network returned {tuple(sr.shape[2:])} for an LR tile of '
                                             f'{(y1 - y0, x1 - x0)}, not {s}x: is the scale right?')
                        arr = sr[0].float().cpu().numpy().transpose(1, 2, 0)[:, :, ::-1]
                        band[:, x0 * s:x1 * s] += arr * wx[c][None, :, None]
                    done_tiles += 1
                    if progress:
                        progress(done_tiles, total)
                next_y = ys[r + 1][0] if r + 1 < len(ys) else y1
                finished = (next_y - y0) * s
                for i, band in enumerate(bands):
                    band *= wy[r][:, None, None]
                    if pending is not None:
                        band[:pending[i].shape[0]] += pending[i]
                    top, bottom = y0 * s, min(y0 * s + finished, out_h)
                    if bottom > top:
                        rows = finalize(band[:bottom - top, :out_w])
                        if outs[i] is None:
                            outs[i] = np.empty((out_h, out_w) + rows.shape[2:], rows.dtype)
                        outs[i][top:bottom] = rows
                pending = [band[finished:] for band in bands]
            for i, out in zip(indices, outs):
                yield i, out
    finally:
        srnet.forget()


class _MemoNetwork(SRNetwork):
    """An SRNetwork that remembers its outputs per LR tile (tiling_difference compares several blends)."""

    def run(self, lq, jobs):
        memo = self.__dict__.setdefault('_memo', {})
        key = (tuple(lq.shape), lq.cpu().numpy().tobytes(), repr(jobs))
        if key not in memo:
            memo[key] = super().run(lq, jobs)
        return memo[key]


def tiling_difference(srnet, bgr, tile, overlaps, blends=('ramp', ), temperature=0.0):
    """Max and mean absolute difference (in [0, 1] units) between tiled and untiled outputs of one image, per
    requested overlap and blend mode, with the smallest overlap the tiles actually have (``tile_spans``
    spreads the tiles evenly, so it may exceed the requested one). A flow at temperature 0 is deterministic.

    Returns:
        list[dict]: ``overlap``, ``actual_overlap``, ``tiles``, ``blend``, ``max``, ``mean``.
    """
    srnet = _MemoNetwork(srnet.net, srnet.scale, srnet.stochastic, srnet.lr_multiple)
    jobs = [(temperature, 0)]
    ref = upscale(srnet, bgr, jobs)[0].astype(np.float64)
    m = srnet.lr_multiple
    sizes = [-(-n // m) * m for n in bgr.shape[:2]]
    rows = []
    for overlap in overlaps:
        spans = [tile_spans(n, tile, overlap, m) for n in sizes]
        gaps = [e0 - a1 for axis in spans for (_, e0), (a1, _) in zip(axis, axis[1:])]
        for blend in blends:
            diff = np.abs(upscale(srnet, bgr, jobs, tile=tile, overlap=overlap, blend=blend)[0] - ref)
            rows.append(dict(overlap=overlap, actual_overlap=min(gaps) if gaps else None,
                             tiles=len(spans[0]) * len(spans[1]), blend=blend, max=float(diff.max()),
                             mean=float(diff.mean())))
    return rows
