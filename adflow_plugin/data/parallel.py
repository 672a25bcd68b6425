"""The worker processes of ``basicsr prepare-data``: a map over tasks that Ctrl-C and a killed parent end cleanly."""
import multiprocessing as mp
import os
import signal
import sys
import threading

import cv2

__all__ = ['imap']


def _worker_init(parent_pid):
    """Worker setup: Ctrl-C is the parent's job, die with the parent, one OpenCV thread."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith('linux'):
        try:
            import ctypes
            ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    try:  # the main process died before prctl took effect
        os.kill(parent_pid, 0)
    except OSError:
        os._exit(1)
    cv2.setNumThreads(1)


def imap(func, tasks, workers):
    """``func`` over ``tasks`` (results in completion order) in ``workers`` processes, or inline for one."""
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield func(t)
        return
    # forkserver, not fork: forking a process whose torch/OpenCV threads hold locks can deadlock the
    # children (it did, when prepare-data ran inside a process that had trained a network). Workers are
    # forked from a clean server process that has imported the tasks' module once; they die with it, and it
    # exits when the main process does.
    if 'forkserver' in mp.get_all_start_methods():
        ctx = mp.get_context('forkserver')
        ctx.set_forkserver_preload([func.__module__])
        # The server imports that module (seconds: torch) before it ignores Ctrl-C itself: started with SIGINT
        # ignored (which exec keeps), a Ctrl-C for the terminal's process group prints no traceback from it.
        from multiprocessing import forkserver
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN) if threading.current_thread() is \
            threading.main_thread() else None
        try:
            forkserver.ensure_running()
        finally:
            if handler is not None:
                signal.signal(signal.SIGINT, handler)
    else:
        ctx = mp.get_context('spawn')
    # A Ctrl-C while the workers are being forked is held until they exist, then acted on: interrupted
    # half-way, the server would fork a worker after this process had gone, which dies with a traceback.
    interrupted = []
    held = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    handlers = {sig: signal.signal(sig, lambda *_: interrupted.append(True)) for sig in held}
    try:
        pool = ctx.Pool(min(workers, len(tasks)), initializer=_worker_init, initargs=(os.getpid(), ))
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    try:
        if interrupted:
            raise KeyboardInterrupt
        yield from pool.imap_unordered(func, tasks)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
