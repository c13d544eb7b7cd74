"""A stop signal in a multi-worker run: every worker stops at the same step, saves, exits.

A single-process run answers SIGTERM / SIGINT / SIGHUP on its own (`preemption`). The
workers of a `MultiWorkerMirroredStrategy` run must first agree on the step at which
they all save: a worker that stopped alone would leave the others waiting in their next
all-reduce, and their checkpoints would be of different steps. That agreement is
TensorFlow's `tf.distribute.experimental.PreemptionCheckpointHandler`,
through the cluster's coordination service:

- each worker's signals are recorded by its `preemption.StopRequest`, which the handler
  polls once a second (its `termination_watcher_fn`); the first worker to see one writes
  "signal number, worker" into the coordination service's key-value store;
- the handler of that worker names the step (its count of `check` calls, plus one) to
  every worker and waits until each has acknowledged it;
- at that step every worker calls the loop's save (the chief into the run's checkpoints,
  the others into their scratch directories), the chief logs
  `received SIGTERM on worker N at step S: saved checkpoint ...; stopping (re-run the same
  commands to resume)`, and every worker raises `preemption.Preempted` with the first
  signal: the launchers exit with 128 + its number (143 for SIGTERM) on every worker.

Re-running the same commands resumes from that checkpoint.
"""

import signal
import time

import tensorflow as tf
from tensorflow.python.eager import context
from tensorflow.python.util import deprecation

from tfp_iwae import preemption

__all__ = ["ClusterStop", "LEADER_LEAVES_LAST_SECONDS"]

# The chief of a multi-worker run leads the coordination service: on leaving, it waits
# this long so that the other workers leave first and do not see a vanished leader.
LEADER_LEAVES_LAST_SECONDS = 3.

# The coordination service's key of the first stop signal: "<signal number> <worker>".
SIGNAL_KEY = "tfp_iwae_stop_signal"


class ClusterStop:
    """Stops every worker of a multi-worker run at the same step on a signal to any.

    `stop` is this worker's (enabled) `preemption.StopRequest`; `save(s)` writes the
    checkpoint of step `s` and returns its path (the loop's save, with its divergence
    guard, or the newest checkpoint when it is of `s` already); `directory` is this
    worker's checkpoint directory; `log` prints (a no-op on the other workers).

    The training loop calls `check(s)` between its calls of training steps. The handler
    names the step by counting those calls, so the calls must cover the same steps on
    every worker: in a multi-worker run the loop does not size them by time. The
    workers' steps run in lock-step (every step all-reduces), so no worker is more than
    one call ahead when the step is named, as the handler requires.
    """

    def __init__(self, strategy, stop, save, directory, chief, log):
        self._stop, self._save, self._chief, self._log = stop, save, chief, log
        resolver = strategy.cluster_resolver
        self._me = f"{resolver.task_type} {resolver.task_id}"
        self._step = self._checkpoint = None
        # The handler is given a manager that restores nothing: the loop has restored
        # already, with its checks (model flags, unreadable checkpoints skipped), and
        # the handler's own restore would read the newest checkpoint unchecked. Its count
        # of calls starts from 0 on every worker, which is all the agreement needs.
        # Its save is `save_fn`, the loop's own: the divergence guard still applies (a
        # diverged run raises TrainingError on every worker, the training bound being
        # the all-reduced one, and writes nothing).
        self._handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            resolver, _NoRestoreManager(tf.train.Checkpoint(), directory, max_to_keep=None),
            termination_config=tf.distribute.experimental.TerminationConfig(
                termination_watcher_fn=self._signalled, exit_fn=self._exit,
                grace_period=0, save_fn=self._save_step))
        # On a Google Cloud CPU or TPU VM TensorFlow's handler does nothing and starts no
        # watcher: a signal then ends the run as before (the last checkpoint stays).
        self.active = getattr(self._handler, "_poll_termination_signal_thread",
                              None) is not None
        if not self.active:
            stop.release()
            log("note: TensorFlow's PreemptionCheckpointHandler is inactive on this "
                "platform: a stop signal ends this multi-worker run without a checkpoint")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Stops the handler's watcher threads (TensorFlow does it in the handler's
        `__del__`, which may come late or not at all; after a stop it did already)."""
        handler, self._handler = self._handler, None
        if handler is not None:
            handler.__del__()

    def check(self, s):
        """Between calls, at step `s`: at the agreed step, saves and raises `Preempted`."""
        if self._handler is not None and self.active:
            with deprecation.silence():  # the handler reads its own deprecated counter
                self._handler.save_checkpoint_if_preempted(s)

    def _signalled(self):
        """The handler's termination watcher: whether this worker received a signal."""
        signum = self._stop.requested
        if signum is None:
            return False
        try:  # the first worker's signal is the run's
            context.context().set_config_key_value(SIGNAL_KEY, f"{signum} {self._me}")
        except tf.errors.AlreadyExistsError:
            pass
        return True

    def _save_step(self, s):
        self._step = s
        self._checkpoint = self._save(s)

    def _exit(self):
        """The handler's exit_fn, on every worker after the save: raises `Preempted`
        with the first signal (written before any step was named, so present)."""
        signum, worker = context.context().get_config_key_value(SIGNAL_KEY).split(" ", 1)
        signum = int(signum)
        self._log(f"received {signal.Signals(signum).name} on {worker} at step {self._step}: "
                  f"saved checkpoint {self._checkpoint}; stopping (re-run the same "
                  f"commands to resume)")
        if self._chief:
            time.sleep(LEADER_LEAVES_LAST_SECONDS)
        raise preemption.Preempted(signum, self._step, self._checkpoint)


class _NoRestoreManager(tf.train.CheckpointManager):
    """The manager `PreemptionCheckpointHandler` holds: the worker's checkpoint directory,
    but no restore (the training loop restored) and no save (the handler's `save_fn`)."""

    def restore_or_initialize(self):
        return None

    def save(self, *args, **kwargs):
        raise NotImplementedError("the handler saves through TerminationConfig.save_fn")
