"""The training loop behind `launch/train.py`: schedule, checkpoints, resume, TensorBoard.

The run's flags live in `config`; the logdir (lock, run_config.json, checkpoints, resume)
in `rundir`; the strategies in `strategies`; the schedule's stages in `training`; the
graceful stop on SIGTERM / SIGINT in `preemption`, the memory estimate in `memory`.
"""

import contextlib
import dataclasses
import json
import os
import time

import tensorflow as tf

from tfp_iwae import data
from tfp_iwae import diagnostics
from tfp_iwae import evaluation
from tfp_iwae import memory
from tfp_iwae import preemption
from tfp_iwae import rundir
from tfp_iwae import strategies
from tfp_iwae import summaries
from tfp_iwae import training
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
    On SIGTERM / SIGINT it finishes the current step, writes a checkpoint and raises
    `preemption.Preempted` (re-running the same command resumes bit-exactly).
    """
    config.validate()
    _check_memory(config)
    with contextlib.ExitStack() as held:  # the logdir lock and the signal handlers
        try:
            return _train(config, log, held)
        except tf.errors.ResourceExhaustedError as e:
            raise TrainingError(
                f"out of memory ({str(e).strip().splitlines()[0][:200]}): lower "
                f"--num_samples (now {config.num_samples}) or --batch_size (now "
                f"{config.batch_size}). Completed checkpoints are intact.") from None


def _train(config, log, held):
    rundir.check_logdir(config)
    protocol = data.describe(config.dataset, config.binarization)
    train_x = data.load_array(config.dataset, "train", data_dir=config.data_dir,
                              download=config.download)
    valid_x = data.load_array(config.dataset, "validation", data_dir=config.data_dir,
                              download=config.download)
    if len(train_x) < config.batch_size:
        raise TrainingError(f"--batch_size={config.batch_size} exceeds the {len(train_x)} "
                            f"training images of {config.dataset}.")
    steps_per_epoch = len(train_x) // config.batch_size
    try:
        plan = training.stages(config.schedule, steps_per_epoch, config.learning_rate,
                               config.epochs, config.schedule_passes)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    total = plan[-1][1] if not config.max_steps else min(plan[-1][1], config.max_steps)

    strategy = strategies.make_strategy(config.strategy)
    chief = strategies.is_chief(strategy)
    if chief:  # workers of a multi-worker run share the chief's logdir
        held.enter_context(rundir.RunLock(config.logdir, on_stale=lambda m: log(f"note: {m}")))
    stop = held.enter_context(preemption.StopRequest(
        enabled=config.strategy != "multi_worker"))  # workers would have to agree on a step
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if config.batch_size % max(replicas, config.num_shards or 1):
        raise TrainingError(f"--batch_size={config.batch_size} must be divisible by the "
                            f"{max(replicas, config.num_shards)} replicas/shards "
                            f"(--strategy={config.strategy}, --num_shards={config.num_shards}).")
    if config.num_shards and config.num_shards % replicas:
        raise TrainingError(f"--num_shards={config.num_shards} must be a multiple of the "
                            f"{replicas} replicas of --strategy={config.strategy}.")
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = rundir.build_model(config, data_mean=train_x.mean(0))
        opt = training.make_optimizer(config.learning_rate)
    ckpt_dir = rundir.checkpoint_dir(config.logdir)
    if not chief:  # non-chief workers save (collectively) into a scratch directory
        ckpt_dir = os.path.join(config.logdir, "worker_scratch",
                                str(strategy.cluster_resolver.task_id))
    step = tf.Variable(0, dtype=tf.int64, name="step")
    parts = dict(model=model.checkpointable(), optimizer=opt, step=step)
    if fused_path(config):  # the data position is the step: no iterator to checkpoint
        images, dynamic = data.presented(config.dataset, train_x, config.binarization)
        run_steps = training.TrainLoop(
            model, opt, config.num_samples, images, batch_size=config.batch_size,
            seed=config.seed, estimator=config.objective, dynamic=dynamic,
            stages=[(first, lr) for first, _, lr in plan],
            max_steps_per_call=config.steps_per_call, jit_compile=config.xla,
            resident=images.nbytes <= RESIDENT_MAX_BYTES)
    else:  # a strategy or sharded sampling: one compiled step per call, tf.data batches
        step_fn = training.make_train_step(model, opt, config.num_samples,
                                           estimator=config.objective,
                                           jit_compile=config.xla,
                                           num_shards=config.num_shards or replicas,
                                           strategy=strategy)
        ds = data.load(config.dataset, "train", binarization=config.binarization,
                       batch_size=config.batch_size, data_dir=config.data_dir,
                       seed=config.seed, download=config.download)
        parts["iterator"] = iter(ds)
        run_steps = _per_step_calls(step_fn, parts["iterator"], opt, plan, config.seed)
    run_flags = tf.Variable(json.dumps(model_flags(config), sort_keys=True), name="run_flags")
    ckpt = tf.train.Checkpoint(run_flags=run_flags, **parts)
    manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=config.keep_checkpoints)
    if manager.checkpoints:
        rundir.restore_newest_readable(ckpt, manager, step, log, config,
                                 legacy=tf.train.Checkpoint(**parts))
    elif config.init_from:
        rundir.init_model_from(model, config.init_from, log)

    writer = tf.summary.create_file_writer(os.path.join(config.logdir, summaries.TRAIN))
    vwriter = tf.summary.create_file_writer(os.path.join(config.logdir, summaries.VALIDATION))
    if not chief:
        log = (lambda msg: None)  # noqa: E731
        writer = vwriter = tf.summary.create_noop_writer()
    else:
        summaries.write_hparams(config.logdir, dataclasses.asdict(config))
    log(f"run: {protocol}; {config.stochastic_layers} stochastic layer(s); "
        f"objective {config.objective}, k={config.num_samples}; batch {config.batch_size}; "
        f"{steps_per_epoch} steps/epoch; {total} steps; strategy {config.strategy} "
        f"({replicas} replica(s))")
    t_start, s_start = time.perf_counter(), int(step)
    t0, s0 = None, s_start
    metrics = {}
    diag_batch, samplers = None, None

    if chief:
        rundir.write_config(config.logdir, dataclasses.asdict(config))  # the run starts
    s = int(step)
    calls = _CallSizer(config.steps_per_call)
    while s < total:
        if stop.requested:  # SIGTERM / SIGINT: checkpoint this step, then stop
            _stop_on_signal(stop, s, manager, log)
        # A call ends at the next step that logs, validates, runs diagnostics or saves.
        end = min([total, s + calls.size] + [
            (s // every + 1) * every for every in (
                config.log_every, config.eval_every, config.checkpoint_every,
                config.diagnostics_every) if every])
        started = time.perf_counter()
        out = run_steps(s, end - s)
        applied = int(out["steps"])
        calls.record(applied, time.perf_counter() - started)
        step.assign(s + applied)
        if applied < end - s:  # steps s .. s+applied-1 were applied; the next was not
            raise TrainingError(
                f"non-finite loss or gradient at step {s + applied} (weights not "
                f"updated); last good checkpoint: {manager.latest_checkpoint or 'none'}.")
        if t0 is None:  # the first call compiles: the rate counts from its end
            t0, s0 = time.perf_counter(), end
        s = end
        stage, lr = training.stage_at(plan, s - 1)
        if config.log_every and (s % config.log_every == 0 or s == total):
            metrics = {k: float(v) for k, v in out.items() if k != "steps"}
            # Examples/s since the end of the first (compiling) call, validations included
            # (at the first call's own end: since the start, compilation included).
            since, first = (t0, s0) if s > s0 else (t_start, s_start)
            rate = (s - first) * config.batch_size / max(time.perf_counter() - since, 1e-9)
            eta = (total - s) * config.batch_size / max(rate, 1e-9)
            bpd = evaluation.bits_per_dim(-metrics["bound"], model.input_dim)
            summaries.write_training(writer, s, metrics, bits_per_dim=bpd, learning_rate=lr,
                                     examples_per_second=rate,
                                     num_samples=config.num_samples,
                                     objective=config.objective)
            log(f"step {s}/{total} epoch {s / steps_per_epoch:.2f} stage {stage} lr {lr:.2e} "
                f"train {config.objective} bound {metrics['bound']:.2f} nats "
                f"= {bpd:.4f} bits/dim "
                f"(L_k {metrics['iwae_bound']:.2f}, ELBO {metrics['elbo']:.2f}, "
                f"ESS {metrics['ess']:.2f}) {rate:.0f} ex/s ETA {eta:.0f}s [{protocol}]")
        if config.eval_every and (s % config.eval_every == 0 or s == total):
            _validate(model, config, valid_x, s, vwriter, log, protocol)
        if config.diagnostics_every and s % config.diagnostics_every == 0:
            diag_batch = diag_batch if diag_batch is not None else _diagnostics_batch(
                config, valid_x)
            samplers = samplers or {n: diagnostics.make_gradient_sampler(
                model, n, config.num_samples, jit_compile=config.xla)
                for n in filter(None, config.diagnostics_estimators.split(","))}
            _gradient_diagnostics(samplers, diag_batch, config, s, writer, log)
        if config.checkpoint_every and (s % config.checkpoint_every == 0 or s == total):
            manager.save(checkpoint_number=s)
    if manager.latest_checkpoint is None or int(step) != int(
            manager.latest_checkpoint.rsplit("-", 1)[-1]):
        manager.save(checkpoint_number=int(step))
    writer.flush()
    vwriter.flush()
    if chief and config.strategy == "multi_worker":
        # The chief leads the coordination service: let the other workers leave first,
        # so they do not see a vanished leader while shutting down.
        time.sleep(3.)
    return dict(step=int(step), checkpoint=manager.latest_checkpoint, **metrics)


# Training images up to this size live on the device (the fused loop's resident path);
# larger ones are gathered on the host per call, with the same numbers.
RESIDENT_MAX_BYTES = 2 << 30
# A call of many steps is cut to about this many seconds, so that SIGTERM/SIGINT (checked
# between calls) is answered quickly whatever a step costs.
CALL_SECONDS = 2.


def fused_path(config):
    """True when the run trains through `training.TrainLoop` (many steps per compiled call,
    the default): every run on one device with one shard. A tf.distribute strategy or
    --num_shards > 1 trains one compiled step per call from a tf.data pipeline."""
    return config.strategy == "default" and config.num_shards <= 1


class _CallSizer:
    """How many steps the next call runs: --steps_per_call at most, and about
    CALL_SECONDS of work once the step time is known. The numbers do not depend on it."""

    def __init__(self, most):
        self.most, self.size = most, min(most, 10)

    def record(self, steps, seconds):
        if steps and seconds > 0:
            self.size = int(max(1, min(self.most, CALL_SECONDS * steps / seconds)))


def _per_step_calls(step_fn, iterator, optimizer, plan, seed):
    """`run(first, count)` over one-step calls of `step_fn` with tf.data batches: the
    interface of `training.TrainLoop` for strategy runs. The steps run asynchronously and
    their finite flags are read at the end of the call: `steps` counts the steps before
    the first non-finite one (which `step_fn` did not apply; the training loop stops
    there)."""
    current = [None]

    def run(first, count):
        outs = []
        for i in range(count):
            s = first + i
            lr = training.stage_at(plan, s)[1]
            if lr != current[0]:
                optimizer.learning_rate.assign(lr)
                current[0] = lr
            outs.append(step_fn(next(iterator), training.step_seed(seed, s)))
        for i, out in enumerate(outs):
            if float(out["finite"]) != 1.:
                return dict(out, steps=i)
        return dict(outs[-1], steps=count)

    return run


def _stop_on_signal(stop, s, manager, log):
    """Checkpoints step `s` (unless the newest checkpoint is of it) and raises Preempted."""
    if manager.latest_checkpoint is None or int(
            manager.latest_checkpoint.rsplit("-", 1)[-1]) != s:
        manager.save(checkpoint_number=s)
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


def _validate(model, config, valid_x, s, writer, log, protocol):
    """Validation at step `s` (`evaluation.validate`) into TensorBoard and the log."""
    v = evaluation.validate(model, valid_x[:config.eval_images], config.num_samples,
                            config.eval_samples, binarization=config.binarization, seed=s,
                            pictures=bool(summaries.image_side(model.input_dim)))
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
