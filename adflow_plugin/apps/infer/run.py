"""``infer``: the ``basicsr infer`` command over image files and folders."""
import os
import os.path as osp

import torch

from adflow_plugin.apps.infer.checkpoint import load_network
from adflow_plugin.apps.infer.errors import InferError
from adflow_plugin.apps.infer.image_io import (_finalizer, _with_alpha, _write_png, check_output_folder,
                                               collect_inputs, output_name, read_image)
from adflow_plugin.apps.infer.tiling import BLEND_CHOICES, DEFAULT_OVERLAP, upscale_iter
from adflow_plugin.utils.img_check import file_truncation
from adflow_plugin.utils.options_check import OptionsError, check_temperatures


def _device(name):
    if name in (None, 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise InferError(f'bad --device {name!r}: {e}') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise InferError('--device cuda, but no CUDA device is available')
    return device


def infer(inputs, output, model, arch=None, scale=None, temperatures=None, samples=1, seed=0, tile=0,
          overlap=DEFAULT_OVERLAP, blend='auto', force=False, device='auto', log=print, show_progress=True, amp=None):
    """Super-resolve image files (the ``basicsr infer`` command).

    Args:
        inputs (list[str]): Image files and folders (their image files; other files are skipped with a message).
        output (str): Output folder (created).
        model, arch, scale: See :func:`load_network`.
        temperatures (list[float] | None): Flow sampling temperatures. Default: the options file's
            ``val.temperature``, else 1.0.
        samples (int | None): Samples per temperature (flows). Default: 1.
        seed (int): Base seed (see the package docstring).
        tile, overlap, blend: See :func:`upscale`.
        force (bool): Overwrite existing output files (otherwise an error before anything runs).
        device (str): 'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...
        log (callable): Prints a message.
        show_progress (bool): A tqdm progress bar on stderr.
        amp (str | None): 'bf16': bfloat16 mixed precision (see :class:`SRNetwork`). Default: off.

    Returns:
        dict: ``written`` (output paths), ``skipped`` (messages), ``failed`` (messages), ``network``.
    """
    from tqdm import tqdm

    if samples is not None and samples < 1:
        raise InferError(f'--samples must be at least 1, got {samples}')
    if tile < 0 or overlap < 0:
        raise InferError('--tile and --tile-overlap must not be negative')
    if blend not in BLEND_CHOICES:
        raise InferError(f'unknown blend mode {blend!r}; use one of {", ".join(BLEND_CHOICES)}')
    if temperatures:
        try:
            check_temperatures(list(temperatures), '--temperature')
        except OptionsError as e:
            raise InferError(str(e)) from None
    check_output_folder(output)
    files, skipped = collect_inputs(inputs)
    for message in skipped:
        log(message)
    if not files:
        raise InferError(f'no image files in {", ".join(inputs)}')
    for path in files:  # a truncated download stops the run before anything is written
        problem = file_truncation(path)
        if problem:
            raise InferError(problem)

    from adflow_plugin.archs.flow_layers import amp_dtype
    try:
        amp = amp_dtype(amp, '--amp')
    except ValueError as e:
        raise InferError(str(e)) from None
    srnet = load_network(model, arch, scale, _device(device))
    srnet.amp = amp
    log(f'network: {srnet.description}')
    if srnet.stochastic:
        temps = dict.fromkeys(float(t) for t in (temperatures or srnet.temperatures or [1.0]))  # unique, in order
        jobs = [(float(t), seed + k) for t in temps for k in range(samples or 1)]
        if any(t < 0 for t, _ in jobs):
            raise InferError('temperatures must not be negative')
    else:
        if temperatures or (samples or 1) > 1:
            log(f'{type(srnet.net).__name__} is deterministic: --temperature and --samples are ignored '
                '(one output per image)')
        jobs = [None]

    plan, owners = [], {}
    for path in files:
        stem = osp.splitext(osp.basename(path))[0]
        outs = [osp.join(output, output_name(stem, srnet.scale) if job is None else
                         output_name(stem, srnet.scale, temperature=job[0], sample=job[1] - seed)) for job in jobs]
        for out in outs:
            if out in owners:
                raise InferError(f'{owners[out]} and {path} would both write {out}: rename one of them')
            owners[out] = path
        plan.append((path, outs))
    existing = [out for _, outs in plan for out in outs if osp.exists(out)]
    if existing and not force:
        more = f' and {len(existing) - 3} more' if len(existing) > 3 else ''
        raise InferError(f'{len(existing)} output file(s) exist already ({", ".join(existing[:3])}{more}); '
                         'pass --force to overwrite them, or choose another --output')
    created = not osp.isdir(output)
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as e:
        raise InferError(f'cannot create the --output folder {output}: {e.strerror}') from None

    written, failed = [], []
    bar = tqdm(total=len(plan), unit='image', desc='infer', disable=not show_progress, dynamic_ncols=True)
    say = tqdm.write if show_progress else log
    try:
        for path, outs in plan:
            name = osp.basename(path)
            bar.set_postfix_str(name)
            try:
                lr = read_image(path)
            except InferError as e:
                failed.append(str(e))
                say(f'error: {e}; skipped')
                bar.update(1)
                continue

            def progress(done, total, name=name):
                if total > 1:
                    bar.set_postfix_str(f'{name} tile {done}/{total}')

            for index, sr in upscale_iter(srnet, lr.bgr, jobs, tile, overlap, blend, _finalizer(lr), progress):
                _write_png(outs[index], _with_alpha(sr, lr.alpha, lr.dtype))  # each output as soon as it is made
                written.append(outs[index])
            say(f'{path} ({lr.describe()}) -> {", ".join(osp.basename(o) for o in outs)}')
            bar.update(1)
    except BaseException:
        if created and not written and not os.listdir(output):  # stopped before its first output: no trace
            os.rmdir(output)
        raise
    finally:
        bar.close()
    return dict(written=written, skipped=skipped, failed=failed, network=srnet)
