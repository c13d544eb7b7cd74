"""Graceful stop on SIGTERM / SIGINT / SIGHUP: finish the current step, checkpoint, exit.

Cluster schedulers preempt a job with SIGTERM (then SIGKILL after a grace period),
Ctrl-C sends SIGINT, and a closed terminal or ssh connection sends SIGHUP. Inside a
`StopRequest` block those signals only record a request; the training loop checks
`requested` between steps (and between validation batches), writes a checkpoint and
raises `Preempted`, whose `exit_code` is the shell's 128 + signal number (143 for
SIGTERM, 130 for SIGINT, 129 for SIGHUP). A second signal while the first is pending
stops the process at once the way it would have without the block (no checkpoint; the
last completed one stays readable).

A multi-worker run must stop every worker at the same step: see `cluster_preemption`.
"""

import signal
import threading

from tfp_iwae import errors

__all__ = ["StopRequest", "Preempted"]

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Preempted(errors.Error):
    """Training stopped on a signal after writing a checkpoint (the run can resume)."""

    def __init__(self, signum, step, checkpoint):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; "
                         f"checkpoint {checkpoint}")

    @property
    def exit_code(self):
        return 128 + self.signum


class StopRequest:
    """Records SIGTERM / SIGINT / SIGHUP instead of dying, while the `with` block runs.

    `requested` is None, or the number of the first signal received. Handlers can only be
    installed from the main thread; elsewhere (or with `enabled=False`) the block changes
    nothing and `requested` stays None; a signal set to be ignored stays ignored. The
    previous handlers come back on leaving.
    """

    def __init__(self, enabled=True, signals=SIGNALS):
        self.requested = None
        self._signals = tuple(signals) if enabled else ()
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self._signals:
                if signal.getsignal(s) is not signal.SIG_IGN:  # an ignored signal stays so
                    self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        self._restore()

    def release(self):
        """Gives the signals back to the previous handlers before the block ends."""
        self._restore()

    def _restore(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested is None:
            self.requested = signum
            return
        # Asked twice: stop now, the way the process would have without us.
        self._restore()
        signal.raise_signal(signum)

    @property
    def name(self):
        return signal.Signals(self.requested).name if self.requested else None

