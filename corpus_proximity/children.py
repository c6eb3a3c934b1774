"""Child processes end with their parent: joblib/loky workers and a local Ray.

:func:`watch_children` (called before a stage starts worker processes) does three things, once per
process:

* at exit (normal, an exception, or SIGTERM / SIGHUP, turned into ``SystemExit``), a local Ray this
  process started is shut down and every remaining descendant is terminated, then killed;
* it starts a watchdog (``python -m corpus_proximity.children PID``, in its own session, ignoring
  SIGINT) that snapshots the parent's descendants twice a second and, when the parent disappears
  without its exit handlers (``kill -9``, an OOM kill), kills the last snapshot: loky keeps idle
  workers for minutes and Ray's agents would otherwise outlive the run.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time

import psutil

_STARTED = False
_RAY_STARTED = False


def watch_children() -> None:
    """Make every child process this process starts from now on end with it (idempotent)."""
    global _STARTED
    if _STARTED:
        return
    _STARTED = True
    atexit.register(_end_children)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _exit_on_signal)
    subprocess.Popen([sys.executable, "-m", "corpus_proximity.children", str(os.getpid())],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True)


def ray_started() -> None:
    """Note that this process started a local Ray (shut down at exit)."""
    global _RAY_STARTED
    _RAY_STARTED = True


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _end_children() -> None:
    if _RAY_STARTED:
        try:
            import ray

            ray.shutdown()
        except Exception:
            pass
    me = psutil.Process()
    kill_all([p for p in me.children(recursive=True) if not _is_watchdog(p)])


def kill_all(procs: list[psutil.Process], grace_s: float = 3.0) -> None:
    """Terminate ``procs``, wait up to ``grace_s``, kill the rest."""
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def _is_watchdog(p: psutil.Process) -> bool:
    try:
        return "corpus_proximity.children" in " ".join(p.cmdline())
    except psutil.Error:
        return False


def watchdog(parent_pid: int, interval_s: float = 0.5) -> None:
    """Poll ``parent_pid``; when it is gone, kill the descendants it had at the last poll (the same
    processes: pid and start time match, so a reused pid is left alone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C of the terminal reaches the parent, not us
    try:
        parent = psutil.Process(parent_pid)
    except psutil.NoSuchProcess:
        return
    known: list[psutil.Process] = []
    while True:
        try:
            if not parent.is_running() or parent.status() == psutil.STATUS_ZOMBIE:
                break
            known = [p for p in parent.children(recursive=True) if p.pid != os.getpid()]
        except psutil.NoSuchProcess:
            break
        time.sleep(interval_s)
    kill_all([p for p in known if p.is_running()], grace_s=2.0)


if __name__ == "__main__":
    watchdog(int(sys.argv[1]))
