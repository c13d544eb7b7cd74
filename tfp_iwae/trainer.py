"""The trainer behind `tfp-iwae-train`: `train(RunConfig)` runs (or resumes) a run:
schedule, checkpoints, resume, TensorBoard.

The run's flags live in `config`; the logdir (lock, run_config.json, checkpoints, resume)
in `rundir`; the strategies in `strategies`; the optimizer and the schedule's stages in
`schedule`; the compiled step in `step` and the fused loop in `fused_loop`; the graceful
stop on SIGTERM / SIGINT / SIGHUP in `preemption` (a multi-worker run's in
`cluster_preemption`), the memory estimate in `memory`.

A run is built once (`_build_run`: a `_Run`), opens its logs (`_open_logs`), loops over
calls of many steps (`_run_loop`: `_call`, then `_report` and `_after_call` at the steps
that log, validate, run diagnostics or save) and finishes (`_finish`).
"""

import contextlib
import dataclasses
import errno
import functools
import json
import math
import os
import shutil
import time
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from tfp_iwae import cluster_preemption
from tfp_iwae import data
from tfp_iwae import diagnostics
from tfp_iwae import evaluation
from tfp_iwae import fused_loop
from tfp_iwae import memory
from tfp_iwae import preemption
from tfp_iwae import rundir
from tfp_iwae import schedule
from tfp_iwae import step as step_lib
from tfp_iwae import strategies
from tfp_iwae import summaries
from tfp_iwae.config import MODEL_FIELDS, RunConfig, TrainingError  # noqa: F401
from tfp_iwae.config import model_flags
from tfp_iwae.rundir import build_model, load_config  # noqa: F401  (re-exported)

__all__ = ["RunConfig", "train", "TrainingError", "MODEL_FIELDS", "build_model",
           "load_config"]


def _check_memory(config):
    """Refuses a k * batch that cannot fit in this machine's memory (CPU runs; on GPUs the
    allocation failure itself is reported, see `train`)."""
    if tf.config.list_physical_devices("GPU"):
        return
    problem = memory.check_fits(config.num_samples, config.batch_size,
                                config.stochastic_layers, xla=config.xla,
                                validation_images=config.eval_images if config.eval_every
                                else 0)
    if problem:
        raise TrainingError(problem)


def _log(msg):
    print(msg, flush=True)


def train(config, log=_log):
    """Trains (or resumes) a run; returns a dict of final metrics.

    Raises TrainingError, `rundir.RunDirError` or `data.DataError` with a message naming
    the flag for bad flags, an unusable or locked logdir, bad data or too little memory.
    On SIGTERM / SIGINT / SIGHUP it finishes the current step, writes a checkpoint and
    raises `preemption.Preempted` (re-running the same command resumes bit-exactly); in a
    multi-worker run a signal to any worker stops every worker at the same step
    (`cluster_preemption`).
    """
    config.validate()
    _check_memory(config)
    with contextlib.ExitStack() as held:  # the logdir lock and the signal handlers
        try:
            return _train(config, log, held)
        except (tf.errors.OpError, OSError) as e:
            if _disk_full(e):
                raise TrainingError(_disk_full_message(e, config.logdir)) from None
            if not isinstance(e, tf.errors.ResourceExhaustedError):
                raise
            raise TrainingError(
                f"out of memory ({str(e).strip().splitlines()[0][:200]}): lower "
                f"num_samples= (now {config.num_samples}) or batch_size= (now "
                f"{config.batch_size}). Completed checkpoints are intact.") from None


def _disk_full(error):
    """Whether `error` (an OSError or a TensorFlow OpError, which reports a full disk as
    ResourceExhaustedError or another status) says the file system is full."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(error).lower()
    return "no space left on device" in text or "disk quota exceeded" in text


def _disk_full_message(error, logdir):
    """The error of a write that failed on a full disk: the directory and its free space."""
    where = os.path.abspath(logdir)
    try:
        free = f"{shutil.disk_usage(where).free / 2 ** 20:,.1f} MiB free there now"
    except OSError:
        free = "free space unknown"
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else repr(error)
    return (f"disk full: a write under logdir={where!r} failed ({first}; {free}). Free "
            f"some space (or use a logdir= on another file system) and re-run the same "
            f"command to resume: completed checkpoints are intact.")


def _train(config, log, held):
    """`train` inside `held` (the ExitStack of the logdir lock and the signal handlers)."""
    run = _build_run(config, log, held)
    _open_logs(run)
    metrics, cluster = _run_loop(run, held)
    return _finish(run, metrics, cluster)


@dataclasses.dataclass(eq=False)
class _Run:
    """A run as built from its RunConfig: what the loop reads and updates."""
    config: RunConfig
    log: Callable[[str], None]  # a no-op on a multi-worker run's other workers
    changes: dict  # {flag: (before, after)}: the allowed flag changes of this resume
    protocol: str  # `data.describe`'s line of the dataset and binarisation
    valid_x: np.ndarray  # validation images [N, *event_shape], intensities in [0, 1]
    steps_per_epoch: int
    plan: list  # `schedule.stages`: [(first_step, last_step_exclusive, learning_rate)]
    total: int  # the step the run stops at (the plan's end or `max_steps`)
    strategy: Any  # a tf.distribute.Strategy, or None
    replicas: int
    chief: bool  # this process writes the logs and the checkpoints
    stop: preemption.StopRequest
    model: Any
    step: tf.Variable  # int64, the number of steps applied (checkpointed)
    run_steps: Callable  # run_steps(first, count) -> metrics and `steps` applied
    ckpt_dir: str
    manager: tf.train.CheckpointManager
    guard: "_DivergenceGuard"
    save: Callable[[int], None]  # save(s): the checkpoint of step s (`_save`)
    writer: Any = None  # the `train/` and `validation/` summary writers (`_open_logs`)
    vwriter: Any = None
    diag: Any = None  # (fixed batch, {estimator: gradient sampler}) of the diagnostics


def _build_run(config, log, held):
    """Checks the logdir and the flags, loads the data, takes the logdir's lock and the
    stop signals (into `held`), builds the model, Adam, the step runner and the
    checkpoint manager, and restores the newest checkpoint (or `init_from`)."""
    changes = rundir.check_logdir(config)  # allowed changes of training flags on resume
    protocol = data.describe(config.dataset, config.binarization)
    train_x, valid_x = _load_split(config, "train"), _load_split(config, "validation")
    steps_per_epoch, plan, total = _plan(config, len(train_x))
    strategy = strategies.make_strategy(config.strategy)
    chief = strategies.is_chief(strategy)
    if chief:  # workers of a multi-worker run share the chief's logdir
        held.enter_context(rundir.RunLock(config.logdir, on_stale=lambda m: log(f"note: {m}")))
        rundir.remove_stale_temp_checkpoints(config.logdir, log)
    stop = held.enter_context(preemption.StopRequest())
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    _check_shards(config, replicas)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = rundir.build_model(config, data_mean=train_x.mean(0))
        opt = schedule.make_optimizer(config.learning_rate)
    ckpt_dir = rundir.checkpoint_dir(config.logdir)
    if not chief:  # non-chief workers save (collectively) into a scratch directory
        ckpt_dir = os.path.join(config.logdir, "worker_scratch",
                                str(strategy.cluster_resolver.task_id))
    step = tf.Variable(0, dtype=tf.int64, name="step")
    parts = dict(model=model.checkpointable(), optimizer=opt, step=step)
    run_steps = _step_runner(config, model, opt, plan, train_x, strategy, replicas, parts)
    manager, guard = _restore(config, model, step, parts, ckpt_dir, log)
    for flag, (before, after) in changes.items():
        log(f"note: {flag}= changed from {before!r} to {after!r} at step {int(step)} "
            f"(allow_changed_flags=): recorded in run_config.json's history and HParams")
    return _Run(config=config, log=log, changes=changes, protocol=protocol, valid_x=valid_x,
                steps_per_epoch=steps_per_epoch, plan=plan, total=total, strategy=strategy,
                replicas=replicas, chief=chief, stop=stop, model=model, step=step,
                run_steps=run_steps, ckpt_dir=ckpt_dir, manager=manager, guard=guard,
                save=functools.partial(_save, manager, guard, config))


def _load_split(config, split):
    """A split of the run's dataset as float32 `[N, *event_shape]` intensities in [0, 1]."""
    return data.load_array(config.dataset, split, data_dir=config.data_dir,
                           download=config.download,
                           allow_nonstandard=config.allow_nonstandard_data)


def _plan(config, num_train):
    """(steps per epoch, `schedule.stages` plan, the step the run stops at) for
    `num_train` training images; TrainingError naming the flag if they do not fit."""
    if num_train < config.batch_size:
        raise TrainingError(f"batch_size={config.batch_size} exceeds the {num_train} "
                            f"training images of {config.dataset}.")
    steps_per_epoch = num_train // config.batch_size
    try:
        plan = schedule.stages(config.schedule, steps_per_epoch, config.learning_rate,
                               config.epochs, config.schedule_passes)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    total = plan[-1][1] if not config.max_steps else min(plan[-1][1], config.max_steps)
    return steps_per_epoch, plan, total


def _check_shards(config, replicas):
    """TrainingError unless the batch splits into the replicas and `num_shards` shards."""
    if config.batch_size % max(replicas, config.num_shards or 1):
        raise TrainingError(f"batch_size={config.batch_size} must be divisible by the "
                            f"{max(replicas, config.num_shards)} replicas/shards "
                            f"(strategy={config.strategy}, num_shards={config.num_shards}).")
    if config.num_shards and config.num_shards % replicas:
        raise TrainingError(f"num_shards={config.num_shards} must be a multiple of the "
                            f"{replicas} replicas of strategy={config.strategy}.")


def _step_runner(config, model, opt, plan, train_x, strategy, replicas, parts):
    """`run_steps(first, count)`: the fused loop (`fused_path`), else one compiled step per
    call on tf.data batches, whose iterator joins the checkpointed `parts`."""
    if fused_path(config):  # the data position is the step: no iterator to checkpoint
        images, dynamic = data.presented(config.dataset, train_x, config.binarization)
        return fused_loop.TrainLoop(
            model, opt, config.num_samples, images, batch_size=config.batch_size,
            seed=config.seed, estimator=config.objective, dynamic=dynamic,
            learning_rates=[(first, lr) for first, _, lr in plan],
            max_steps_per_call=config.steps_per_call, jit_compile=config.xla,
            resident=images.nbytes <= RESIDENT_MAX_BYTES)
    # A strategy or sharded sampling: one compiled step per call, tf.data batches.
    step_fn = step_lib.make_train_step(model, opt, config.num_samples,
                                       estimator=config.objective, jit_compile=config.xla,
                                       num_shards=config.num_shards or replicas,
                                       strategy=strategy)
    ds = data.load(config.dataset, "train", binarization=config.binarization,
                   batch_size=config.batch_size, data_dir=config.data_dir,
                   seed=config.seed, download=config.download,
                   allow_nonstandard=config.allow_nonstandard_data)
    parts["iterator"] = iter(ds)
    return _per_step_calls(step_fn, parts["iterator"], opt, plan, config.seed)


def _restore(config, model, step, parts, ckpt_dir, log):
    """(checkpoint manager, divergence guard) of the run's checkpoints, after restoring
    the newest readable one (or, with none, `init_from`'s weights)."""
    run_flags = tf.Variable(json.dumps(model_flags(config), sort_keys=True), name="run_flags")
    guard = _DivergenceGuard()  # the training bound at each save: see _save
    ckpt = tf.train.Checkpoint(run_flags=run_flags, train_bound=guard.saved, **parts)
    manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=config.keep_checkpoints)
    if manager.checkpoints:
        restored = rundir.restore_newest_readable(
            tf.train.Checkpoint(run_flags=run_flags, **parts), manager, step, log, config,
            legacy=tf.train.Checkpoint(**parts))
        guard.resume(rundir.checkpoint_value(restored, "train_bound"))
    elif config.init_from:
        rundir.init_model_from(model, config.init_from, log)
    return manager, guard


def _open_logs(run):
    """Opens the summary writers (no-ops, and a silent log, on a non-chief worker), writes
    the HParams session, logs the run's line and, on the chief, run_config.json (the run
    has started)."""
    config = run.config
    run.writer = tf.summary.create_file_writer(os.path.join(config.logdir, summaries.TRAIN))
    run.vwriter = tf.summary.create_file_writer(
        os.path.join(config.logdir, summaries.VALIDATION))
    if not run.chief:
        run.log = (lambda msg: None)  # noqa: E731
        run.writer = run.vwriter = tf.summary.create_noop_writer()
    else:
        summaries.write_hparams(config.logdir, dataclasses.asdict(config),
                                replace=bool(run.changes),
                                flag_changes=_history_text(config.logdir, run.changes,
                                                           int(run.step)))
    run.log(f"run: {run.protocol}; {config.stochastic_layers} stochastic layer(s); "
            f"objective {config.objective}, k={config.num_samples}; batch "
            f"{config.batch_size}; {run.steps_per_epoch} steps/epoch; {run.total} steps; "
            f"strategy {config.strategy} ({run.replicas} replica(s))")
    if run.chief:  # the run starts
        rundir.write_config(config.logdir, dataclasses.asdict(config), changes=run.changes,
                            step=int(run.step))


def _run_loop(run, held):
    """Runs the calls from the restored step to the end; returns (the metrics last
    logged, the multi-worker `ClusterStop` or None). A stop signal checkpoints the
    current step and raises `preemption.Preempted`."""
    config, speed, metrics = run.config, _TrainingSpeed(), {}
    s = int(run.step)
    # Multi-worker calls cover the same steps on every worker (not sized by time): the
    # workers name the step at which they all stop by counting calls.
    calls = _CallSizer(config.steps_per_call, by_time=config.strategy != "multi_worker")
    cluster = None
    if config.strategy == "multi_worker":  # a signal to any worker stops them all
        cluster = held.enter_context(cluster_preemption.ClusterStop(
            run.strategy, run.stop, functools.partial(_save_unless_saved, run.save,
                                                      run.manager),
            run.ckpt_dir, run.chief, run.log))
    while s < run.total:
        if cluster is not None:  # at the step the workers agreed: checkpoint, stop
            cluster.check(s)
        elif run.stop.requested:  # SIGTERM / SIGINT / SIGHUP: checkpoint this step, then stop
            _stop_on_signal(run.stop, s, run.save, run.manager, run.log)
        # A call ends at the next step that logs, validates, runs diagnostics or saves.
        end = min([run.total, s + calls.size] + [
            (s // every + 1) * every for every in (
                config.log_every, config.eval_every, config.checkpoint_every,
                config.diagnostics_every) if every])
        out = _call(run, s, end, calls, speed)
        s = end
        if config.log_every and (s % config.log_every == 0 or s == run.total):
            metrics = _report(run, s, out, speed)
        _after_call(run, s)
    return metrics, cluster


def _call(run, s, end, calls, speed):
    """Runs steps s, ..., end - 1 in one call (timed for `calls` and `speed`) and
    advances the step; TrainingError at a non-finite step (not applied). Returns the
    call's output (the metrics of its last step)."""
    started = time.perf_counter()
    out = run.run_steps(s, end - s)
    applied = int(out["steps"])
    seconds = time.perf_counter() - started
    calls.record(applied, seconds)
    speed.record(applied, seconds)
    run.step.assign(s + applied)
    if applied < end - s:  # steps s .. s+applied-1 were applied; the next was not
        raise TrainingError(
            f"non-finite loss or gradient at step {s + applied} (weights not "
            f"updated); last good checkpoint: {run.manager.latest_checkpoint or 'none'}.")
    run.guard.observe(float(out["bound"]))
    return out


def _report(run, s, out, speed):
    """The progress line and the `train/` summaries at step s (a call's end) from the
    call's output; returns its metrics as floats."""
    config = run.config
    stage, lr = schedule.stage_at(run.plan, s - 1)
    metrics = {k: float(v) for k, v in out.items() if k != "steps"}
    rate = speed.examples_per_second(config.batch_size)
    eta = (run.total - s) * config.batch_size / max(rate, 1e-9)
    bpd = evaluation.bits_per_dim(-metrics["bound"], run.model.input_dim)
    summaries.write_training(run.writer, s, metrics, bits_per_dim=bpd, learning_rate=lr,
                             examples_per_second=rate, num_samples=config.num_samples,
                             objective=config.objective)
    run.log(f"step {s}/{run.total} epoch {s / run.steps_per_epoch:.2f} stage {stage} lr "
            f"{lr:.2e} train {config.objective} bound {metrics['bound']:.2f} nats "
            f"= {bpd:.4f} bits/dim "
            f"(L_k {metrics['iwae_bound']:.2f}, ELBO {metrics['elbo']:.2f}, "
            f"ESS {metrics['ess']:.2f}) {rate:.0f} ex/s ETA {eta:.0f}s [{run.protocol}]")
    return metrics


def _after_call(run, s):
    """Validation, gradient diagnostics and the checkpoint due at step s (a call's end)."""
    config = run.config
    if config.eval_every and (s % config.eval_every == 0 or s == run.total):
        _validate(run.model, config, run.valid_x, s, run.vwriter, run.log, run.protocol,
                  should_stop=lambda: run.stop.requested is not None)
    if config.diagnostics_every and s % config.diagnostics_every == 0:
        if run.diag is None:  # made at the first diagnostics step
            run.diag = (_diagnostics_batch(config, run.valid_x), {
                n: diagnostics.make_gradient_sampler(run.model, n, config.num_samples,
                                                     jit_compile=config.xla)
                for n in filter(None, config.diagnostics_estimators.split(","))})
        _gradient_diagnostics(run.diag[1], run.diag[0], config, s, run.writer, run.log)
    if config.checkpoint_every and (s % config.checkpoint_every == 0 or s == run.total):
        run.save(s)


def _finish(run, metrics, cluster):
    """Saves the last step unless its checkpoint exists, flushes the summaries, lets a
    multi-worker run's workers leave; returns `train`'s result."""
    _save_unless_saved(run.save, run.manager, int(run.step))
    run.writer.flush()
    run.vwriter.flush()
    if cluster is not None:
        cluster.close()  # its watcher threads, before the chief waits
    if run.chief and run.config.strategy == "multi_worker":
        # The chief leads the coordination service: let the other workers leave first,
        # so they do not see a vanished leader while shutting down.
        time.sleep(cluster_preemption.LEADER_LEAVES_LAST_SECONDS)
    return dict(step=int(run.step), checkpoint=run.manager.latest_checkpoint, **metrics)

# Training images up to this size live on the device (the fused loop's resident path);
# larger ones are gathered on the host per call, with the same numbers.
RESIDENT_MAX_BYTES = 2 << 30
# A call of many steps is cut to about this many seconds, so that SIGTERM/SIGINT (checked
# between calls) is answered quickly whatever a step costs.
CALL_SECONDS = 2.


def fused_path(config):
    """True when the run trains through `fused_loop.TrainLoop` (many steps per compiled
    call, the default): every run on one device with one shard. A tf.distribute strategy
    or `num_shards` > 1 trains one compiled step per call from a tf.data pipeline."""
    return config.strategy == "default" and config.num_shards <= 1


class _CallSizer:
    """How many steps the next call runs: `steps_per_call` at most, and about
    CALL_SECONDS of work once the step time is known (unless `by_time` is false: then
    always min(`steps_per_call`, 10)). The numbers do not depend on it."""

    def __init__(self, most, by_time=True):
        self.most, self.size, self.by_time = most, min(most, 10), by_time

    def record(self, steps, seconds):
        if self.by_time and steps and seconds > 0:
            self.size = int(max(1, min(self.most, CALL_SECONDS * steps / seconds)))


class _TrainingSpeed:
    """Examples/s of the training calls alone: validation, diagnostics and checkpoints
    are not counted, nor the first call (it compiles) unless it is the only one yet."""

    def __init__(self):
        self.first = None  # (steps, seconds) of the first call
        self.steps, self.seconds = 0, 0.

    def record(self, steps, seconds):
        if self.first is None:
            self.first = (steps, seconds)
        else:
            self.steps += steps
            self.seconds += seconds

    def examples_per_second(self, batch_size):
        steps, seconds = (self.steps, self.seconds) if self.steps else (self.first or (0, 0.))
        return steps * batch_size / max(seconds, 1e-9)


# A checkpoint is not written when the training bound (mean over the calls since the last
# save) fell below the one at the last save by more than max(DIVERGENCE_NATS,
# DIVERGENCE_FRACTION * |that bound|), or is not finite: the run stops instead, so that a
# diverging run (e.g. resumed with a far larger `learning_rate`) never rotates the last
# good checkpoints out. Ordinary training improves the bound between saves; one batch's
# bound varies by a few nats.
DIVERGENCE_NATS = 50.
DIVERGENCE_FRACTION = 0.5


class _DivergenceGuard:
    """The training bound at the last save (`saved`, a checkpointed variable; NaN when
    unknown) and the bounds of the calls since then."""

    def __init__(self):
        self.saved = tf.Variable(float("nan"), dtype=tf.float64, name="train_bound",
                                 trainable=False)
        self.recent, self.first = [], None

    def resume(self, value):
        """After a restore: the bound stored with the checkpoint (None: an older one)."""
        if value is not None:
            self.saved.assign(float(value))

    def observe(self, bound):
        """The training bound (nats, batch mean) of a call's last step."""
        self.first = bound if self.first is None else self.first
        self.recent = (self.recent + [bound])[-16:]

    def reference(self):
        """The bound to compare with: at the last save, else the run's first call's."""
        saved = float(self.saved.numpy())
        return saved if math.isfinite(saved) else self.first

    def diverged(self):
        """(now, reference) if the bound since the last save diverged, else None."""
        if not self.recent:
            return None
        now, ref = sum(self.recent) / len(self.recent), self.reference()
        if math.isfinite(now) and (ref is None or now >= ref - max(
                DIVERGENCE_NATS, DIVERGENCE_FRACTION * abs(ref))):
            return None
        return now, ref

    def saving(self):
        """Records the current bound as the one of the checkpoint being written."""
        if self.recent:
            self.saved.assign(sum(self.recent) / len(self.recent))
            self.recent = []


def _save(manager, guard, config, s):
    """Writes the checkpoint of step `s`, unless training diverged since the last one
    (`_DivergenceGuard`): then TrainingError, and the last good checkpoint stays."""
    bad = guard.diverged()
    if bad is not None:
        now, ref = bad
        changed = config.changeable_flags()
        raise TrainingError(
            f"training diverged before step {s}: the training bound is {now:.4g} nats "
            f"(mean of the last {len(guard.recent)} calls) against {ref:.2f} at the last "
            f"checkpoint{'' if manager.latest_checkpoint else ' (or the start)'}. The "
            f"checkpoint of step {s} was not written: the last good one stays "
            f"({manager.latest_checkpoint or 'none yet'}). Lower learning_rate= (now "
            f"{config.learning_rate:g})" + (
                f"; this run was resumed with allow_changed_flags={','.join(changed)}"
                if changed else "") + ".")
    guard.saving()
    manager.save(checkpoint_number=s)


def _history_text(logdir, changes, step):
    """The run's flag changes on resume as one line for HParams ('' if none): those of
    run_config.json's history and `changes`, made now at `step`."""
    history = (rundir.read_config(logdir) or {}).get(rundir.HISTORY_KEY, [])
    items = [(h["step"], h["changed"]) for h in history] + (
        [(step, {f: list(v) for f, v in changes.items()})] if changes else [])
    return "; ".join(f"step {at}: " + ", ".join(f"{f} {a!r} -> {b!r}"
                                              for f, (a, b) in changed.items())
                     for at, changed in items)


def _per_step_calls(step_fn, iterator, optimizer, plan, seed):
    """`run(first, count)` over one-step calls of `step_fn` with tf.data batches: the
    interface of `fused_loop.TrainLoop` for strategy runs. The steps run asynchronously
    and their finite flags are read at the end of the call: `steps` counts the steps
    before the first non-finite one (which `step_fn` did not apply; the training loop
    stops there)."""
    current = [None]

    def run(first, count):
        outs = []
        for i in range(count):
            s = first + i
            lr = schedule.stage_at(plan, s)[1]
            if lr != current[0]:
                optimizer.learning_rate.assign(lr)
                current[0] = lr
            outs.append(step_fn(next(iterator), step_lib.step_seed(seed, s)))
        for i, out in enumerate(outs):
            if float(out["finite"]) != 1.:
                return dict(out, steps=i)
        return dict(outs[-1], steps=count)

    return run


def _save_unless_saved(save, manager, s):
    """`save(s)` unless the newest checkpoint is of step `s`; returns the newest path."""
    if manager.latest_checkpoint is None or int(
            manager.latest_checkpoint.rsplit("-", 1)[-1]) != s:
        save(s)
    return manager.latest_checkpoint


def _stop_on_signal(stop, s, save, manager, log):
    """Checkpoints step `s` (unless the newest checkpoint is of it) and raises Preempted."""
    _save_unless_saved(save, manager, s)
    log(f"received {stop.name} at step {s}: saved checkpoint {manager.latest_checkpoint}; "
        f"stopping (re-run the same command to resume)")
    raise preemption.Preempted(stop.requested, s, manager.latest_checkpoint)


def _diagnostics_batch(config, x):
    """The fixed batch of the gradient diagnostics: 100 images as the model sees them."""
    return tf.constant(data.evaluation_pixels(x[:100], config.binarization, 4321))


def _gradient_diagnostics(samplers, x, config, s, writer, log):
    """Encoder-gradient SNR and variance per estimator on a fixed batch (repeated draws)."""
    parts, stats = [], {}
    for name, sampler in samplers.items():
        st = stats[name] = diagnostics.gradient_statistics(sampler, x,
                                                           config.diagnostics_repeats, seed=s)
        parts.append(f"{name} SNR {st['snr']:.3f} var {st['variance']:.3g}")
    summaries.write_gradient_diagnostics(writer, s, stats)
    log(f"diagnostics step {s} (encoder gradient, {config.diagnostics_repeats} draws on a "
        f"fixed batch): " + "; ".join(parts))


def _validate(model, config, valid_x, s, writer, log, protocol, should_stop=None):
    """Validation at step `s` (`evaluation.validate`) into TensorBoard and the log; left
    unfinished (nothing written) when `should_stop()` becomes true (a stop signal)."""
    v = evaluation.validate(model, valid_x[:config.eval_images], config.num_samples,
                            config.eval_samples, binarization=config.binarization, seed=s,
                            pictures=bool(summaries.image_side(model.input_dim)),
                            should_stop=should_stop)
    if v is None:
        log(f"validation step {s}: stopped unfinished (stop signal)")
        return
    summaries.write_validation(
        writer, s, l_k=v["l_k"], log_likelihood=v["log_likelihood"],
        bits_per_dim=v["bits_per_dim"], elbo=v["elbo"], ess=v["ess"],
        active_units=v["active_units"], log_weights=v["log_weights"],
        num_samples=config.num_samples, eval_samples=config.eval_samples,
        num_images=v["num_images"])
    if v["samples"] is not None:
        summaries.write_images(writer, s, inputs=v["inputs"],
                               reconstructions=v["reconstructions"], samples=v["samples"])
    log(f"validation step {s}: L_{config.num_samples} {v['l_k']:.2f} nats, "
        f"L_{config.eval_samples} {v['log_likelihood']:.2f} nats "
        f"({v['bits_per_dim']:.4f} bits/dim), "
        f"active units {v['active_units']} on {v['num_images']} images [{protocol}, "
        f"validation {evaluation.validation_binarization(config.binarization)}]")
