"""The stages of ``basicsr reproduce`` in order: data, training runs, tests, per-image evaluation, report.

Every training and test stage is a real ``basicsr train`` / ``basicsr test`` on an options file written
to ``OUT/options/``, run in this process with ``OUT`` as the working directory (so ``experiments/`` and
``results/`` land there), its output in ``OUT/logs/<stage>.log``. A stage that finished is not run
again: training runs resume with ``--auto_resume``, and a test is redone only if its images are missing.
So an interrupted reproduction continues where it stopped when the same command is run again.
"""
import contextlib
import json
import logging
import os
import os.path as osp
import sys
import time

import yaml

from adflow_plugin.apps.reproduce import runs
from adflow_plugin.apps.reproduce.data import prepare_data
from adflow_plugin.apps.reproduce.discriminator import summarize as discriminator_summary
from adflow_plugin.apps.reproduce.evaluate import BICUBIC, eval_pairs, evaluate_bicubic, evaluate_run, log_disagreement
from adflow_plugin.apps.reproduce.report import write_report


class StageError(RuntimeError):
    """A stage failed; the message names it and its log."""


def _reset_basicsr_logger():
    """BasicSR sets its logger up once per process (with the first run's log file): undo that between stages."""
    from basicsr.utils import logger as basicsr_logger
    log = logging.getLogger('basicsr')
    for handler in list(log.handlers):
        handler.close()
        log.removeHandler(handler)
    basicsr_logger.initialized_logger.pop('basicsr', None)


def _fmt_time(seconds):
    seconds = max(0, int(round(seconds)))
    return f'{seconds // 60}:{seconds % 60:02d}'


class Progress:
    """One line per stage: which, how far, elapsed, and the time left (estimates corrected as stages finish)."""

    def __init__(self, estimates, stream=sys.stdout):
        self.estimates = estimates  # stage -> estimated seconds
        self.start = time.time()
        self.done = []
        self.measured = 0.0
        self.predicted = 0.0
        self.stream = stream

    def begin(self, stage):
        remaining = sum(v for k, v in self.estimates.items() if k not in self.done)
        factor = self.measured / self.predicted if self.predicted > 0 else 1.0
        n = len(self.done) + 1
        print(f'[{n}/{len(self.estimates)}] {stage} | elapsed {_fmt_time(time.time() - self.start)} | '
              f'about {_fmt_time(remaining * factor)} left', file=self.stream, flush=True)
        return time.time()

    def end(self, stage, started, ran=True):
        self.done.append(stage)
        if ran and stage.startswith('train '):  # training dominates: its pace corrects every estimate
            self.measured += time.time() - started
            self.predicted += self.estimates[stage]


def estimates(preset, n_eval):
    """Estimated seconds of every stage, from the preset's seconds per iteration."""
    spi = preset['sec_per_iter']
    est = {'data': 20.0 + 2.0 * n_eval}
    for run in runs.train_runs(preset):
        kind, k = runs.run_kind(run), runs.flow_k(run)
        depth = (0.5 + k / 8) if k else 1.0
        est[f'train {run}'] = runs.total_iters(run, preset) * spi[kind] * depth
    per_image = spi['baseflow'] * (preset['eval_size'] / preset['gt_size'])**2 / preset['batch']
    for run in runs.train_runs(preset):
        temps = runs.test_temperatures(run, preset)
        est[f'test {run}'] = 5.0 + n_eval * per_image * (len(temps) * preset['num_samples'] if temps else 1)
    est['evaluate'] = 5.0 + n_eval * 0.3 * len(est)
    return est


class Reproduction:
    """One reproduction in folder ``out`` with ``preset`` on the given photographs."""

    def __init__(self, out, preset, train_files, eval_files, train_dir, eval_dir, verbose=False):
        self.out = osp.abspath(out)
        self.preset = preset
        self.train_files, self.eval_files = train_files, eval_files
        self.train_dir, self.eval_dir = train_dir, eval_dir
        self.verbose = verbose
        self.progress = Progress(estimates(preset, len(eval_files)))

    # ------------------------------------------------------------------ stage runner
    @contextlib.contextmanager
    def _stage_output(self, stage):
        """Run in OUT with the stage's output in OUT/logs/<stage>.log (also on the terminal with verbose)."""
        os.makedirs(osp.join(self.out, 'logs'), exist_ok=True)
        log_path = osp.join(self.out, 'logs', stage.replace(' ', '_') + '.log')
        cwd = os.getcwd()
        os.chdir(self.out)
        try:
            if self.verbose:
                yield log_path
            else:
                with open(log_path, 'a') as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                    yield log_path
        finally:
            os.chdir(cwd)

    def _basicsr(self, stage, command, opt):
        from adflow_plugin.cli import main as basicsr_main
        path = osp.join(self.out, 'options', f'{command}_{opt["name"]}.yml')
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            yaml.safe_dump(opt, f, sort_keys=False)
        argv = [command, '-opt', path] + (['--auto_resume'] if command == 'train' else [])
        with self._stage_output(stage) as log_path:
            _reset_basicsr_logger()
            try:
                code = basicsr_main(argv)
            except (Exception, SystemExit) as e:  # noqa: B902  a stage's failure ends the reproduction cleanly
                code = f'{type(e).__name__}: {e}'.splitlines()[0]
            finally:
                _reset_basicsr_logger()
        if code not in (0, None):
            raise StageError(f'stage "{stage}" (basicsr {" ".join(argv)}) failed: {code}; see {log_path}')

    def _timed(self, stage, func, skip=False):
        started = self.progress.begin(stage + (' (done before, reused)' if skip else ''))
        result = None if skip else func()
        self.progress.end(stage, started, ran=not skip)
        return result

    # ------------------------------------------------------------------ stages
    def _train(self, run):
        opt = runs.train_options(run, self.preset, self.data)
        done = osp.isfile(osp.join(self.out, runs.checkpoint(run, opt['train']['total_iter'])))
        self._timed(f'train {run}', lambda: self._basicsr(f'train {run}', 'train', opt), skip=done)

    def _test_weights(self, run):
        best = runs.checkpoint(run, 'best')
        return best if run.startswith('AdFlow') and osp.isfile(osp.join(self.out, best)) else runs.checkpoint(run)

    def _test(self, run):
        opt = runs.test_options(run, self.preset, self.data, self._test_weights(run))
        results_dir = self.results_dirs[run]
        marker = osp.join(results_dir, 'reproduce_test.json')
        weights = opt['path']['pretrain_network_g']
        want = dict(weights=weights, mtime=osp.getmtime(osp.join(self.out, weights)))
        done = False
        if osp.isfile(marker):
            with open(marker) as f:
                done = json.load(f) == want
        self._timed(f'test {run}', lambda: self._basicsr(f'test {run}', 'test', opt), skip=done)
        if not done:
            with open(marker, 'w') as f:
                json.dump(want, f)

    def run(self):
        start = time.time()

        def data():
            with self._stage_output('data'):
                return prepare_data(osp.join(self.out, 'data'), self.train_files, self.eval_files, self.preset)

        self.data = self._timed('data', data)
        self.results_dirs = {run: osp.join(self.out, 'results', f'test_{run}') for run in runs.train_runs(self.preset)}
        for run in runs.train_runs(self.preset):
            self._train(run)
        for run in runs.train_runs(self.preset):
            self._test(run)
        results = self._timed('evaluate', self._evaluate)
        results['info'] = dict(train_dir=self.train_dir, eval_dir=self.eval_dir,
                               train_photos=len(self.data['train_files']),
                               holdout_photos=len(self.data['holdout_files']), eval_photos=len(self.eval_files),
                               holdout=[osp.basename(f) for f in self.data['holdout_files']],
                               wall_time_min=(time.time() - start) / 60, preset=self.preset)
        paths = write_report(self.out, results, self.preset, self.pairs, self.results_dirs)
        return results, paths

    def _evaluate(self):
        self.pairs = eval_pairs(self.data)
        metrics = {BICUBIC: {'-': evaluate_bicubic(self.pairs, self.preset['scale'])}}
        warnings, discriminators = [], {}
        for run in runs.train_runs(self.preset):
            metrics[run] = evaluate_run(run, self.preset, self.pairs, self.results_dirs[run])
            for t, summary in metrics[run].items():
                warnings += [f'{run} T={t}: {w}' for w in log_disagreement(summary)]
            if runs.run_kind(run) in ('esrgan', 'adflow'):  # the GAN runs
                log = osp.join(self.out, 'logs', f'train_{run}.log')
                discriminators[run] = discriminator_summary(log) if osp.isfile(log) else None
        return dict(metrics=metrics, warnings=warnings, discriminator=discriminators)
