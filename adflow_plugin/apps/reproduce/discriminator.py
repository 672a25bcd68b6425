"""Is the adversarial term alive? Each GAN run's discriminator, read from its BasicSR training log.

AdFlowModel logs at ``print_freq`` the discriminator's accuracy on real and on fake patches
(``d_acc_real``, ``d_acc_fake``; 0.5 is chance), the mean gap of its outputs (``d_gap``), their spread
(``d_out_std``) and the gradient norms the GAN and the NLL terms send to the generator; BasicSR's
ESRGANModel logs its raw outputs (``out_d_real``, ``out_d_fake``). The summary averages the last half of
the logged steps, where a discriminator that learned something shows it, and says whether the run warned
that its discriminator was dead or at chance.
"""
import re

from adflow_plugin.models.discriminator_health import CHANCE_D_PHRASE, DEAD_D_PHRASE

_STEP = re.compile(r'\[[^\]]*iter:\s*([\d,]+),[^\]]*\]\s*\[eta[^\]]*\]\s*(.*)$')
_VALUE = re.compile(r'([A-Za-z_][\w]*): ([-+0-9.eE]+|nan|inf)')
KEYS = ('d_acc_real', 'd_acc_fake', 'd_gap', 'd_out_std', 'grad_norm_g_gan', 'grad_norm_g_nll', 'out_d_real',
        'out_d_fake', 'l_d_real', 'l_d_fake')


def _read(path):
    with open(path, encoding='utf-8', errors='replace') as f:
        return f.read()


def _steps(text):
    steps = []
    for line in text.splitlines():
        m = _STEP.search(line)
        if m:
            steps.append((int(m.group(1).replace(',', '')), {k: float(v) for k, v in _VALUE.findall(m.group(2))}))
    return steps


def logged_steps(path):
    """``[(iteration, {name: value})]`` of every training line of a BasicSR log, in order."""
    return _steps(_read(path))


def summarize(path):
    """Means over the last half of the logged steps of a GAN run (``None`` when it logged none)."""
    text = _read(path)
    steps = _steps(text)
    if not steps:
        return None
    tail = steps[len(steps) // 2:]
    summary = {'logged_steps': len(tail), 'from_iter': tail[0][0], 'to_iter': tail[-1][0]}
    for key in KEYS:
        values = [v[key] for _, v in tail if key in v]
        if values:
            summary[key] = sum(values) / len(values)
    if 'd_gap' not in summary and 'out_d_real' in summary:
        summary['d_gap'] = summary['out_d_real'] - summary['out_d_fake']
    if summary.get('grad_norm_g_nll'):
        summary['gan_to_nll_grad'] = summary.get('grad_norm_g_gan', 0.0) / summary['grad_norm_g_nll']
    summary['dead_warning'] = DEAD_D_PHRASE in text
    summary['chance_warning'] = CHANCE_D_PHRASE in text
    return summary
