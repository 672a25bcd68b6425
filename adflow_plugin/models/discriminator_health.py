"""Whether stage 2's adversarial term is alive: the discriminator's accuracy, its output gap, and a
detector for a discriminator whose outputs no longer depend on its input.

The discriminator is relativistic (ESRGAN): it is trained so that ``D(real) - mean D(fake)`` is
positive and ``D(fake) - mean D(real)`` negative. Its accuracy is counted the same way:

* ``d_acc_real``: the fraction of real images with ``D(real) - mean D(fake) > 0``;
* ``d_acc_fake``: the fraction of fake images with ``D(fake) - mean D(real) < 0``
  (an exact tie counts one half, so a constant discriminator scores 0.5, chance);
* ``d_gap``: ``mean D(real) - mean D(fake)`` (logits; 0 when D cannot tell them apart);
* ``d_out_std``: the standard deviation of D's outputs over the real and fake images together.

A discriminator that learns nothing sits at accuracy ~0.5 and gap ~0; a dead one (the
relativistic loss's minimum when no signal is found: a constant output) also has ``d_out_std`` ~0.
Two monitors watch the logged steps: :class:`DeadDiscriminatorMonitor` for a constant D, and
:class:`ChanceDiscriminatorMonitor` for one whose outputs still vary but do not tell real from fake
(seen in the miniature reproduction: accuracy 0.5 for 2,100 iterations with an output spread of 0.02-0.08).
"""
from collections import deque

import torch

DEAD_D_PHRASE = 'the discriminator is dead'  # in the warnings; the reproduction's report looks for them
CHANCE_D_PHRASE = 'the discriminator is at chance'


def _sign_score(diff, positive=True):
    """1 for a correct sign, 0 for a wrong one, 1/2 for a tie (a constant D scores chance, 0.5)."""
    right = diff > 0 if positive else diff < 0
    return right.float() + 0.5 * (diff == 0).float()


def discriminator_accuracy(real_pred, fake_pred):
    """Relativistic accuracies ``(on real, on fake)`` from D's outputs (any shape, one value per image)."""
    real_pred, fake_pred = real_pred.detach().flatten().float(), fake_pred.detach().flatten().float()
    acc_real = float(_sign_score(real_pred - fake_pred.mean()).mean())
    acc_fake = float(_sign_score(fake_pred - real_pred.mean(), positive=False).mean())
    return acc_real, acc_fake


def discriminator_stats(real_pred, fake_pred):
    """``dict`` of d_acc_real, d_acc_fake, d_gap and d_out_std as 0-d tensors on D's device (for BasicSR's
    log_dict; nothing is read on the host)."""
    real_pred, fake_pred = real_pred.detach().flatten().float(), fake_pred.detach().flatten().float()
    both = torch.cat([real_pred, fake_pred])
    return {
        'd_acc_real': _sign_score(real_pred - fake_pred.mean()).mean(),
        'd_acc_fake': _sign_score(fake_pred - real_pred.mean(), positive=False).mean(),
        'd_gap': real_pred.mean() - fake_pred.mean(),
        'd_out_std': both.std() if both.numel() > 1 else torch.zeros((), device=both.device),
    }


class DeadDiscriminatorMonitor:
    """Counts consecutive logged steps on which the discriminator looks dead.

    A step looks dead when the spread of D's outputs over the batch (real and fake together) is below
    ``std_threshold`` and ``|gap|`` is below ``gap_threshold``: D gives (nearly) the same logit whatever
    it is shown, so the adversarial term sends the generator no information.

    Args:
        patience (int): Consecutive dead logged steps before :meth:`update` reports. 0 disables.
        std_threshold (float): Output spread below which D is constant. Default: 1e-3.
        gap_threshold (float): |mean D(real) - mean D(fake)| below which D does not separate. Default: 1e-3.
    """

    def __init__(self, patience=5, std_threshold=1e-3, gap_threshold=1e-3):
        self.patience = int(patience)
        self.std_threshold = float(std_threshold)
        self.gap_threshold = float(gap_threshold)
        self.dead_steps = 0
        self.warned = False

    def looks_dead(self, stats):
        """Whether one step's :func:`discriminator_stats` show a constant discriminator (a 0-d bool tensor)."""
        return (stats['d_out_std'] < self.std_threshold) & (stats['d_gap'].abs() < self.gap_threshold)

    def update(self, dead, stats, current_iter):
        """Feed one logged step (``dead``: :meth:`looks_dead`, agreed by all processes); returns the one-line
        message when D has looked dead for ``patience`` logged steps in a row (once per dead spell)."""
        if self.patience <= 0:
            return None
        if dead:
            self.dead_steps += 1
        else:
            self.dead_steps = 0
            self.warned = False
        if self.dead_steps < self.patience or self.warned:
            return None
        self.warned = True
        std, gap = float(stats['d_out_std']), float(stats['d_gap'])
        return (f'iter {current_iter}: {DEAD_D_PHRASE} (its outputs have not depended on its input for '
                f'{self.dead_steps} logged steps: std {std:.2e}, real-fake gap {gap:+.2e}), so the GAN term teaches '
                'the generator nothing and stage 2 is only more NLL training; try a lower optim_d lr (1e-4 learned '
                'where 1e-3 died), then a wider network_d or train.real_noise (README: "Is the discriminator '
                'alive?"; train.stop_on_dead_d: true stops the run here)')


class ChanceDiscriminatorMonitor:
    """Reports a discriminator whose accuracy has stayed at chance over a window of logged steps.

    The balanced accuracy ``(d_acc_real + d_acc_fake) / 2`` of one logged batch is noisy (a batch of 8
    scores in steps of 1/16), so the monitor averages it over the last ``window`` logged steps: at
    chance that mean is 0.5 give or take about 0.03 for 20 steps of 8, and a discriminator that has
    learned anything (0.6 and above) stays clear of ``accuracy``.

    Args:
        window (int): Logged steps averaged; 0 disables. Default: 20.
        accuracy (float): Mean balanced accuracy at or below which D counts as at chance. Default: 0.55.
    """

    def __init__(self, window=20, accuracy=0.55):
        self.window = int(window)
        self.accuracy = float(accuracy)
        self.recent = deque(maxlen=max(self.window, 1))
        self.warned = False

    def update(self, balanced_accuracy, gap, current_iter):
        """Feed one logged step (floats, agreed by all processes); returns the one-line message the first
        time the window's mean accuracy is at chance (again only after D has left chance)."""
        if self.window <= 0:
            return None
        self.recent.append(float(balanced_accuracy))
        mean = sum(self.recent) / len(self.recent)
        if len(self.recent) < self.window:
            return None
        if mean > self.accuracy:
            self.warned = False
            return None
        if self.warned:
            return None
        self.warned = True
        return (f'iter {current_iter}: {CHANCE_D_PHRASE} (mean accuracy {mean:.2f} over the last {self.window} '
                f'logged steps, real-fake gap {gap:+.2e}): it does not tell the samples from the real images, so '
                'the GAN term gives the generator no direction and stage 2 is mostly more NLL training; '
                'benchmarks/discriminator_probe.py shows whether a discriminator can tell them apart at all (on '
                'smooth training patches it cannot), then try a longer stage 2 or a lower optim_d lr (README: '
                '"Is the discriminator alive?")')
