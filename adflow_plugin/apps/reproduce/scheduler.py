"""Stages of ``basicsr reproduce`` side by side (``--jobs N``): each a ``basicsr`` child process.

The models of a reproduction are small, and on a CPU one training does not keep two cores busy with
useful work (PyTorch's intra-op threads help little at 32 features and batch 8); two trainings with
one thread each finish sooner than the same two one after the other with two threads each. A stage
starts when the stages it needs have finished, the one heading the longest remaining chain of
estimated work first; each child gets an equal share of the cores (``OMP_NUM_THREADS``).
"""
import os
import subprocess
import sys
import time


class Stage:
    """One ``basicsr`` command of the pipeline.

    ``prepare()`` returns the command's arguments (after ``basicsr``), or ``None`` when the stage finished
    before and is reused; ``finish()`` runs after the command succeeded. ``needs``: names of stages that
    must finish first. ``log``: where the child's output goes.
    """

    def __init__(self, name, needs, prepare, log, finish=None):
        self.name, self.needs, self.prepare, self.log, self.finish = name, set(needs), prepare, log, finish


def critical_paths(stages, estimates):
    """Estimated seconds from each stage's start to the end of the longest chain of stages waiting on it."""
    children = {s.name: [t.name for t in stages if s.name in t.needs] for s in stages}
    paths = {}

    def path(name):
        if name not in paths:
            paths[name] = estimates.get(name, 0.0) + max((path(c) for c in children[name]), default=0.0)
        return paths[name]

    for s in stages:
        path(s.name)
    return paths


def cpu_count():
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)


class Scheduler:
    """Runs ``stages`` as ``basicsr`` children, at most ``jobs`` at once, in the directory ``cwd``.

    ``progress`` (the pipeline's :class:`Progress`) is told when each stage begins and ends; its estimates
    (seconds per stage) set the order. A failed
    child stops the others and raises ``error(message)``; so does an interruption (after stopping them).
    """

    def __init__(self, stages, jobs, cwd, progress, error, verbose=False, poll=0.5):
        self.stages, self.jobs, self.cwd = list(stages), max(1, int(jobs)), cwd
        self.progress, self.error, self.verbose, self.poll = progress, error, verbose, poll
        self.priority = critical_paths(self.stages, progress.estimates)
        names = {s.name for s in self.stages}
        for s in self.stages:
            if not s.needs <= names:
                raise ValueError(f'stage {s.name!r} needs unknown stages {sorted(s.needs - names)}')

    def _threads(self, ready):
        return max(1, cpu_count() // max(1, min(self.jobs, ready)))

    def _launch(self, stage, argv, threads):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        log = None if self.verbose else open(stage.log, 'a')
        try:
            proc = subprocess.Popen([sys.executable, '-m', 'adflow_plugin.cli'] + argv, cwd=self.cwd, env=env,
                                    stdout=log, stderr=subprocess.STDOUT if log else None)
        except BaseException:
            if log:
                log.close()
            raise
        return proc, log

    def _stop(self, running):
        for proc, *_ in running.values():
            if proc.poll() is None:
                proc.terminate()  # a training continues from its last saved state (--auto_resume) next time
        deadline = time.time() + 30
        for proc, log, *_ in running.values():
            try:
                proc.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if log:
                log.close()
        running.clear()

    def run(self):
        pending = sorted(self.stages, key=lambda s: -self.priority[s.name])
        done, running = set(), {}  # name -> (process, log file, stage, started, argv)
        try:
            while pending or running:
                ready = [s for s in pending if s.needs <= done]
                for stage in ready:
                    if len(running) >= self.jobs:
                        break
                    pending.remove(stage)
                    argv = stage.prepare()
                    if argv is None:
                        self.progress.reused(stage.name)
                        done.add(stage.name)
                        continue
                    threads = self._threads(len(running) + len([s for s in pending if s.needs <= done]) + 1)
                    started = self.progress.begin(stage.name)
                    proc, log = self._launch(stage, argv, threads)
                    running[stage.name] = (proc, log, stage, started, argv)
                if not running:
                    if pending and not any(s.needs <= done for s in pending):
                        raise ValueError(f'stages wait on each other: {sorted(s.name for s in pending)}')
                    continue
                time.sleep(self.poll)
                for name, (proc, log, stage, started, argv) in list(running.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    del running[name]
                    if log:
                        log.close()
                    if code != 0:
                        raise self.error(f'stage "{name}" (basicsr {" ".join(argv)}) failed with '
                                         f'exit status {code}; see {stage.log}')
                    if stage.finish:
                        stage.finish()
                    self.progress.end(name, started)
                    done.add(name)
        finally:
            self._stop(running)
