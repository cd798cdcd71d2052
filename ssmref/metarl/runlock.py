"""One writer per run directory: an advisory lock on ``RUN_DIR/run.lock``.

``train``, ``train --resume`` and ``evaluate`` (unless ``--no-write``) hold an exclusive
``fcntl.flock`` on ``run.lock`` for as long as they run; a second writer refuses at once with a
``RunError`` naming the holder (its pid, command and start time, which the holder writes into the
file).  (A plain ``evaluate`` of a run that another process holds does not write: it reports the
result and leaves the run's files to their writer; with ``--out-name`` it refuses.)  Two ``train --out X`` started together, or two ``--resume`` of one run, can therefore
never mix their files: one runs, the other exits with status 2 before writing anything.

The operating system releases the lock when the holder's file descriptor closes: at the end of the
command, and also when the process crashes or is killed, so a lock is never stale (the file itself
stays, unlocked, with the last holder's line; deleting it is safe when no run is going).  Readers
take no lock: ``evaluate --no-write`` and loading a checkpoint work while a run is being written
(every file is replaced atomically).  Within one thread the lock is re-entrant, so ``train``'s
final evaluation runs under ``train``'s own lock; two threads of one process exclude each other
as two processes do (``flock`` locks belong to open files, and each takes its own).  (``flock`` is advisory and local: a writer that
ignores it, or a run directory on a network file system without ``flock``, is not protected.)
"""

import fcntl
import os
import stat
import threading
import time
from contextlib import contextmanager

from ssmref.metarl.rundir import RunError

LOCK_NAME = "run.lock"

_local = threading.local()      # .held: real path of a run directory -> lock depth, per thread


class RunLocked(RunError):
    """Another writer holds the run's write lock; ``holder`` is its line (pid, command, start)."""

    def __init__(self, message, holder):
        super().__init__(message)
        self.holder = holder


def _holder(fd):
    # the holder's line, at most 200 characters of it (the file is the holder's, not trusted)
    lines = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip().splitlines()
    return lines[0][:200] if lines else "a process that has not written its name yet"


@contextmanager
def run_lock(run_dir, command):
    """Hold the write lock of ``run_dir`` (an existing directory) for the ``with`` block, as
    ``command`` (e.g. ``"train --resume"``); :class:`RunLocked` naming the holder if another
    process (or thread) holds it.  ``run.lock`` must be a regular file or missing (a link or a
    FIFO is refused)."""
    key = os.path.realpath(run_dir)
    held = _local.__dict__.setdefault("held", {})
    if key in held:                                     # re-entrant within one thread
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    path = os.path.join(run_dir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     0o644)
    except OSError as e:
        raise RunError(f"{path}: cannot open the run's lock file ({e.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RunError(f"{path} is not a regular file; remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            raise RunLocked(f"{run_dir} is being written by another writer ({holder}); wait for "
                            f"it to end, or read the run without writing (evaluate --no-write)",
                            holder) from None
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = f"pid {os.getpid()}, {command}, started {started}\n".encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, line, 0)
        held[key] = 1
        try:
            yield
        finally:
            del held[key]
    finally:
        os.close(fd)                                    # releases the lock
