"""Checks of an options file before BasicSR's train or test pipeline starts (``basicsr train`` / ``test``).

BasicSR reads options lazily: a missing key, a value of the wrong type or a data folder that does not
exist surfaces as a traceback deep inside its trainer, after ``experiments/<name>`` or
``results/<name>`` has been created. :func:`check_options` finds these problems first and names each in
one line (:class:`OptionsError`), so a run that cannot start creates nothing.
"""
import difflib
import math
import os.path as osp

from adflow_plugin.utils import as_list

__all__ = ['OptionsError', 'apply_force_yml', 'check_options', 'check_temperatures']


class OptionsError(ValueError):
    """A problem in an options file (or a ``--force_yml`` override), stated in one line."""


def check_temperatures(values, where):
    """``values`` (a number or a list) as a list of finite, non-negative floats; else OptionsError naming ``where``."""
    out = []
    for v in as_list(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise OptionsError(f'{where} must be a number or a list of numbers, got {v!r}')
        if not math.isfinite(v):
            raise OptionsError(f'{where} must be finite, got {v} (a temperature scales the sampled noise; the paper '
                               'samples at 0.9 to 1.0)')
        if v < 0:
            raise OptionsError(f'{where} must not be negative, got {v}')
        out.append(float(v))
    return out


def _closest(name, choices):
    found = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return found[0] if found else None


def apply_force_yml(opt, entries):
    """Apply ``--force_yml KEY=VALUE`` overrides as BasicSR's ``parse_options`` does, existing keys only.

    BasicSR would create a misspelt key silently (``train:total_iters=5`` trains the full run);
    here an unknown key is an OptionsError naming the nearest existing one.
    """
    from basicsr.utils.options import _postprocess_yml_value
    for entry in entries or []:
        if entry.count('=') != 1 or not entry.split('=')[0].strip():
            raise OptionsError(f'--force_yml expects KEY=VALUE with sections separated by ":", e.g. '
                               f'train:ema_decay=0.999, got {entry!r}')
        keys, value = (s.strip() for s in entry.split('='))
        node, path = opt, []
        parts = keys.split(':')
        for i, key in enumerate(parts):
            where = ':'.join(path) or 'the options file'
            if not isinstance(node, dict):
                raise OptionsError(f'--force_yml {entry}: {where} is a value, not a section')
            if key not in node and i == len(parts) - 1 and key in _constructor_arguments(node):
                pass  # an argument the file leaves at its default, e.g. network_g:num_grow_ch
            elif key not in node:
                near = _closest(key, list(node) + _constructor_arguments(node))
                hint = f'; did you mean {":".join(path + [near])}?' if near else \
                    f' (it has: {", ".join(map(str, list(node)[:12]))})'
                raise OptionsError(f'--force_yml {entry}: {where} has no key {key!r}; --force_yml only changes '
                                   f'existing keys{hint}')
            path.append(key)
            if i == len(parts) - 1:
                node[key] = _postprocess_yml_value(value)
            else:
                node = node[key]
    return opt


def _constructor_arguments(section):
    """Keyword arguments of the class a ``type: Name`` section builds (a network, loss, optimizer or scheduler),
    which ``--force_yml`` may set although the file leaves them at their defaults."""
    import inspect

    import torch
    from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY
    name = section.get('type') if isinstance(section, dict) else None
    if not isinstance(name, str):
        return []
    found = None
    for registry in (ARCH_REGISTRY, LOSS_REGISTRY):
        if name in registry:
            found = registry.get(name)
    if found is None:
        from basicsr.models import lr_scheduler
        found = getattr(torch.optim, name, None) or getattr(lr_scheduler, name, None) or \
            getattr(torch.optim.lr_scheduler, name, None)
    try:
        params = inspect.signature(found).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != 'self']


def _get(section, key, where, kind, required=True, positive=False, allow=()):
    """``section[key]`` checked to be of ``kind`` (int, float for any number, str, dict, bool)."""
    name = f'{where}.{key}' if where else key
    if key not in section or section[key] is None:
        if required:
            raise OptionsError(f'{name} is missing')
        return None
    value = section[key]
    if value in allow:
        return value
    names = {int: 'a whole number', float: 'a number', str: 'a string', dict: 'a section (mapping)',
             bool: 'true or false'}
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
          str: lambda v: isinstance(v, str), dict: lambda v: isinstance(v, dict),
          bool: lambda v: isinstance(v, bool)}[kind](value)
    if not ok:
        raise OptionsError(f'{name} must be {names[kind]}, got {value!r}')
    if positive and value <= 0:
        raise OptionsError(f'{name} must be positive, got {value}')
    return value


def _check_path(value, where, what='folder'):
    if not osp.exists(osp.expanduser(value)):
        raise OptionsError(f'{where}: {what} {value} does not exist (relative paths start at the current directory; '
                           'basicsr prepare-data makes the shipped data sets)')


def _check_dataset(phase, d, scale):
    where = f'datasets.{phase}'
    if not isinstance(d, dict):
        raise OptionsError(f'{where} must be a section (mapping), got {d!r}')
    kind = _get(d, 'type', where, str)
    single = kind == 'SingleImageDataset'
    needed = ['dataroot_lq'] if single else ['dataroot_gt'] + (['dataroot_lq'] if kind == 'PairedImageDataset' else [])
    for key in needed:
        _get(d, key, where, str)
    for key in ('dataroot_gt', 'dataroot_lq', 'meta_info_file', 'meta_info'):
        if isinstance(d.get(key), str):
            _check_path(d[key], f'{where}.{key}', 'file' if key.startswith('meta') else 'data folder')
    _get(_get(d, 'io_backend', where, dict), 'type', f'{where}.io_backend', str)  # every BasicSR dataset reads it
    if phase == 'train':
        _get(d, 'batch_size_per_gpu', where, int, positive=True)
        num_worker = _get(d, 'num_worker_per_gpu', where, int)
        if num_worker < 0:
            raise OptionsError(f'{where}.num_worker_per_gpu must not be negative, got {num_worker}')
        _get(d, 'dataset_enlarge_ratio', where, float, required=False, positive=True)
        gt_size = _get(d, 'gt_size', where, int, required=kind == 'PairedImageDataset', positive=True)
        if gt_size is not None and gt_size % scale:
            lower = gt_size // scale * scale
            raise OptionsError(f'{where}.gt_size {gt_size} is not divisible by the scale {scale}: its LR patch would '
                               f'be {gt_size / scale:g} pixels; use e.g. {lower or scale} or {lower + scale}')


def check_options(opt, is_train, auto_resume=False):
    """Find, before BasicSR starts, what would stop its train or test pipeline; raise OptionsError in one line.

    Checks the keys BasicSR reads and their types, data folders, temperatures, the registries (network,
    model, dataset, loss and metric types; the plugin must be loaded) and ``path.pretrain_network_g``: it
    must exist, load with ``torch.load(weights_only=True)`` and fit ``network_g``.
    """
    where = ''
    _get(opt, 'name', where, str)
    _get(opt, 'model_type', where, str)
    scale = _get(opt, 'scale', where, int, positive=True)
    _get(opt, 'num_gpu', where, int, allow=('auto', ))
    _get(opt, 'manual_seed', where, int, required=False)
    datasets = _get(opt, 'datasets', where, dict)
    phases = [p for p in datasets]
    if is_train:
        if 'train' not in phases:
            raise OptionsError('datasets has no train section to train on')
        for p in phases:
            if p != 'train' and p.split('_')[0] != 'val':
                raise OptionsError(f'datasets.{p} is neither train nor val (val_1, val_2 ...); BasicSR '
                                   'recognises no other phase when training')
    elif not phases:
        raise OptionsError('datasets is empty; add a test set (test_1: ...)')
    for p, d in datasets.items():
        _check_dataset(p, d, scale)
    net_g = _get(opt, 'network_g', where, dict)
    _get(net_g, 'type', 'network_g', str)
    if 'network_d' in opt:
        _get(_get(opt, 'network_d', where, dict), 'type', 'network_d', str)
    paths = _get(opt, 'path', where, dict)
    for key in ('pretrain_network_g', 'pretrain_network_d'):
        if paths.get(key) is not None:
            _check_path(_get(paths, key, 'path', str), f'path.{key}', 'checkpoint')
    if paths.get('resume_state') is not None and not auto_resume:
        _check_path(_get(paths, 'resume_state', 'path', str), 'path.resume_state', 'training state')
    embed = net_g.get('pretrained_embed')
    if embed is not None:
        _check_path(_get(net_g, 'pretrained_embed', 'network_g', str), 'network_g.pretrained_embed', 'checkpoint')
    if is_train:
        train = _get(opt, 'train', where, dict)
        _get(train, 'total_iter', 'train', int, positive=True)
        optim = _get(train, 'optim_g', 'train', dict)
        _get(optim, 'type', 'train.optim_g', str)
        _get(optim, 'lr', 'train.optim_g', float)
        if 'temperature' in train:
            check_temperatures(train['temperature'], 'train.temperature')
        logger = _get(opt, 'logger', where, dict)
        _get(logger, 'print_freq', 'logger', int, positive=True)
        _get(logger, 'save_checkpoint_freq', 'logger', float, positive=True)
    val = opt.get('val')
    if val is not None:
        if not isinstance(val, dict):
            raise OptionsError(f'val must be a section (mapping), got {val!r}')
        if 'temperature' in val:
            check_temperatures(val['temperature'], 'val.temperature')
        if is_train and any(p.startswith('val') for p in phases):
            _get(val, 'val_freq', 'val', float, positive=True)
    _check_registries(opt)
    _check_network_g(opt)


def _check_registries(opt):
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

    def known(name, registry, where, what):
        if name not in registry:
            near = _closest(name, registry.keys())
            hint = f'; did you mean {near!r}?' if near else f' (known: {", ".join(sorted(registry.keys()))})'
            raise OptionsError(f'{where}: unknown {what} {name!r}{hint}')

    known(opt['model_type'], MODEL_REGISTRY, 'model_type', 'model')
    for key in ('network_g', 'network_d'):
        if key in opt:
            known(opt[key]['type'], ARCH_REGISTRY, f'{key}.type', 'network')
    for p, d in opt['datasets'].items():
        known(d['type'], DATASET_REGISTRY, f'datasets.{p}.type', 'dataset')
    for key, loss in (opt.get('train') or {}).items():
        if key.endswith('_opt') and isinstance(loss, dict) and 'type' in loss:
            known(loss['type'], LOSS_REGISTRY, f'train.{key}.type', 'loss')
    for key, metric in ((opt.get('val') or {}).get('metrics') or {}).items():
        if isinstance(metric, dict) and 'type' in metric:
            known(metric['type'], METRIC_REGISTRY, f'val.metrics.{key}.type', 'metric')


def _check_network_g(opt):
    """Build network_g; when path.pretrain_network_g is set, load it as BasicSR will (weights only)."""
    from copy import deepcopy

    from basicsr.utils.registry import ARCH_REGISTRY

    from adflow_plugin.apps.infer import InferError
    from adflow_plugin.apps.infer.checkpoint import _load_checkpoint, select_params
    net_opt = deepcopy(opt['network_g'])
    net_opt.pop('pretrained_embed', None)  # checked for existence above; loading it twice costs time only
    kind = net_opt.pop('type')
    try:
        # not basicsr.archs.build_network: it logs, and BasicSR's root logger, once set up without a log
        # file, would never write experiments/<name>/train_*.log
        net = ARCH_REGISTRY.get(kind)(**net_opt)
    except Exception as e:  # a wrong keyword or value: the constructor's own message
        raise OptionsError(f'network_g: cannot build {opt["network_g"]["type"]}: {type(e).__name__}: '
                           f'{str(e).splitlines()[0] if str(e) else ""}') from None
    ckpt = opt['path'].get('pretrain_network_g')
    if ckpt is None:
        return
    key = opt['path'].get('param_key_g', 'params')
    try:
        ckpt_data = _load_checkpoint(ckpt)
        if isinstance(ckpt_data, dict) and key is not None and key not in ckpt_data and 'params' in ckpt_data:
            key = 'params'  # BasicSR's load_network falls back to params
        state, _ = select_params(ckpt_data, key, ckpt)
    except InferError as e:
        raise OptionsError(f'path.pretrain_network_g: {e}') from None
    if opt['path'].get('strict_load_g', True):
        own = net.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        shape = [k for k in own if k in state and own[k].shape != state[k].shape]
        if missing or unexpected or shape:
            raise OptionsError(f'path.pretrain_network_g: {ckpt} does not fit network_g ({opt["network_g"]["type"]}): '
                               f'{len(missing)} missing, {len(unexpected)} unexpected, {len(shape)} other-shaped '
                               f'parameters (e.g. {(missing + unexpected + shape)[0]}); is it a checkpoint of this '
                               'network, at this scale and size? (strict_load_g: false loads what fits)')
