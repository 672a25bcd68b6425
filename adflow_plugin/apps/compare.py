"""Compare BasicSR test results: a markdown table like the paper's Table 2 and figures like its Fig. 7.

Input: result folders written by ``basicsr test`` (``results/<name>/test_<name>_<time>.log``; the newest
test log is read, or the newest ``train_*.log`` of an ``experiments/<name>`` folder), or log files. From
each log this reads the options dump (experiment ``name``, ``scale``, ...) and the metric blocks that
BasicSR's ``_log_validation_metric_values`` writes::

    ... INFO: Validation DIV2K_val
    \t # lr_psnr: 45.2012\tBest: 45.2012 @ AdFlow_x4 iter

For a training log, the last block of each data set counts. A metric named ``<metric>_t<T>`` (e.g.
``lr_psnr_t0.9``, one per validated temperature) is metric ``<metric>`` at sampling temperature T.

Outputs:

* ``comparison.md``: one table per metric, a row per method (and temperature), a column per data set
  (grouped by scale when results of several scales are given); the best value of a column in bold.
* ``lr_psnr_vs_lpips.png``: LR-PSNR against LPIPS, a point per method (a line over temperatures), one
  panel per scale and data set.
* ``k_sweep.png``: each metric against the flow depth K (Fig. 7), when K is known for some results.

Method names are the experiment names unless mapped with ``labels`` (``{experiment: label}``; several
experiments at different scales may share a label, e.g. ``ESRGAN_x4`` and ``ESRGAN_x8`` -> ``ESRGAN``).
The flow depth K of a result comes from, in order: ``ks`` (``{experiment or label: K}``), the options
key ``k_option`` (dotted, e.g. ``network_g.K``) in the log's options dump, or a ``K<number>`` part of the
experiment name delimited by ``_`` or ``-`` (``AdFlow_x8_K16``). K may be ``L1``: the L1-loss rung
(RRDB / ESRGAN), drawn left of K = 1 as in Fig. 7.
"""
import glob
import math
import os
import os.path as osp
import re
from dataclasses import dataclass, field

import yaml

__all__ = [
    'CompareError', 'Result', 'compare', 'find_log', 'k_sweep_figure', 'load_result', 'markdown_tables',
    'parse_log', 'scatter_figure', 'split_temperature'
]

_LOG_PREFIX = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (?:INFO|WARNING|ERROR|DEBUG|CRITICAL): ?(.*)$')
_METRIC_LINE = re.compile(r'^\t # (\S+): (\S+)')
_TEMPERATURE = re.compile(r'^(.+)_t(\d+(?:\.\d+)?)$')
_DUMP_LINE = re.compile(r'^  [A-Za-z_][\w.-]*(?:: .*|:\[|:)$')  # a top-level key of dict2str's dump
_K_IN_NAME = re.compile(r'(?:^|[_-])K(\d+)(?=$|[_-])')
# metrics where lower is better (the table bolds the minimum); all others: higher is better
_LOWER_IS_BETTER = ('lpips', 'niqe', 'fid', 'nll', 'dists', 'brisque', 'pi')
L1_RUNG = 'L1'


class CompareError(ValueError):
    """A problem with the inputs of a comparison (missing log, conflicting results, bad mapping)."""


@dataclass
class Result:
    """The metrics of one experiment's newest log: ``values[dataset][metric] = value``."""
    experiment: str
    log: str
    scale: int = None
    options: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)
    label: str = None
    k: object = None  # int, 'L1' or None

    @property
    def method(self):
        return self.label or self.experiment


def split_temperature(metric):
    """``'lr_psnr_t0.9'`` -> ``('lr_psnr', 0.9)``; ``'lr_psnr'`` -> ``('lr_psnr', None)``."""
    m = _TEMPERATURE.match(metric)
    return (m.group(1), float(m.group(2))) if m else (metric, None)


def lower_is_better(metric, results=()):
    """Whether lower values of ``metric`` are better: the ``better:`` key of its BasicSR options when a log
    has one (BasicSR's own best-value tracking reads it), else by name (LPIPS, NIQE, FID, NLL, ...)."""
    base = split_temperature(metric)[0]
    for r in results:
        for name, opt in (_option(r.options, 'val.metrics') or {}).items():
            better = opt.get('better') if isinstance(opt, dict) else None
            if split_temperature(name)[0] == base and better in ('lower', 'higher'):
                return better == 'lower'
    base = base.lower()
    return any(base == key or base.startswith(key + '_') or base.endswith('_' + key) for key in _LOWER_IS_BETTER)


def _scalar(text):
    if text == 'None':
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _parse_options_dump(lines, start):
    """Parse BasicSR's ``dict2str`` dump (``key: value`` / ``key:[`` ... ``]``, 2-space indents) from ``start``."""
    root = {}
    stack = [root]
    for line in lines[start:]:
        if not line.startswith('  ') or _LOG_PREFIX.match(line):
            break
        text = line.strip()
        if text == ']':
            if len(stack) > 1:
                stack.pop()
            continue
        if text.endswith(':['):
            child = {}
            stack[-1][text[:-2]] = child
            stack.append(child)
        elif ': ' in text:
            key, value = text.split(': ', 1)
            stack[-1][key] = _scalar(value)
        elif text.endswith(':'):
            stack[-1][text[:-1]] = ''
    return root


def parse_log(path):
    """Read a BasicSR train/test log: ``(options, {dataset: {metric: value}})``; last block per data set wins."""
    with open(path, encoding='utf-8', errors='replace') as f:
        lines = f.read().splitlines()
    options = {}
    values = {}
    i = 0
    while i < len(lines):
        m = _LOG_PREFIX.match(lines[i])
        if m and not options and m.group(1).strip() == '' and i + 1 < len(lines) and _DUMP_LINE.match(lines[i + 1]):
            options = _parse_options_dump(lines, i + 1)
        elif m and m.group(1).startswith('Validation '):
            dataset = m.group(1)[len('Validation '):].strip()
            block = {}
            j = i + 1
            while j < len(lines):
                mm = _METRIC_LINE.match(lines[j])
                if not mm:
                    break
                try:
                    block[mm.group(1)] = float(mm.group(2))
                except ValueError:
                    pass
                j += 1
            values[dataset] = block
            i = j
            continue
        i += 1
    return options, values


def find_log(path):
    """The log to read for ``path``: the file itself, else the newest ``test_*.log`` (or ``train_*.log``) in it."""
    if osp.isfile(path):
        return path
    if not osp.isdir(path):
        raise CompareError(f'{path}: no such result folder or log file')
    for pattern in ('test_*.log', 'train_*.log'):
        # BasicSR names logs <kind>_<name>_<YYYYMMDD_HHMMSS>.log: the time stamp sorts
        logs = sorted(glob.glob(osp.join(path, pattern)), key=lambda p: (osp.basename(p)[-19:], p))
        if logs:
            return logs[-1]
    raise CompareError(f'{path}: no BasicSR log (test_*.log or train_*.log) in this folder')


def _option(options, dotted):
    node = options
    for part in dotted.split('.'):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def parse_k(value, what):
    """A flow depth: a positive integer, or ``L1`` for the L1-loss rung."""
    text = str(value).strip()
    if text.upper() == L1_RUNG:
        return L1_RUNG
    try:
        k = int(text)
    except ValueError:
        raise CompareError(f'{what}: flow depth K must be an integer or L1, got {value!r}') from None
    if k < 0:
        raise CompareError(f'{what}: flow depth K must be >= 0, got {k}')
    return k


def load_result(path, labels=None, ks=None, k_option=None):
    """Read one result folder or log into a :class:`Result` (label and K resolved as the module says)."""
    log = find_log(path)
    options, values = parse_log(log)
    if not values:
        raise CompareError(f'{log}: no "Validation <dataset>" metric block (did the test run with val metrics?)')
    experiment = options.get('name') or osp.basename(osp.normpath(path if osp.isdir(path) else osp.dirname(path)))
    experiment = str(experiment)
    scale = options.get('scale')
    result = Result(experiment=experiment, log=log, scale=int(scale) if isinstance(scale, int) else None,
                    options=options, values=values)
    result.label = (labels or {}).get(experiment)
    ks = ks or {}
    if experiment in ks:
        result.k = parse_k(ks[experiment], f'--k {experiment}')
    elif result.label in ks:
        result.k = parse_k(ks[result.label], f'--k {result.label}')
    elif k_option and _option(options, k_option) is not None:
        result.k = parse_k(_option(options, k_option), f'{log}: {k_option}')
    else:
        m = _K_IN_NAME.search(experiment)
        result.k = int(m.group(1)) if m else None
    return result


def _columns(results):
    scales = {r.scale for r in results}
    cols = []
    for r in results:
        for dataset in r.values:
            if (r.scale, dataset) not in cols:
                cols.append((r.scale, dataset))
    multi_scale = len(scales) > 1

    def title(col):
        scale, dataset = col
        return f'{scale}x {dataset}' if multi_scale and scale is not None else dataset

    return cols, title


def _table_data(results):
    """``{base_metric: {(method, T): {(scale, dataset): value}}}`` with conflicts reported."""
    data = {}
    origin = {}
    for r in results:
        for dataset, metrics in r.values.items():
            for metric, value in metrics.items():
                base, temp = split_temperature(metric)
                key = (base, (r.method, temp), (r.scale, dataset))
                if key in origin:
                    raise CompareError(f'two results for {r.method} on {dataset} (scale {r.scale}), metric {metric}: '
                                       f'{origin[key]} and {r.log}; give them different --label values')
                origin[key] = r.log
                data.setdefault(base, {}).setdefault((r.method, temp), {})[(r.scale, dataset)] = value
    return data


def _fmt(value, decimals):
    if value is None or math.isnan(value):
        return '-'
    if math.isinf(value):
        return 'inf' if value > 0 else '-inf'
    return f'{value:.{decimals}f}'


def _row_name(method, temp):
    return method if temp is None else f'{method} (τ={temp})'


def markdown_tables(results, metrics=None):
    """Markdown: per metric, a table of methods (rows) x data sets (columns), the best of a column in bold."""
    cols, title = _columns(results)
    data = _table_data(results)
    bases = [m for m in data if metrics is None or m in metrics]
    if metrics is not None:
        missing = [m for m in metrics if m not in data]
        if missing:
            raise CompareError(f'metric(s) {", ".join(missing)} not in any log; found: {", ".join(data) or "none"}')
    out = ['# Comparison', '', 'Sources:', '']
    for r in results:
        k = f', K={r.k}' if r.k is not None else ''
        scale = f', {r.scale}x' if r.scale is not None else ''
        out.append(f'- {r.method}: `{r.experiment}`{scale}{k} ({r.log})')
    for base in bases:
        rows = data[base]
        used = [c for c in cols if any(c in v for v in rows.values())]
        lower = lower_is_better(base, results)
        arrow = '↓' if lower else '↑'
        finite = [x for v in rows.values() for x in v.values() if math.isfinite(x)]
        decimals = 2 if finite and max(abs(x) for x in finite) >= 10 else 4  # dB vs LPIPS/SSIM-like
        best = {}
        for c in used:
            vals = [v[c] for v in rows.values() if c in v and not math.isnan(v[c])]
            if len(vals) > 1:
                best[c] = min(vals) if lower else max(vals)
        out += ['', f'## {base} {arrow}', '']
        out.append('| Method | ' + ' | '.join(title(c) for c in used) + ' |')
        out.append('|---|' + '---:|' * len(used))
        for (method, temp), v in rows.items():
            cells = []
            for c in used:
                text = _fmt(v.get(c), decimals)
                if c in best and c in v and v[c] == best[c]:
                    text = f'**{text}**'
                cells.append(text)
            out.append(f'| {_row_name(method, temp)} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(out) + '\n'


def _new_figure(n_panels, width=4.2, height=3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = min(n_panels, 3)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n_panels)]
    return fig, axes


def _pretty(metric):
    names = {'lr_psnr': 'LR-PSNR (dB)', 'lpips': 'LPIPS', 'psnr': 'PSNR (dB)', 'ssim': 'SSIM',
             'diversity': 'diversity (%)'}
    base = split_temperature(metric)[0]
    return names.get(base, base) + (' ↓' if lower_is_better(base) else ' ↑')


def scatter_figure(results, path, x_metric='lpips', y_metric='lr_psnr'):
    """LR-PSNR against LPIPS (or any two metrics): a point per method, a line over temperatures.

    Returns the path written, or None when no result has both metrics.
    """
    data = _table_data(results)
    if x_metric not in data or y_metric not in data:
        return None
    cols, title = _columns(results)
    panels = [c for c in cols if any(c in v for v in data[x_metric].values())
              and any(c in v for v in data[y_metric].values())]
    if not panels:
        return None
    fig, axes = _new_figure(len(panels))
    methods = list(dict.fromkeys(method for method, _ in data[x_metric]))
    for ax, col in zip(axes, panels):
        for i, method in enumerate(methods):
            points = []
            for (m, temp), v in data[x_metric].items():
                y = data[y_metric].get((m, temp), {}).get(col)
                if m == method and col in v and y is not None:
                    points.append((temp if temp is not None else -1.0, v[col], y, temp))
            if not points:
                continue
            points.sort()
            xs, ys = [p[1] for p in points], [p[2] for p in points]
            ax.plot(xs, ys, marker='os^Dv<>p*h'[i % 10], linestyle='-' if len(points) > 1 else 'none',
                    color=f'C{i % 10}', label=method)
            for _, x, y, temp in points:
                if temp is not None:
                    ax.annotate(f'τ={temp}', (x, y), textcoords='offset points', xytext=(4, 4), fontsize=7)
        ax.set_title(title(col))
        ax.margins(0.12)
        ax.set_xlabel(_pretty(x_metric))
        ax.set_ylabel(_pretty(y_metric))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def k_sweep_figure(results, path, metrics=('lpips', 'lr_psnr')):
    """Each metric against flow depth K (paper Fig. 7): a panel per metric, a line per data set and temperature.

    Returns the path written, or None when no result has a known K or none of ``metrics``.
    """
    with_k = [r for r in results if r.k is not None]
    if not with_k:
        return None
    data = _table_data(with_k)
    metrics = [m for m in metrics if m in data]
    if not metrics:
        return None
    k_values = sorted({r.k for r in with_k}, key=lambda k: -1 if k == L1_RUNG else k)
    fig, axes = _new_figure(len(metrics))
    multi_scale = len({r.scale for r in with_k}) > 1
    for ax, metric in zip(axes, metrics):
        # points[(scale, dataset)][T] = [(K position, value)]; T None = a deterministic result (no temperature)
        points = {}
        for r in with_k:
            for dataset, vals in r.values.items():
                for name, value in vals.items():
                    base, temp = split_temperature(name)
                    if base == metric:
                        points.setdefault((r.scale, dataset), {}).setdefault(temp, []).append(
                            (k_values.index(r.k), value))
        lines = {}
        for (scale, dataset), by_temp in points.items():
            name = (f'{scale}x ' if multi_scale and scale else '') + dataset
            temps = [t for t in by_temp if t is not None]
            # deterministic rungs (L1) join every temperature's line, as in Fig. 7
            for temp in temps or [None]:
                key = name + (f' τ={temp}' if temp is not None else '')
                lines[key] = sorted(by_temp[temp] + (by_temp.get(None, []) if temp is not None else []))
        for i, (key, pts) in enumerate(lines.items()):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', color=f'C{i % 10}', label=key)
        ax.set_xticks(range(len(k_values)))
        ax.set_xticklabels([str(k) for k in k_values])
        ax.set_xlabel('flow steps K')
        ax.margins(x=0.08)
        ax.set_ylabel(_pretty(metric))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def compare(paths, out_dir, labels=None, ks=None, k_option=None, metrics=None, x_metric='lpips',
            y_metric='lr_psnr'):
    """Read result folders/logs and write ``comparison.md`` and the figures into ``out_dir``.

    Returns:
        dict: ``{'markdown': text, 'files': [paths written], 'skipped': [reasons]}``.
    """
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise CompareError(f'-o {out_dir} is a file, not a folder; name a folder for the table and figures')
    results = [load_result(p, labels, ks, k_option) for p in paths]
    unknown = set(labels or {}) - {r.experiment for r in results}
    if unknown:
        raise CompareError(f'--label for unknown experiment(s): {", ".join(sorted(unknown))}; experiments read: '
                           f'{", ".join(r.experiment for r in results)}')
    unknown = set(ks or {}) - {r.experiment for r in results} - {r.method for r in results}
    if unknown:
        raise CompareError(f'--k for unknown experiment(s) or label(s): {", ".join(sorted(unknown))}')
    text = markdown_tables(results, metrics)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise CompareError(f'cannot create the output folder -o {out_dir}: {e.strerror}') from None
    files, skipped = [], []
    md_path = osp.join(out_dir, 'comparison.md')
    with open(md_path, 'w', encoding='utf-8') as f:
        f.write(text)
    files.append(md_path)
    scatter = scatter_figure(results, osp.join(out_dir, f'{y_metric}_vs_{x_metric}.png'), x_metric, y_metric)
    if scatter:
        files.append(scatter)
    else:
        skipped.append(f'{y_metric}_vs_{x_metric}.png: no result has both {x_metric} and {y_metric}')
    sweep = k_sweep_figure(results, osp.join(out_dir, 'k_sweep.png'), (x_metric, y_metric))
    if sweep:
        files.append(sweep)
    else:
        skipped.append('k_sweep.png: no result with a known flow depth K (use --k NAME=K, --k-option or a '
                       f'K<number> part in the experiment name) and {x_metric} or {y_metric}')
    return {'markdown': text, 'files': files, 'skipped': skipped, 'results': results}
