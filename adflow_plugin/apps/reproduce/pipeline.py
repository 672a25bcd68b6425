"""The stages of ``basicsr reproduce`` in order: data, training runs, tests, per-image evaluation, report.

Every training and test stage is a real ``basicsr train`` / ``basicsr test`` on an options file written
to ``OUT/options/``, run in this process with ``OUT`` as the working directory (so ``experiments/`` and
``results/`` land there), its output in ``OUT/logs/<stage>.log``. A stage that finished is not run
again: training runs resume with ``--auto_resume``, and a test is redone only if its images are missing.
So an interrupted reproduction continues where it stopped when the same command is run again. With
``jobs`` above 1 the training and test stages run as ``basicsr`` child processes, side by side where
they do not depend on each other (:mod:`.scheduler`).
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
from adflow_plugin.apps.reproduce.scheduler import Scheduler, Stage


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

    def __init__(self, estimates, stream=sys.stdout, on_end=None, parallel=1):
        self.estimates = estimates  # stage -> estimated seconds
        self.parallel = parallel  # stages run at once (``--jobs``): the work left is shared among them
        self.on_end = on_end  # called after every stage this invocation ran
        self.start = time.time()
        self.begun = 0
        self.done = []
        self.ran = []  # stages run (not reused) by this invocation
        self.measured = 0.0
        self.predicted = 0.0
        self.stream = stream

    def begin(self, stage):
        """Print the stage's line."""
        remaining = sum(v for k, v in self.estimates.items() if k not in self.done)
        factor = self.measured / self.predicted if self.predicted > 0 else 1.0
        self.begun += 1
        print(f'[{self.begun}/{len(self.estimates)}] {stage} | elapsed {_fmt_time(time.time() - self.start)} | '
              f'about {_fmt_time(remaining * factor / self.parallel)} left', file=self.stream, flush=True)
        return time.time()

    def reused(self, stage):
        """A stage that finished before: its line, and counted as done."""
        self.end(stage, self.begin(stage + ' (done before, reused)'), ran=False)

    def end(self, stage, started, ran=True):
        self.done.append(stage)
        if ran:
            self.ran.append(stage)
        if ran and stage.startswith('train '):  # training dominates: its pace corrects every estimate
            self.measured += time.time() - started
            self.predicted += self.estimates[stage]
        if ran and self.on_end is not None:
            self.on_end()


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
        draws = sum(1 if t == 0 else preset['num_samples'] for t in runs.test_temperatures(run, preset))
        est[f'test {run}'] = 5.0 + n_eval * per_image * max(draws, 1)  # the mode (T = 0) is decoded once
    est['evaluate'] = 5.0 + n_eval * 0.3 * len(est)
    return est


class Reproduction:
    """One reproduction in folder ``out`` with ``preset`` on the given photographs."""

    def __init__(self, out, preset, train_files, eval_files, train_dir, eval_dir, verbose=False, jobs=1):
        self.out = osp.abspath(out)
        self.preset = preset
        self.train_files, self.eval_files = train_files, eval_files
        self.train_dir, self.eval_dir = train_dir, eval_dir
        self.verbose = verbose
        self.jobs = jobs
        self._entry = None  # this invocation's index in OUT/wall_time.json, once it has one
        self.progress = Progress(estimates(preset, len(eval_files)), on_end=self._record_invocation, parallel=jobs)

    # ------------------------------------------------------------------ stage runner
    def _log_path(self, stage):
        os.makedirs(osp.join(self.out, 'logs'), exist_ok=True)
        return osp.join(self.out, 'logs', stage.replace(' ', '_') + '.log')

    @contextlib.contextmanager
    def _stage_output(self, stage):
        """Run in OUT with the stage's output in OUT/logs/<stage>.log (also on the terminal with verbose)."""
        log_path = self._log_path(stage)
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

    def _write_options(self, command, opt):
        """Write ``opt`` to OUT/options and return the ``basicsr`` arguments that run it."""
        path = osp.join(self.out, 'options', f'{command}_{opt["name"]}.yml')
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            yaml.safe_dump(opt, f, sort_keys=False)
        return [command, '-opt', path] + (['--auto_resume'] if command == 'train' else [])

    def _basicsr(self, stage, command, opt):
        from adflow_plugin.cli import main as basicsr_main
        argv = self._write_options(command, opt)
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
        if skip:
            return self.progress.reused(stage)
        started = self.progress.begin(stage)
        result = func()
        self.progress.end(stage, started)
        return result

    # ------------------------------------------------------------------ stages
    def _train_plan(self, run):
        opt = runs.train_options(run, self.preset, self.data)
        return opt, osp.isfile(osp.join(self.out, runs.checkpoint(run, opt['train']['total_iter'])))

    def _train(self, run):
        opt, done = self._train_plan(run)
        self._timed(f'train {run}', lambda: self._basicsr(f'train {run}', 'train', opt), skip=done)

    def _test_weights(self, run):
        best = runs.checkpoint(run, 'best')
        return best if run.startswith('AdFlow') and osp.isfile(osp.join(self.out, best)) else runs.checkpoint(run)

    def _test_plan(self, run):
        """The test's options, its marker file and what the marker must say for the test to count as done:
        the same weights, unchanged since, tested the same way (temperatures, samples, metrics)."""
        opt = runs.test_options(run, self.preset, self.data, self._test_weights(run))
        marker = osp.join(self.results_dirs[run], 'reproduce_test.json')
        weights = opt['path']['pretrain_network_g']
        want = dict(weights=weights, mtime=osp.getmtime(osp.join(self.out, weights)), val=opt['val'])
        done = False
        if osp.isfile(marker):
            with open(marker) as f:
                done = json.load(f) == want
        return opt, marker, want, done

    @staticmethod
    def _mark(marker, want):
        with open(marker, 'w') as f:
            json.dump(want, f)

    def _test(self, run):
        opt, marker, want, done = self._test_plan(run)
        self._timed(f'test {run}', lambda: self._basicsr(f'test {run}', 'test', opt), skip=done)
        if not done:
            self._mark(marker, want)

    def _stages(self):
        """Every training and test as a :class:`Stage` for the scheduler (``--jobs`` above 1)."""
        stages, marks = [], {}
        for run in runs.train_runs(self.preset):
            def train(run=run):
                opt, done = self._train_plan(run)
                return None if done else self._write_options('train', opt)

            def test(run=run):
                opt, marker, want, done = self._test_plan(run)
                marks[run] = (marker, want)
                return None if done else self._write_options('test', opt)

            stages.append(Stage(f'train {run}', [f'train {r}' for r in runs.needs(run)], train,
                                self._log_path(f'train {run}')))
            stages.append(Stage(f'test {run}', [f'train {run}'], test, self._log_path(f'test {run}'),
                                finish=lambda run=run: self._mark(*marks[run])))
        return stages

    def run(self):
        try:
            results = self._run_stages()
        except BaseException:
            self._record_invocation(failed=True)  # its time was spent on the reproduction all the same
            raise
        invocations = self._record_invocation()
        results['info'] = dict(train_dir=self.train_dir, eval_dir=self.eval_dir,
                               train_photos=len(self.data['train_files']),
                               holdout_photos=len(self.data['holdout_files']), eval_photos=len(self.eval_files),
                               holdout=[osp.basename(f) for f in self.data['holdout_files']],
                               wall_time_min=sum(i['minutes'] for i in invocations), invocations=invocations,
                               preset=self.preset)
        paths = write_report(self.out, results, self.preset, self.pairs, self.results_dirs)
        return results, paths

    def _run_stages(self):
        def data():
            with self._stage_output('data'):
                return prepare_data(osp.join(self.out, 'data'), self.train_files, self.eval_files, self.preset)

        self.data = self._timed('data', data)
        self.results_dirs = {run: osp.join(self.out, 'results', f'test_{run}') for run in runs.train_runs(self.preset)}
        if self.jobs > 1:
            Scheduler(self._stages(), self.jobs, self.out, self.progress, StageError, verbose=self.verbose).run()
        else:
            for run in runs.train_runs(self.preset):
                self._train(run)
            for run in runs.train_runs(self.preset):
                self._test(run)
        return self._timed('evaluate', self._evaluate)

    # ------------------------------------------------------------------ wall time over interrupted invocations
    def _invocations(self):
        path = osp.join(self.out, 'wall_time.json')
        if not osp.isfile(path):
            return []
        with open(path) as f:
            return json.load(f)['invocations']

    def _record_invocation(self, failed=False):
        """Write this invocation's minutes so far into OUT/wall_time.json and return every invocation's, so
        that a reproduction continued after an interruption reports the time of all its invocations. It is
        written after every stage and at the end, so a killed invocation counts up to its last finished
        stage. Only an invocation that trained, tested or failed counts (one that reused every stage to
        write the report again does not)."""
        invocations = self._invocations()
        worked = failed or any(stage.startswith(('train ', 'test ')) for stage in self.progress.ran)
        if not worked or not osp.isdir(self.out):
            return invocations
        entry = dict(minutes=(time.time() - self.progress.start) / 60, jobs=self.jobs)
        if self._entry is None:
            self._entry = len(invocations)
            invocations.append(entry)
        else:
            invocations[self._entry] = entry
        tmp = osp.join(self.out, 'wall_time.json.tmp')
        with open(tmp, 'w') as f:
            json.dump(dict(invocations=invocations), f, indent=1)
        os.replace(tmp, osp.join(self.out, 'wall_time.json'))
        return invocations

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
