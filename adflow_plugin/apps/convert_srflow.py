"""SRFlow's released checkpoints (SRFlow_DF2K_4X.pth, SRFlow_DF2K_8X.pth) as AdFlowNet weights.

SRFlow (Lugmayr et al., ECCV 2020) saves a plain state dict of its ``SRFlowNet``: ``RRDB.*`` (the
RRDB encoder with its whole image head) and ``flowUpsamplerNet.*`` (the flow, a flat list of layers).
:func:`srflow_network_options` gives the ``AdFlowNet`` options that reproduce that network exactly;
:func:`convert_state_dict` renames every tensor, refusing anything unexpected; :func:`convert_file`
writes a BasicSR checkpoint (``{'params': ...}``) for ``path.pretrain_network_g``.

SRFlow's flow layer list, per level ``l = 1..L``: squeeze, 2 unconditional steps (ActNorm, 1x1),
K conditional steps (ActNorm, 1x1, ``CondAffineSeparatedAndCond``), then a split on levels ``l < L - 1``.
Its ``CondAffineSeparatedAndCond`` is two layers here: ``fFeatures`` is the injector, ``fAffine`` the
coupling, applied in that order (``injector_first``).
"""
import os
import re
import tempfile
from collections import OrderedDict

import torch

# SRFlow's released DF2K models (code/confs/SRFlow_DF2K_{4,8}X.yml): RRDB nf 64, nb 23, gc 32; K 16;
# L 3 (4x) / 4 (8x); stackRRDB blocks; additionalFlowNoAffine 2; split enabled, correct_splits off.
SRFLOW_LAYOUTS = {
    4: dict(num_levels=3, embed_blocks=[1, 8, 15, 22], rrdb_upconvs=2),
    8: dict(num_levels=4, embed_blocks=[1, 3, 5, 7], rrdb_upconvs=3),
}
SRFLOW_FLOW_DEPTH = 16
SRFLOW_NUM_BLOCK = 23
SRFLOW_NUM_TRANSITION = 2
# every SRFlow key that the converted network does not use: the RRDB's image head (HRconv, conv_last), its
# last upsampling convolution (the flow's finest level reads the one before), and FlowUpsamplerNet.f, which
# SRFlow builds but never calls. Any other key the mapping does not know is refused.
DROPPED_KEYS = {
    scale: tuple(f'{name}.{p}' for name in ('RRDB.upconv%d' % layout['rrdb_upconvs'], 'RRDB.HRconv', 'RRDB.conv_last',
                                            'flowUpsamplerNet.f.0') for p in ('weight', 'bias'))
    for scale, layout in SRFLOW_LAYOUTS.items()
}


class ConversionError(ValueError):
    """The source is not an SRFlow checkpoint of the requested layout (the message says why)."""


def srflow_network_options(scale):
    """``network_g`` options (with ``type``) of the AdFlowNet that computes exactly SRFlow's released model."""
    if scale not in SRFLOW_LAYOUTS:
        raise ConversionError(f'SRFlow released 4x and 8x models only; got scale {scale}')
    layout = SRFLOW_LAYOUTS[scale]
    return OrderedDict(
        type='AdFlowNet',
        scale=scale,
        num_in_ch=3,
        num_feat=64,
        num_block=SRFLOW_NUM_BLOCK,
        num_grow_ch=32,
        embed_blocks=list(layout['embed_blocks']),
        trunk_residual='body',
        cond_upsample='learned',
        cond_upsample_act=True,
        cond_resize='nearest',
        num_levels=layout['num_levels'],
        flow_depth=SRFLOW_FLOW_DEPTH,
        num_transition=SRFLOW_NUM_TRANSITION,
        hidden_channels=64,
        rotation='learned',
        transition_rotation='learned',
        coupling=True,
        injector=True,
        injector_first=True,
        coupling_scale='sigmoid',
        scale_offset=2.0,
        affine_eps=1e-4,
        net_actnorm=True,
        num_splits=layout['num_levels'] - 2,
        split_cond=False,
        prior='gaussian',
    )


def build_srflow_network(scale, **overrides):
    """An AdFlowNet with SRFlow's released layout (random weights; load a converted checkpoint into it)."""
    from adflow_plugin.archs.adflow_arch import AdFlowNet
    opts = srflow_network_options(scale)
    opts.pop('type')
    opts.update(overrides)
    return AdFlowNet(**opts)


def _flow_layer_table(num_levels, depth=SRFLOW_FLOW_DEPTH, num_transition=SRFLOW_NUM_TRANSITION):
    """Index in SRFlow's ``flowUpsamplerNet.layers`` -> (kind, level, index within the level)."""
    table, i = {}, 0
    for level in range(num_levels):
        table[i] = ('squeeze', level, 0)
        i += 1
        for t in range(num_transition):
            table[i] = ('transition', level, t)
            i += 1
        for k in range(depth):
            table[i] = ('step', level, k)
            i += 1
        if level + 1 < num_levels - 1:  # SRFlow: split if L < levels - 1 (1-based L)
            table[i] = ('split', level, 0)
            i += 1
    return table


_STEP_RENAMES = (
    (r'actnorm\.(bias|logs)', r'actnorm.\1'),
    (r'invconv\.weight', 'rotation.weight'),
    (r'affine\.fFeatures\.(0|2)\.weight', r'injector.net.\1.weight'),
    (r'affine\.fFeatures\.(0|2)\.actnorm\.(bias|logs)', r'injector.net.\1.actnorm.\2'),
    (r'affine\.fFeatures\.4\.(weight|bias|logs)', r'injector.net.4.\1'),
    (r'affine\.fAffine\.(0|2)\.weight', r'coupling.net.\1.weight'),
    (r'affine\.fAffine\.(0|2)\.actnorm\.(bias|logs)', r'coupling.net.\1.actnorm.\2'),
    (r'affine\.fAffine\.4\.(weight|bias|logs)', r'coupling.net.4.\1'),
)
_TRANSITION_RENAMES = _STEP_RENAMES[:2]
_SPLIT_RENAMES = ((r'conv\.(weight|bias|logs)', r'split.conv.\1'), )


def _rename(rest, rules):
    for pattern, repl in rules:
        if re.fullmatch(pattern, rest):
            return re.sub(pattern, repl, rest)
    return None


def _map_rrdb(rest, num_up):
    """SRFlow RRDBNet key (without ``RRDB.``) -> our embedding key, None if unknown."""
    m = re.fullmatch(r'RRDB_trunk\.(\d+)\.RDB([123])\.(conv[1-5]\.(?:weight|bias))', rest)
    if m:
        return f'embed.body.{m.group(1)}.rdb{m.group(2)}.{m.group(3)}'
    m = re.fullmatch(r'(conv_first\.(?:weight|bias))', rest)
    if m:
        return f'embed.{m.group(1)}'
    m = re.fullmatch(r'trunk_conv\.(weight|bias)', rest)
    if m:
        return f'embed.conv_body.{m.group(1)}'
    m = re.fullmatch(r'upconv(\d+)\.(weight|bias)', rest)
    if m and 1 <= int(m.group(1)) <= num_up:
        return f'embed.conv_up{m.group(1)}.{m.group(2)}'
    return None


def map_key(key, scale, num_up):
    """Our name for SRFlow's ``key``: a string, '' when the key is dropped, None when it is unknown."""
    if key in DROPPED_KEYS[scale]:
        return ''
    if key.startswith('RRDB.'):
        return _map_rrdb(key[len('RRDB.'):], num_up)
    m = re.fullmatch(r'flowUpsamplerNet\.layers\.(\d+)\.(.+)', key)
    if not m:
        return None
    entry = _flow_layer_table(SRFLOW_LAYOUTS[scale]['num_levels']).get(int(m.group(1)))
    if entry is None:
        return None
    kind, level, idx = entry
    rules = {'transition': _TRANSITION_RENAMES, 'step': _STEP_RENAMES, 'split': _SPLIT_RENAMES}.get(kind)
    new = _rename(m.group(2), rules) if rules else None
    if new is None:
        return None
    prefix = {'transition': f'levels.{level}.transitions.{idx}.', 'step': f'levels.{level}.steps.{idx}.',
              'split': f'levels.{level}.'}[kind]
    return prefix + new


def _strip_module(state):
    if state and all(k.startswith('module.') for k in state):  # saved from a DataParallel wrapper
        return OrderedDict((k[len('module.'):], v) for k, v in state.items())
    return state


def infer_scale(state):
    """4 or 8 from an SRFlow state dict's layout (SRFlow's 8x RRDB has ``upconv3``), None if not SRFlow's."""
    if not any(k.startswith('flowUpsamplerNet.layers.') for k in state) or 'RRDB.conv_first.weight' not in state:
        return None
    return 8 if 'RRDB.upconv3.weight' in state else 4


def _check_source(state):
    """The state dict without a DataParallel ``module.`` prefix; raises if it is not SRFlow's."""
    if not isinstance(state, dict):
        raise ConversionError(f'not an SRFlow checkpoint: the file holds a {type(state).__name__}, not a state dict')
    if any(k in state for k in ('params', 'params_ema')):
        raise ConversionError('this is a BasicSR checkpoint (it has "params"), not an SRFlow one: it needs no '
                              'conversion; set it as path.pretrain_network_g')
    bad = [k for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ConversionError(f'not an SRFlow checkpoint: entries that are not named tensors, e.g. {bad[:3]}')
    state = _strip_module(state)
    if infer_scale(state) is None:
        raise ConversionError('not an SRFlow checkpoint: SRFlow state dicts have RRDB.* and flowUpsamplerNet.layers.* '
                              f'keys; this one starts with {list(state)[:3]}')
    return state


def _listing(keys, limit=8):
    keys = sorted(keys)
    more = f' ... ({len(keys)} in all)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def convert_state_dict(state, scale, net=None):
    """Rename an SRFlow state dict to AdFlowNet's names.

    Args:
        state (dict): SRFlow's state dict (keys ``RRDB.*``, ``flowUpsamplerNet.*``; a ``module.`` prefix is removed).
        scale (int): 4 or 8; must match the checkpoint's layout.
        net (AdFlowNet | None): The target network (built with :func:`build_srflow_network` if not given); its
            state dict defines the expected names and shapes.

    Returns:
        tuple: (OrderedDict in the target's key order, ready for ``load_state_dict(strict=True)``; dict report
        with ``mapped`` {srflow key: our key}, ``dropped`` [srflow keys], ``initialized`` [ActNorm flags set]).

    Raises:
        ConversionError: the source is not an SRFlow checkpoint, is of the other scale, or has a key missing,
            unexpected or of the wrong shape. Nothing is returned partially.
    """
    if scale not in SRFLOW_LAYOUTS:
        raise ConversionError(f'--scale must be 4 or 8 (SRFlow released 4x and 8x models), got {scale}')
    state = _check_source(state)
    found = infer_scale(state)
    if found != scale:
        raise ConversionError(f'this is SRFlow\'s {found}x layout, not {scale}x: convert it with --scale {found}')
    if net is None:
        with torch.no_grad():
            net = build_srflow_network(scale)
    target = net.state_dict()
    num_up = len(net.embed.upsample)

    mapped, dropped, unknown = OrderedDict(), [], []
    for key in state:
        new = map_key(key, scale, num_up)
        if new is None or (new and new not in target):
            unknown.append(key)
        elif new == '':
            dropped.append(key)
        else:
            mapped[key] = new
    flags = [k for k in target if k.endswith('.initialized')]
    produced = set(mapped.values())
    missing = [k for k in target if k not in produced and k not in flags]
    problems = []
    if missing:  # named as SRFlow names them, to make the message actionable
        inverse = {map_key(k, scale, num_up): k for k in _expected_source_keys(scale, net)}
        missing_src = [inverse.get(k, k) for k in missing]
        problems.append(f'missing {len(missing_src)} key(s): {_listing(missing_src)}')
    if unknown:
        problems.append(f'unexpected {len(unknown)} key(s): {_listing(unknown)}')
    wrong = [
        f'{k} {tuple(state[k].shape)} (expected {tuple(target[v].shape)})' for k, v in mapped.items()
        if tuple(state[k].shape) != tuple(target[v].shape)
    ]
    if wrong:
        problems.append(f'{len(wrong)} key(s) of the wrong shape: {", ".join(wrong[:8])}')
    if problems:
        raise ConversionError(f'not SRFlow\'s released {scale}x layout (RRDB 23 blocks, K=16, '
                              f'L={SRFLOW_LAYOUTS[scale]["num_levels"]}): ' + '; '.join(problems))

    by_target = {v: k for k, v in mapped.items()}
    out = OrderedDict()
    for k, ref in target.items():
        if k in flags:  # SRFlow's ActNorms are initialised once their bias is non-zero; ours carry a flag
            out[k] = torch.ones_like(ref)
        else:
            out[k] = state[by_target[k]].detach().to(dtype=ref.dtype, device='cpu').clone().contiguous()
    return out, dict(mapped=mapped, dropped=dropped, initialized=flags)


def _expected_source_keys(scale, net):
    """SRFlow's names for everything the converted network holds (for error messages)."""
    layout = SRFLOW_LAYOUTS[scale]
    keys = ['RRDB.conv_first.weight', 'RRDB.conv_first.bias', 'RRDB.trunk_conv.weight', 'RRDB.trunk_conv.bias']
    for n in range(len(net.embed.body)):
        for r in (1, 2, 3):
            for c in range(1, 6):
                keys += [f'RRDB.RRDB_trunk.{n}.RDB{r}.conv{c}.{p}' for p in ('weight', 'bias')]
    for u in range(1, len(net.embed.upsample) + 1):
        keys += [f'RRDB.upconv{u}.{p}' for p in ('weight', 'bias')]
    for i, (kind, _, _) in _flow_layer_table(layout['num_levels']).items():
        pre = f'flowUpsamplerNet.layers.{i}.'
        if kind in ('transition', 'step'):
            keys += [pre + 'actnorm.bias', pre + 'actnorm.logs', pre + 'invconv.weight']
        if kind == 'step':
            for f in ('fAffine', 'fFeatures'):
                for j in (0, 2):
                    keys += [f'{pre}affine.{f}.{j}.weight', f'{pre}affine.{f}.{j}.actnorm.bias',
                             f'{pre}affine.{f}.{j}.actnorm.logs']
                keys += [f'{pre}affine.{f}.4.{p}' for p in ('weight', 'bias', 'logs')]
        if kind == 'split':
            keys += [pre + f'conv.{p}' for p in ('weight', 'bias', 'logs')]
    return keys


def load_srflow_state(path):
    """SRFlow's checkpoint as a dict of tensors, loaded with ``weights_only=True`` (no code can run)."""
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise ConversionError(f'{path}: no such file') from None
    except Exception as e:  # pickle with code, a zip that is not a torch file, a text file ...
        raise ConversionError(f'{path} cannot be read as a weights-only PyTorch checkpoint '
                              f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})') from None
    return state


def convert_file(src, dst, scale, overwrite=False):
    """Convert SRFlow's ``src`` to a BasicSR checkpoint ``dst`` (``{'params': ...}``); returns the report.

    ``dst`` is written to a temporary file in its folder and renamed into place, so it is either complete
    or absent. The converted weights are checked by loading them strictly into a fresh network.
    """
    if os.path.exists(dst) and not overwrite:
        raise ConversionError(f'{dst} exists (pass --force to overwrite it)')
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ConversionError('the destination must differ from the source')
    state = load_srflow_state(src)
    with torch.no_grad():
        net = build_srflow_network(scale)
    params, report = convert_state_dict(state, scale, net)
    net.load_state_dict(params, strict=True)
    folder = os.path.dirname(os.path.abspath(dst))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(dst) + '.', suffix='.part', dir=folder)
    except OSError as e:
        raise ConversionError(f'cannot write {dst}: {e}') from None
    os.close(fd)
    try:
        torch.save({'params': params}, tmp)
        os.replace(tmp, dst)
    except OSError as e:  # a full disk, a read-only folder: say so without a traceback
        raise ConversionError(f'cannot write {dst}: {e}') from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    report['num_params'] = sum(v.numel() for v in params.values())
    return report
