"""The lock of a run directory (`logdir`): one training process owns a logdir at a time.

The process holds `train.lock`, a file created atomically (`O_CREAT | O_EXCL`) that names
its host and PID, and keeps an exclusive `fcntl.flock` on it while it runs. A second
process is refused with the holder's host and PID. A lock left behind by a process that
no longer runs (killed with SIGKILL, machine crash) is stale and removed on the next
start: on the same host, a lock is stale when its PID is not alive or nobody holds its
`flock` (the kernel drops a flock when its process dies, so a reused PID does not keep a
dead run's lock alive). A lock from another host cannot be checked and is never removed
automatically.

`rundir` re-exports these names.
"""

import errno
import fcntl
import json
import os
import socket
import time

from tfp_iwae import errors

__all__ = ["RunDirError", "LOCK_FILE", "RunLock"]

LOCK_FILE = "train.lock"


class RunDirError(errors.Error, RuntimeError):
    """The logdir cannot be used (locked, unwritable, unreadable or mismatched config)."""


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _read_holder(path):
    """The lock file's {"host", "pid", ...}, or None if unreadable or not yet written."""
    try:
        with open(path) as f:
            holder = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
        return None
    return holder


def _describe(holder):
    if holder is None:
        return "an unknown process (the lock file is empty or unreadable)"
    return (f"PID {holder['pid']} on host {holder.get('host')!r}"
            + (f", started {holder['started']}" if holder.get("started") else ""))


class RunLock:
    """Exclusive ownership of a logdir by this process (a context manager).

    `acquire()` creates `<logdir>/train.lock` holding this host and PID, or raises
    RunDirError naming the process that holds it; a stale lock (see the module docstring)
    is removed first and `on_stale` is called with a one-line description of it.
    `release()` (also on leaving the `with` block, on errors and on exceptions raised by
    signal handlers) removes the file. Only the chief of a multi-worker run takes it.
    """

    def __init__(self, logdir, on_stale=None, stale_grace_seconds=10.):
        self.path = os.path.join(logdir, LOCK_FILE)
        self._on_stale = on_stale or (lambda msg: None)
        self._grace = stale_grace_seconds
        self._fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    @property
    def held(self):
        return self._fd is not None

    def acquire(self):
        host = socket.gethostname()
        for _ in range(3):  # create; or remove a stale lock and create again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._remove_if_stale(host)
                continue
            except OSError as e:
                reason = ("not writable" if e.errno in (errno.EACCES, errno.EPERM,
                                                         errno.EROFS) else "not usable")
                raise RunDirError(f"logdir={os.path.dirname(self.path)!r} is {reason}: "
                                  f"cannot create the lock file {self.path!r} "
                                  f"({e.strerror or e}).") from None
            # Locked before its content is written: whoever reads a complete holder from
            # the file finds the flock held for as long as the holder lives. (Blocking: a
            # concurrent stale check holds it for an instant.)
            _flock(fd, blocking=True)
            try:
                os.write(fd, json.dumps({"host": host, "pid": os.getpid(), "started":
                                         time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
                os.fsync(fd)
            except OSError as e:
                _unlink_same_file(self.path, fd)
                os.close(fd)
                raise RunDirError(f"`logdir=`: cannot write the lock file {self.path!r} "
                                  f"({e.strerror or e}).") from None
            self._fd = fd
            return self
        raise RunDirError(f"`logdir=`: could not take the lock {self.path!r} (another process "
                          f"keeps creating it).")

    def _remove_if_stale(self, host):
        """Removes the existing lock file if its holder is gone, else raises RunDirError."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return  # released meanwhile: try again
        try:
            holder = _read_holder(self.path)
            free = _flock(fd, blocking=False)  # True: nobody holds it; None: no flock here
            same_host = holder is not None and holder.get("host") == host
            if holder is None:
                # Empty: being written right now, or its writer died at once; only the
                # latter stays empty (and unlocked) past the grace period.
                stale = free is not False and time.time() - os.fstat(fd).st_mtime > self._grace
            elif free is None:
                stale = same_host and not _pid_alive(holder["pid"])
            else:
                stale = same_host and free
            if not stale:
                if holder is None:
                    hint = (f"a process is creating it, or died doing so (then it is stale "
                            f"once {self._grace:.0f} s old)")
                elif same_host:
                    hint = "stop it first, or use another logdir="
                else:
                    hint = ("if that process is gone (e.g. its machine crashed), delete the "
                            "lock file")
                raise RunDirError(
                    f"logdir={os.path.dirname(self.path)!r} is in use by "
                    f"{_describe(holder)} (lock file {self.path!r}); {hint}.")
            if _unlink_same_file(self.path, fd):
                gone = holder is None or not _pid_alive(holder["pid"])
                self._on_stale(f"removed the stale lock of {_describe(holder)}, which "
                               f"{'no longer runs' if gone else 'no longer holds it'}")
        finally:
            os.close(fd)  # also drops our flock on the old file

    def release(self):
        """Removes the lock file (if it is still ours) and drops the flock."""
        if self._fd is None:
            return
        try:
            _unlink_same_file(self.path, self._fd)
        finally:
            os.close(self._fd)
            self._fd = None


def _flock(fd, blocking):
    """Takes an exclusive flock: True if taken, False if another holds it, None where the
    filesystem has no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False
    except OSError:
        return None


def _unlink_same_file(path, fd):
    """Unlinks `path` only if it still names the file open as `fd`; True if it did."""
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            os.unlink(path)
            return True
    except FileNotFoundError:
        pass
    return False
