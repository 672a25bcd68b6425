"""What ``basicsr reproduce`` writes: ``table.md`` (the paper's Table 2 layout, per-image LR-PSNR and the
Fig. 7 ladder), ``fig7.png``, ``crops.png`` and ``results.json``."""
import os.path as osp

import cv2
import numpy as np

from adflow_plugin.apps.reproduce.evaluate import BICUBIC, sample_paths
from adflow_plugin.apps.reproduce.runs import ESRGAN, L1, adflow, baseflow, sample_temperatures, total_iters
from adflow_plugin.utils import write_json

TABLE_COLUMNS = [('psnr', 'PSNR ↑', 2), ('ssim', 'SSIM ↑', 4), ('lpips', 'LPIPS ↓', 4), ('lr_psnr', 'LR-PSNR ↑', 2)]


def _iterations(preset):
    it = preset['iters']
    return (f'Iterations: L1 {total_iters(L1, preset)} (its checkpoint at {it["l1"]} starts ESRGAN and every '
            f'flow), then ESRGAN {it["esrgan"]}; BaseFlow {it["baseflow"]}, then AdFlow {it["adflow"]}.')


def _fmt(value, decimals):
    return '-' if value is None else f'{value:.{decimals}f}'


def main_rows(results, preset):
    """(label, run, temperature key) of Table 2's rows: bicubic, L1, ESRGAN, BaseFlow and AdFlow at main K."""
    k = preset['main_k']
    rows = [('Bicubic', BICUBIC, '-'), ('L1 (RRDB)', L1, '-'), ('ESRGAN', ESRGAN, '-')]
    for run, label in ((baseflow(k), 'BaseFlow'), (adflow(k), 'AdFlow')):
        for t in sample_temperatures(run, preset):
            rows.append((f'{label} K={k}, T={t:g}', run, f'{t:g}'))
    return [r for r in rows if r[1] in results['metrics']]


def table2_lines(results, preset):
    """The paper's Table 2 layout as markdown lines (also in the README's reproduction section)."""
    bicubic = results['metrics'][BICUBIC]['-']['per_image']
    n = len(bicubic)
    head = ['Method'] + [c[1] for c in TABLE_COLUMNS] + [
        'LR-PSNR worst image', f'LR-PSNR < bicubic (of {n})', 'LR-PSNR over samples: mean / worst', 'Diversity ↑']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for label, run, t in main_rows(results, preset):
        s = results['metrics'][run][t]
        cells = [label] + [_fmt(s['mean'].get(key), d) for key, _, d in TABLE_COLUMNS]
        cells.append(f'{s["worst"]["lr_psnr"]:.2f} ({s["worst_image"]["lr_psnr"]})')
        below = sum(s['per_image'][img]['lr_psnr'] < bicubic[img]['lr_psnr'] for img in bicubic)
        cells.append('-' if run == BICUBIC else str(below))
        if 'lr_psnr_mean' in s['mean']:
            cells.append(f'{s["mean"]["lr_psnr_mean"]:.2f} / {s["mean"]["lr_psnr_worst"]:.2f}')
            cells.append(_fmt(s['mean']['diversity'], 2))
        else:
            cells += ['-', '-']
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def ladder(results, preset):
    """Fig. 7's curves: ``(flow, temperature, [(K, LR-PSNR, worst LR-PSNR, LPIPS), ...])`` for BaseFlow and
    AdFlow at their paper temperature and at the mode (T = 0), each from its K = 0 rung. The paper's ladder is
    AdFlow's, and its L1 rung is the L1 loss with the same adversarial term, ESRGAN ("the standard RRDB and
    ESRGAN"; the "brief increase in LPIPS" from L1 to K = 1 is against ESRGAN); BaseFlow's, trained on the
    NLL alone, starts from the L1 RRDB. Both rungs are deterministic: the like-for-like flow is its mode."""
    curves = []
    for label, name, rung in (('BaseFlow', baseflow, L1), ('AdFlow', adflow, ESRGAN)):
        base = results['metrics'].get(rung, {}).get('-')
        for t in sample_temperatures(name(preset['ks'][0]), preset)[:1] + ([0.0] if preset.get('test_mode') else []):
            points = [(0, base['mean']['lr_psnr'], base['worst']['lr_psnr'], base['mean']['lpips'])] if base else []
            for k in preset['ks']:
                s = results['metrics'].get(name(k), {}).get(f'{t:g}')
                if s:
                    points.append((k, s['mean']['lr_psnr'], s['worst']['lr_psnr'], s['mean']['lpips']))
            if len(points) > (1 if base else 0):
                curves.append((label, t, points))
    return curves


RUNG_LABELS = {'BaseFlow': 'L1 (RRDB)', 'AdFlow': 'ESRGAN (L1 + GAN)'}


def ladder_lines(results, preset):
    """Fig. 7's ladder (LR-PSNR and LPIPS against K) as markdown lines: each flow's K = 0 rung once, then its
    curves."""
    lines = ['| Method | K | T | LR-PSNR ↑ | LR-PSNR worst image | LPIPS ↓ |', '|---|---|---|---|---|---|']
    shown = set()
    for label, t, points in ladder(results, preset):
        for k, lr_psnr, worst, lpips in points:
            if k == 0 and label in shown:
                continue
            shown.add(label)
            name, temp = (RUNG_LABELS[label], '-') if k == 0 else (label, f'{t:g}')
            lines.append(f'| {name} | {k} | {temp} | {lr_psnr:.2f} | {worst:.2f} | {lpips:.4f} |')
    return lines


def per_image_lines(results, preset):
    """LR-PSNR of every evaluation image and Table-2 row as markdown lines."""
    rows = main_rows(results, preset)
    head = ['Image'] + [label for label, _, _ in rows]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for img in sorted(results['metrics'][BICUBIC]['-']['per_image']):
        cells = [img] + [f'{results["metrics"][run][t]["per_image"][img]["lr_psnr"]:.2f}' for _, run, t in rows]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def _warning(summary):
    """The health warnings a run's log holds: 'dead', 'at chance', both, or 'none'."""
    said = [name for key, name in (('dead_warning', 'dead'), ('chance_warning', 'at chance')) if summary.get(key)]
    return ', '.join(said) or 'none'


def discriminator_lines(results):
    """Each GAN run's discriminator (see ``discriminator.summarize``) as markdown lines."""
    lines = ['| Run | logged steps (iterations) | D accuracy real / fake | output gap real - fake | output std | '
             'GAN / NLL gradient on G | warning |', '|---|---|---|---|---|---|---|']
    for run, s in sorted(results.get('discriminator', {}).items()):
        if not s:
            lines.append(f'| {run} | no training log | - | - | - | - | - |')
            continue
        acc = (f'{s["d_acc_real"]:.2f} / {s["d_acc_fake"]:.2f}' if 'd_acc_real' in s else '-')
        ratio = f'{s["gan_to_nll_grad"]:.2e}' if 'gan_to_nll_grad' in s else '-'
        lines.append(f'| {run} | {s["logged_steps"]} ({s["from_iter"]}-{s["to_iter"]}) | {acc} | '
                     f'{_fmt(s.get("d_gap"), 3)} | {_fmt(s.get("d_out_std"), 3)} | {ratio} | '
                     f'{_warning(s)} |')
    return lines


def _wall_time(info):
    """'76.0 min', with the number of invocations of an interrupted run and the --jobs used where they matter."""
    invocations = info.get('invocations') or []
    notes = [f'{len(invocations)} invocations'] if len(invocations) > 1 else []
    jobs = sorted({i['jobs'] for i in invocations})
    if jobs and jobs != [1]:
        notes.append('--jobs ' + '/'.join(str(j) for j in jobs))
    return f'{info["wall_time_min"]:.1f} min' + (f' ({", ".join(notes)})' if notes else '')


def write_table(path, results, preset):
    info = results['info']
    lines = [f'# AdFlow in miniature: preset `{preset["name"]}`, {preset["scale"]}x', '',
             f'Training: {info["train_photos"]} photographs from `{info["train_dir"]}` '
             f'({info["holdout_photos"]} more held out for checkpoint selection); evaluation: '
             f'{info["eval_photos"]} photographs from `{info["eval_dir"]}` (centre crops of at most '
             f'{preset["eval_size"]} px). Encoder: RRDB {preset["num_feat"]} features, {preset["num_block"]} '
             f'blocks; patches {preset["gt_size"]}, batch {preset["batch"]}. {_iterations(preset)} '
             f'Wall time {_wall_time(info)}.', '',
             'PSNR, SSIM, LPIPS and LR-PSNR are means over the images of the first sample; LR-PSNR is the '
             "paper's (bicubic(SR) vs the LR input, MATLAB 8-bit bicubic). Flows: LR-PSNR and diversity over "
             f'{preset["num_samples"]} samples per image.', '', '## Table 2 layout', ''] + table2_lines(results, preset)
    lines += ['', '## Fig. 7: flow depth', ''] + ladder_lines(results, preset)
    lines += ['', '## LR-PSNR per image', ''] + per_image_lines(results, preset)
    lines += ['', '## Discriminators', '', 'Means over the last half of the logged training steps. Accuracy: the '
              'fraction of real (fake) patches the relativistic discriminator scores above (below) the mean of the '
              'other kind; 0.5 is chance. ESRGAN (BasicSR) logs only its outputs.', ''] + discriminator_lines(results)
    lines.append('')
    with open(path, 'w') as f:
        f.write('\n'.join(lines))


def write_fig7(path, results, preset):
    """LR-PSNR and LPIPS against K: BaseFlow from the L1 RRDB and AdFlow from ESRGAN (K = 0), sampled at the
    paper's temperature (solid) and at the mode, T = 0 (dashed); bicubic upscaling dotted."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.9), dpi=100)
    colours = {'BaseFlow': 'tab:blue', 'AdFlow': 'tab:orange'}
    for ax, idx, key, title in ((axes[0], 1, 'lr_psnr', 'LR-PSNR (dB) ↑'), (axes[1], 3, 'lpips', 'LPIPS ↓')):
        for label, t, points in ladder(results, preset):
            rung = 'L1 RRDB' if label == 'BaseFlow' else 'ESRGAN'
            ax.plot([p[0] for p in points], [p[idx] for p in points], color=colours[label],
                    linestyle='--' if t == 0 else '-', marker='o' if label == 'BaseFlow' else 's',
                    label=f'{label} T={t:g}' + (' (mode)' if t == 0 else f' (K=0: {rung})'))
        if BICUBIC in results['metrics']:
            ax.axhline(results['metrics'][BICUBIC]['-']['mean'][key], linestyle=':', color='gray', label=BICUBIC)
        ax.set_xticks([0] + list(preset['ks']))
        ax.set_xticklabels(['L1'] + [str(k) for k in preset['ks']])
        ax.set_xlabel('flow steps per level K')
        ax.set_title(title)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc='lower center', ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def _crop_box(gt, size):
    """The ``size`` window of ``gt`` with the most detail (largest Laplacian energy), on an 8-pixel grid."""
    grey = cv2.cvtColor(gt, cv2.COLOR_BGR2GRAY).astype(np.float32)
    energy = np.abs(cv2.Laplacian(grey, cv2.CV_32F))
    best, box = -1, (0, 0)
    for y in range(0, max(1, gt.shape[0] - size + 1), 8):
        for x in range(0, max(1, gt.shape[1] - size + 1), 8):
            e = float(energy[y:y + size, x:x + size].sum())
            if e > best:
                best, box = e, (y, x)
    return box


def write_crops(path, results, preset, pairs, results_dirs, num_images=3, size=64):
    """One row per evaluation image (the most detailed ``num_images``): LR, bicubic, L1, ESRGAN, BaseFlow,
    AdFlow at its two temperatures, GT; crops of ``size`` HR pixels, shown without resampling."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from adflow_plugin.utils.matlab_resize import imresize_uint8
    k, scale = preset['main_k'], preset['scale']
    size = min(size, min(min(gt.shape[:2]) for _, gt, _ in pairs))
    ranked = sorted(pairs, key=lambda p: -np.abs(cv2.Laplacian(cv2.cvtColor(p[1], cv2.COLOR_BGR2GRAY),
                                                                cv2.CV_32F)).mean())[:num_images]
    columns = [('LR', None, None), ('Bicubic', BICUBIC, None), ('L1', L1, None), ('ESRGAN', ESRGAN, None)]
    columns += [(f'{label} T={t:g}', run, t) for label, run in (('BaseFlow', baseflow(k)), ('AdFlow', adflow(k)))
                for t in sample_temperatures(run, preset)]
    columns.append(('GT', 'GT', None))
    fig, axes = plt.subplots(len(ranked), len(columns), figsize=(1.3 * len(columns), 1.45 * len(ranked)), dpi=100,
                             squeeze=False)
    for row, (name, gt, lr) in enumerate(ranked):
        y, x = _crop_box(gt, size)
        for col, (label, run, t) in enumerate(columns):
            if run is None:
                img = np.repeat(np.repeat(lr, scale, 0), scale, 1)  # nearest: the LR pixels as they are
            elif run == 'GT':
                img = gt
            elif run == BICUBIC:
                img = imresize_uint8(lr, scale)
            else:
                img = cv2.imread(sample_paths(results_dirs[run], run, name, t, preset['num_samples'] if t is not None
                                              else 1)[0])
            ax = axes[row][col]
            ax.imshow(img[y:y + size, x:x + size, ::-1], interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label, fontsize=7)
            if col == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.tight_layout(pad=0.3)
    fig.savefig(path)
    plt.close(fig)


def write_report(out_dir, results, preset, pairs, results_dirs):
    """All four outputs; returns their paths."""
    paths = {name: osp.join(out_dir, name) for name in ('table.md', 'fig7.png', 'crops.png', 'results.json')}
    write_json(paths['results.json'], results)
    write_table(paths['table.md'], results, preset)
    write_fig7(paths['fig7.png'], results, preset)
    write_crops(paths['crops.png'], results, preset, pairs, results_dirs)
    return paths
