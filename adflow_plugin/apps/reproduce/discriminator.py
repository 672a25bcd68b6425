"""Is the adversarial term alive? Each GAN run's discriminator, read from its BasicSR training log.

AdFlowModel logs at ``print_freq`` the discriminator's accuracy on real and on fake patches
(``d_acc_real``, ``d_acc_fake``; 0.5 is chance), the mean gap of its outputs (``d_gap``), their spread
(``d_out_std``) and the gradient norms the GAN and the NLL terms send to the generator; BasicSR's
ESRGANModel logs its raw outputs (``out_d_real``, ``out_d_fake``). The summary averages the last half of
the logged steps, where a discriminator that learned something shows it, and says whether the run warned
that its discriminator was dead or at chance. A log that holds more than one attempt (a reproduction's stage
log after an interrupted training started again) counts only what the finished training did: an attempt
that starts at or before an iteration already logged replaces everything logged from that iteration on.
"""
import re

from adflow_plugin.models.discriminator_health import CHANCE_D_PHRASE, DEAD_D_PHRASE

_STEP = re.compile(r'\[[^\]]*iter:\s*([\d,]+),[^\]]*\]\s*\[eta[^\]]*\]\s*(.*)$')
_WARNING = re.compile(r'iter (\d+): (' + re.escape(DEAD_D_PHRASE) + '|' + re.escape(CHANCE_D_PHRASE) + ')')
_VALUE = re.compile(r'([A-Za-z_][\w]*): ([-+0-9.eE]+|nan|inf)')
KEYS = ('d_acc_real', 'd_acc_fake', 'd_gap', 'd_out_std', 'grad_norm_g_gan', 'grad_norm_g_nll', 'out_d_real',
        'out_d_fake', 'l_d_real', 'l_d_fake')


def _read(path):
    with open(path, encoding='utf-8', errors='replace') as f:
        return f.read()


def _events(text):
    """Training lines ``(iteration, {name: value})`` and discriminator warnings ``(iteration, phrase)`` of the
    training that finished, in log order."""
    events, last = [], 0
    for line in text.splitlines():
        m = _STEP.search(line)
        if m:
            it = int(m.group(1).replace(',', ''))
            if it <= last:  # trained again from an earlier point: that attempt counts
                events = [e for e in events if e[0] < it]
            last = it
            events.append((it, {k: float(v) for k, v in _VALUE.findall(m.group(2))}))
            continue
        w = _WARNING.search(line)
        if w:
            events.append((int(w.group(1)), w.group(2)))
    return events


def _steps(events):
    return [e for e in events if isinstance(e[1], dict)]


def logged_steps(path):
    """``[(iteration, {name: value})]`` of every training line of a BasicSR log, in order."""
    return _steps(_events(_read(path)))


def summarize(path):
    """Means over the last half of the logged steps of a GAN run (``None`` when it logged none)."""
    events = _events(_read(path))
    steps = _steps(events)
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
    warnings = {phrase for _, phrase in events if isinstance(phrase, str)}
    summary['dead_warning'] = DEAD_D_PHRASE in warnings
    summary['chance_warning'] = CHANCE_D_PHRASE in warnings
    return summary
