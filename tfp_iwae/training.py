"""The compiled training step, the optimizer and the paper's learning-rate schedule."""

import math

import keras
import numpy as np
import tensorflow as tf

from tfp_iwae import data
from tfp_iwae import estimators
from tfp_iwae import latent_model
from tfp_iwae import objectives
from tfp_iwae import seeds

__all__ = ["make_optimizer", "make_train_step", "paper_schedule", "PAPER_ADAM_EPSILON",
           "SCHEDULES", "PAPER_PASSES", "stages", "stage_at", "TrainLoop", "step_metrics",
           "step_seed"]

PAPER_ADAM_EPSILON = 1e-4
# Learning-rate schedules of a run (`--schedule`): see `stages`.
SCHEDULES = ("paper", "constant")


def _checked_real(value, name, expected, ok):
    """float(value) if it is a real number with ok(value), else ValueError naming `name`."""
    if isinstance(value, bool):
        raise ValueError(f"`{name}` must be {expected}, got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be {expected}, got {value!r}.") from None
    if not (math.isfinite(number) and ok(number)):
        raise ValueError(f"`{name}` must be {expected}, got {number!r}.")
    return number


def make_optimizer(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=PAPER_ADAM_EPSILON):
    """Adam with the paper's epsilon = 1e-4 (learning rate is a variable, set per stage).

    Args:
      learning_rate: a finite number > 0, or a Keras `LearningRateSchedule` (or callable)
        passed to Adam as it is.
      beta_1, beta_2: Adam's moment decay rates, finite, in [0, 1).
      epsilon: Adam's denominator offset, finite, > 0.

    Raises:
      ValueError: naming the argument, for a non-number, NaN, inf or a value outside
        its range (e.g. `make_optimizer(-1)` or `make_optimizer(float("nan"))`).
    """
    if not (isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule)
            or callable(learning_rate)):
        learning_rate = _checked_real(learning_rate, "learning_rate",
                                      "a finite number > 0", lambda v: v > 0)
    beta_1 = _checked_real(beta_1, "beta_1", "a finite number in [0, 1)",
                           lambda v: 0 <= v < 1)
    beta_2 = _checked_real(beta_2, "beta_2", "a finite number in [0, 1)",
                           lambda v: 0 <= v < 1)
    epsilon = _checked_real(epsilon, "epsilon", "a finite number > 0", lambda v: v > 0)
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                                 epsilon=epsilon)


def paper_schedule(num_stages=8, base_learning_rate=1e-3):
    """[(passes, learning_rate)] for stages i = 0..7: 3^i passes at 1e-3 * 10^(-i/7)."""
    return [(3 ** i, base_learning_rate * 10. ** (-i / 7.)) for i in range(num_stages)]


PAPER_PASSES = sum(p for p, _ in paper_schedule())  # 3,280


def stages(schedule, steps_per_epoch, learning_rate, epochs, schedule_passes=0):
    """[(first_step, last_step_exclusive, learning_rate)] for a whole run.

    `schedule` is one of SCHEDULES: `paper` (`paper_schedule` from `learning_rate`; its
    own number of passes) or `constant` (`epochs` passes at `learning_rate`).

    `schedule_passes` > 0 compresses the paper's schedule to that many passes in all:
    stage i keeps its learning rate and its share 3^i / 3,280 of the steps (stage
    boundaries at round(total_steps * passes_before_stage / 3,280), so the stages add up
    to exactly `schedule_passes * steps_per_epoch` steps). With `schedule_passes=3280`
    it is the paper's schedule step for step. ValueError naming `--schedule_passes` if a
    stage would get no step, or if it is given with the constant schedule.
    """
    if schedule_passes and schedule != "paper":
        raise ValueError(f"--schedule_passes={schedule_passes} compresses the paper "
                         f"schedule; expected --schedule=paper, got {schedule!r}.")
    if schedule_passes < 0:
        raise ValueError(f"--schedule_passes: expected an integer >= 0, got "
                         f"{schedule_passes}.")
    if schedule == "paper":
        plan = paper_schedule(base_learning_rate=learning_rate)
    else:
        plan = [(epochs, learning_rate)]
    if schedule_passes:
        total, out, before = schedule_passes * steps_per_epoch, [], 0
        for passes, lr in plan:
            first = round(total * before / PAPER_PASSES)
            before += passes
            last = round(total * before / PAPER_PASSES)
            if last <= first:
                fits = next(p for p in range(schedule_passes + 1, PAPER_PASSES + 1)
                            if round(p * steps_per_epoch / PAPER_PASSES) >= 1)
                raise ValueError(
                    f"--schedule_passes={schedule_passes}: stage {len(out)} of the "
                    f"compressed paper schedule gets no step at {steps_per_epoch} steps "
                    f"per pass; expected at least {fits} passes.")
            out.append((first, last, lr))
        return out
    out, step = [], 0
    for passes, lr in plan:
        out.append((step, step + passes * steps_per_epoch, lr))
        step += passes * steps_per_epoch
    return out


def stage_at(plan, step):
    """(stage index, learning rate) at a step of a `stages` plan."""
    for i, (first, last, lr) in enumerate(plan):
        if first <= step < last:
            return i, lr
    return len(plan) - 1, plan[-1][2]


def make_train_step(model, optimizer, num_samples, estimator="iwae", jit_compile=True,
                    num_shards=1, strategy=None):
    """Builds `step(x, seed) -> metrics`: one compiled update of `model` by `optimizer`
    (see `_compiled_train_step` for the step itself).

    A model whose networks have no weights yet (`tfp_iwae.LatentVariableModel` before it
    has seen data) is built from the first batch the step gets (`model.build_from(x)`),
    and the step is compiled then. A Python or NumPy int seed is turned into a `[2]`
    int32 Tensor before each call, so new seeds reuse the compiled step (an int argument
    would retrace and recompile it for every value).
    """
    latent_model.check_model(model, "make_train_step",
                             ("prior", "encoder", "decoder", "encoder_variables",
                              "decoder_variables"))
    num_samples = objectives.check_num_samples(num_samples)
    estimators.get_estimator(estimator, num_samples)  # a bad name fails here, not later

    def build():
        return _compiled_train_step(model, optimizer, num_samples, estimator, jit_compile,
                                    num_shards, strategy)

    return _TrainStep(model, build)


class _TrainStep:
    """The callable `make_train_step` returns: builds the model from the first batch if
    it has no variables, compiles the step once, and passes seeds as `[2]` Tensors."""

    def __init__(self, model, build):
        self._model, self._build, self._step = model, build, None
        if model.encoder_variables and model.decoder_variables:
            self._step = build()

    def __call__(self, x, seed):
        if self._step is None:
            if not hasattr(self._model, "build_from"):
                raise ValueError(
                    "make_train_step: the model has no variables yet and no `build_from`; "
                    "call it once on a batch of data first.")
            self._model.build_from(x)
            self._step = self._build()
        if seed is None or isinstance(seed, (int, np.integer)):
            seed = seeds.stateless_seed(None if seed is None else int(seed))
        return self._step(x, seed)

    def __getattr__(self, name):  # the compiled tf.function's own attributes
        if self._step is None:
            raise AttributeError(f"{name!r}: the step is compiled at its first call")
        return getattr(self._step, name)


def _compiled_train_step(model, optimizer, num_samples, estimator, jit_compile, num_shards,
                         strategy):
    """Builds `step(x, seed) -> metrics`: one compiled update of `model` by `optimizer`.

    The k samples for the whole batch are drawn at once and every network runs one
    `[k * batch, d]` matmul per layer. The decoder's variables get the gradient of the
    decoder surrogate and the encoder's that of the estimator's encoder surrogate, from
    one forward pass (see `estimators.estimator_gradients`).

    Random numbers are laid out by shard: the batch is cut into `num_shards` equal,
    contiguous shards and shard s draws its samples with seed fold_in(seed, s) (or `seed`
    itself when there is one shard). Under a `tf.distribute` strategy with R replicas
    each replica takes num_shards / R consecutive shards, so a run with R replicas and a
    single-device run with `num_shards=R` draw the same samples and take the same steps
    (up to the order of floating-point sums).

    Args:
      model: an `IWAE` (anything with `prior`, `encoder`, `decoder`,
        `encoder_variables`, `decoder_variables`), created under `strategy.scope()`
        when a strategy is given.
      optimizer: a Keras optimizer (built here on the model's variables).
      num_samples: k >= 1 importance samples per example (M*K for grouped estimators).
      estimator: name from `estimators.ESTIMATOR_NAMES`.
      jit_compile: compile the gradient computation with XLA.
      num_shards: shards of the batch (a multiple of the replica count; default: one
        per replica).
      strategy: optional `tf.distribute.Strategy` (e.g. MirroredStrategy).

    Returns:
      A `tf.function` taking x `[batch, input_dim]` float32 (the global batch) and a `[2]`
      int32 seed, and returning a dict of scalars: `loss` (minus the batch-mean estimator
      bound), `bound` (batch-mean of the estimator's bound, nats), `iwae_bound`, `elbo`
      (batch-mean L_k and mean log weight), `ess` (mean effective sample size),
      `grad_norm` (global norm), `finite` (1. if loss and gradients are finite).
      A step whose loss or gradients are not finite changes nothing: the optimizer update
      (weights, moments and `optimizer.iterations`) is skipped, also under a strategy.
    """
    num_samples = objectives.check_num_samples(num_samples)
    est = estimators.get_estimator(estimator, num_samples)
    dec_vars, enc_vars = model.decoder_variables, model.encoder_variables
    variables = dec_vars + enc_vars
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    num_shards = max(int(num_shards or 1), replicas)
    if num_shards % replicas:
        raise ValueError(f"`num_shards` ({num_shards}) must be a multiple of the number of "
                         f"replicas ({replicas}).")
    local_shards = num_shards // replicas
    if strategy is not None:
        with strategy.scope():
            optimizer.build(variables)
    else:
        optimizer.build(variables)

    def shard_gradients(x, seed, first_shard):
        """Mean gradients and per-example outputs over this device's shards of x."""
        outs = []
        for j, xj in enumerate(tf.split(x, local_shards) if local_shards > 1 else [x]):
            shard_seed = seed if num_shards == 1 else seeds.fold_in(seed, first_shard + j)
            outs.append(estimators.estimator_gradients(
                est, xj, prior=model.prior, likelihood_fn=model.decoder,
                posterior_fn=model.encoder, encoder_variables=enc_vars,
                decoder_variables=dec_vars, num_samples=num_samples, seed=shard_seed))
        grads = [tf.add_n(list(gs)) / local_shards if local_shards > 1 else gs[0]
                 for gs in zip(*[list(o["decoder_grads"]) + list(o["encoder_grads"])
                                 for o in outs])]
        bound = tf.concat([o["bound"] for o in outs], axis=0)
        lw = tf.stop_gradient(tf.concat([o["log_weights"] for o in outs], axis=1))
        return grads, bound, lw

    metrics = step_metrics

    if strategy is None:
        def step(x, seed):
            grads, bound, lw = shard_gradients(x, seed, 0)
            grad_norm = tf.linalg.global_norm(grads)
            finite = step_is_finite(grads, bound)

            def apply():
                optimizer.apply_gradients(zip(grads, variables))
                return tf.constant(True)

            tf.cond(finite, apply, lambda: tf.constant(False))
            return metrics(bound, lw, grad_norm, finite)

        return tf.function(step, jit_compile=jit_compile)

    unused = [name for name in ("clipnorm", "clipvalue", "global_clipnorm", "weight_decay",
                                "use_ema", "gradient_accumulation_steps", "loss_scale_factor")
              if getattr(optimizer, name, None)]
    if unused:
        raise ValueError(f"Under a tf.distribute strategy the step applies plain optimizer "
                         f"updates; the optimizer's {', '.join(unused)} would be ignored.")
    compiled = tf.function(shard_gradients, jit_compile=jit_compile)

    def replica_step(x, seed):
        """This replica's slice of x -> (all-reduced mean gradients, metrics, finite)."""
        ctx = tf.distribute.get_replica_context()
        rid = ctx.replica_id_in_sync_group
        local = tf.shape(x)[0] // replicas
        x_local = x[rid * local:(rid + 1) * local]
        grads, bound, lw = compiled(x_local, seed, rid * local_shards)
        mean_grads = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, grads)
        grad_norm = tf.linalg.global_norm(mean_grads)
        finite = tf.math.logical_and(
            step_is_finite(mean_grads, tf.zeros([])),
            ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(
                tf.reduce_all(tf.math.is_finite(bound)), tf.float32)) > replicas - 0.5)
        return mean_grads, metrics(bound, lw, grad_norm, finite), finite

    def step(x, seed):
        mean_grads, per_replica, finite = strategy.run(replica_step, args=(x, seed))
        # Every replica (on every worker) holds the same all-reduced gradients and flag, so
        # all take the same branch. The update runs in cross-replica context, where the
        # Keras optimizer applies each device's copy of the mean gradient without reducing
        # again; a non-finite step skips it whole (no moment update, no iteration), rather
        # than applying zeros, which Adam's momentum would still turn into a weight change.
        ok = strategy.experimental_local_results(finite)[0]

        def apply():
            # What `optimizer.apply_gradients` does for this optimizer (see the check on
            # its options above), minus the second all-reduce: Keras' own apply cannot run
            # under a tf.cond (it synchronises the replicas through a merge_call).
            def update(var, grad):
                optimizer.update_step(grad, var, optimizer.learning_rate)

            with strategy.scope():  # cross-replica context
                for grad, var in zip(mean_grads, variables):
                    strategy.extended.update(
                        var.value if isinstance(var, keras.Variable) else var, update,
                        args=(grad,), group=False)
                optimizer.iterations.assign_add(1)
            return tf.constant(True)

        tf.cond(ok, apply, lambda: tf.constant(False))
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                for k, v in per_replica.items()}

    return tf.function(step)


def step_metrics(bound, log_weights, grad_norm, finite):
    """The scalars a training step reports (see `make_train_step`).

    `ess` is the batch mean of the per-example ESS, in [1, k]. It is NaN when some
    example's log weights are NaN, +inf or all -inf: that example's bound is then
    non-finite too, so the step is reported non-finite and not applied, and a mean over
    the other examples would describe a batch that was not used.
    """
    bound = tf.reduce_mean(bound)
    return dict(loss=-bound, bound=bound,
                iwae_bound=tf.reduce_mean(objectives.iwae_bound(log_weights)),
                elbo=tf.reduce_mean(objectives.vae_bound(log_weights)),
                ess=tf.reduce_mean(objectives.effective_sample_size(log_weights)),
                grad_norm=grad_norm, finite=tf.cast(finite, tf.float32))


def step_is_finite(grads, bound):
    """True when a step may be applied: every gradient entry and every example's bound
    (`[batch]`) are finite.

    Per gradient, the max of a 0/1 "not finite" flag: XLA:CPU fuses that into one pass
    over the gradient, where the global norm's sum of squares (and an all-reduce of
    booleans) runs as a tree reduction, a sizeable share of a small step (timings:
    docs/benchmarks.md). (A max of |g| would be as fast but misses NaN: XLA's max
    reduction does not propagate it.) The fused loop computes the norm only for the
    steps it reports."""
    flags = [tf.reduce_max(tf.where(tf.math.is_finite(g), 0., 1.)) for g in grads]
    flags.append(tf.reduce_max(tf.where(tf.math.is_finite(bound), 0., 1.)))
    return tf.math.reduce_max(tf.stack(flags)) < 0.5


def step_seed(base_seed, step):
    """The stateless seed for training step `step` of a run seeded with `base_seed`."""
    return seeds.fold_in(base_seed, step)




class TrainLoop:
    """Many optimizer steps per compiled call, with the training images on the device.

    `loop(first_step, num_steps)` runs steps first_step, ..., first_step + num_steps - 1
    inside one XLA program (a `tf.while_loop`): for step s it takes the images of batch
    s % steps_per_epoch of epoch s // steps_per_epoch in the order
    `data.epoch_permutation(seed, epoch)`, binarises them with
    `data.dynamic_binarization(x, seed, s)` (dynamic binarisation), draws the importance
    samples with `step_seed(seed, s)`, sets the learning rate of the stage holding s, and
    applies the estimator's gradients. Everything is a function of (seed, s), so a run's
    numbers do not depend on how its steps are grouped into calls.

    A step whose loss or gradients are not finite is not applied and ends the call: the
    returned `steps` counts the steps applied, so the first bad step is
    first_step + steps (with `finite` 0 and that step's bound and log weights in the
    metrics). (Inside the compiled loop updates are not guarded one by one: the call
    keeps a copy of the weights and optimizer state from its start and, after a
    non-finite step, restores it and runs the good steps again.)

    With `resident=False` the images stay on the host: `loop(first_step, num_steps)`
    gathers each batch there (same permutation, computed by the same compiled program)
    and feeds the grey-level batches to the compiled loop, which binarises them as above:
    the same numbers, for data that should not live on the device.

    Args:
      model: an `IWAE` or any model with the members of `tfp_iwae.MODEL_MEMBERS` (built
        from the first image if its networks have no weights yet).
      optimizer: a Keras optimizer (its learning rate is set every step from `stages`).
      num_samples: k.
      images: float32 `[N, *event_shape]` training images, intensities in [0, 1] (already binary for
        fixed binarisation; then pass `dynamic=False`).
      batch_size: examples per step; steps_per_epoch = N // batch_size (the remainder of
        each epoch's permutation is not used).
      seed: the run's int seed.
      estimator: an estimator name.
      dynamic: binarise every batch afresh (dynamic binarisation).
      stages: [(first_step, learning_rate)] in increasing first_step, the first at 0.
      max_steps_per_call: the largest num_steps a call takes (the host path's buffer).
      jit_compile: compile with XLA (False: a graph-mode while loop, same structure).
      resident: keep the images on the device (default).
    """

    def __init__(self, model, optimizer, num_samples, images, *, batch_size, seed,
                 estimator="iwae", dynamic=True, stages=((0, 1e-3),), max_steps_per_call=100,
                 jit_compile=True, resident=True):
        images = np.asarray(images, np.float32)
        if images.ndim < 2 or len(images) < batch_size:
            raise ValueError(f"`images` must be [N >= batch_size, *event_shape], got "
                             f"{images.shape} with batch_size={batch_size}.")
        latent_model.check_model(model, "TrainLoop",
                                 ("prior", "encoder", "decoder", "encoder_variables",
                                  "decoder_variables"))
        latent_model.ensure_built(model, images[:1])
        self.num_samples = objectives.check_num_samples(num_samples)
        self.batch_size = int(batch_size)
        self.steps_per_epoch = len(images) // self.batch_size
        self.max_steps_per_call = objectives.check_num_samples(max_steps_per_call,
                                                               "max_steps_per_call")
        self.resident = bool(resident)
        self._seed = int(seed)
        est = estimators.get_estimator(estimator, self.num_samples)
        dec_vars, enc_vars = model.decoder_variables, model.encoder_variables
        variables = dec_vars + enc_vars
        optimizer.build(variables)
        n, event = images.shape[0], list(images.shape[1:])
        base = seeds.stateless_seed(self._seed)
        starts = tf.constant([int(s) for s, _ in stages], tf.int64)
        rates = tf.constant([float(r) for _, r in stages], tf.float32)
        per_epoch, batch = self.steps_per_epoch, self.batch_size
        # The permutation of the current epoch, recomputed when a step enters a new one.
        self._order = tf.Variable(tf.zeros([n], tf.int32), trainable=False, name="order")
        self._order_epoch = tf.Variable(tf.constant(-1, tf.int64), trainable=False,
                                        name="order_epoch")
        if self.resident:
            self._images = tf.Variable(images, trainable=False, name="train_images")
        else:
            self._host_images = images

        def ensure_order(epoch):
            def refresh():
                self._order.assign(data.epoch_permutation(base, epoch, n))
                self._order_epoch.assign(epoch)
                return tf.constant(True)
            tf.cond(tf.not_equal(epoch, self._order_epoch), refresh,
                    lambda: tf.constant(False))

        def one_step(s, x_grey, reported):
            x = data.dynamic_binarization(x_grey, base, s) if dynamic else x_grey
            out = estimators.estimator_gradients(
                est, x, prior=model.prior, likelihood_fn=model.decoder,
                posterior_fn=model.encoder, encoder_variables=enc_vars,
                decoder_variables=dec_vars, num_samples=self.num_samples,
                seed=step_seed(self._seed, s))
            grads = list(out["decoder_grads"]) + list(out["encoder_grads"])
            finite = step_is_finite(grads, out["bound"])
            # The global norm only for the step the call reports (its last, or the
            # non-finite one that ends it): the other steps' norms are never read.
            grad_norm = tf.cond(tf.math.logical_or(reported, tf.math.logical_not(finite)),
                                lambda: tf.linalg.global_norm(grads),
                                lambda: tf.constant(0., tf.float32))
            stage = tf.reduce_sum(tf.cast(s >= starts, tf.int32)) - 1
            optimizer.learning_rate.assign(tf.gather(rates, stage))
            # Applied whatever `finite` says: a non-finite step ends the loop, and the
            # call then rolls the state back to its start and re-runs the good steps
            # (`__call__`). Cheaper than guarding every update (a select over every
            # weight and moment in each step) for what almost never happens.
            optimizer.apply_gradients(zip(grads, variables))
            # What the call reports of its last step; `step_metrics` runs once, after the
            # loop, not in every step.
            return finite, (out["bound"], tf.stop_gradient(out["log_weights"]), grad_norm)

        # The state a call changes (weights, optimizer moments, step count, learning rate)
        # and its copy at the start of the call, restored after a non-finite step.
        self._state = list(variables) + list(optimizer.variables)
        self._saved = [tf.Variable(v, trainable=False, name="call_start")
                       for v in self._state]

        def run(first, count, batches):
            for saved, v in zip(self._saved, self._state):
                saved.assign(v)

            def cond(i, finite, last):
                return tf.math.logical_and(i < count, finite)

            def body(i, finite, last):
                s = first + i
                if self.resident:
                    ensure_order(s // per_epoch)
                    pos = tf.cast(s % per_epoch, tf.int32)
                    idx = tf.gather(self._order, pos * batch + tf.range(batch))
                    x_grey = tf.gather(self._images, idx)
                else:
                    x_grey = batches[i]
                ok, m = one_step(s, x_grey, i + 1 >= count)
                return i + tf.cast(ok, tf.int64), ok, m

            init = (tf.zeros([batch]), tf.zeros([self.num_samples, batch]),
                    tf.constant(0., tf.float32))
            steps, finite, last = tf.while_loop(
                cond, body, (tf.constant(0, tf.int64), tf.constant(True), init))
            return dict(step_metrics(*last, finite), steps=steps)

        self._run = tf.function(run, jit_compile=jit_compile)

        def restore():
            for saved, v in zip(self._saved, self._state):
                v.assign(saved)
        self._restore = tf.function(restore)
        self._order_fn = tf.function(
            lambda epoch: data.epoch_permutation(base, epoch, n), jit_compile=jit_compile)
        self._dummy = tf.zeros([1, batch] + event, tf.float32)
        self._host_order = (None, None)

    def _host_batches(self, first, count):
        """[max_steps_per_call, batch, *event] grey batches for steps
        first..first+count-1."""
        out = np.zeros((self.max_steps_per_call, self.batch_size) +
                       self._host_images.shape[1:], np.float32)
        for i in range(count):
            s = first + i
            epoch, pos = divmod(s, self.steps_per_epoch)
            if self._host_order[0] != epoch:
                self._host_order = (epoch, self._order_fn(
                    tf.constant(epoch, tf.int64)).numpy())
            idx = self._host_order[1][pos * self.batch_size:(pos + 1) * self.batch_size]
            out[i] = self._host_images[idx]
        return tf.constant(out)

    def __call__(self, first_step, num_steps):
        """Runs `num_steps` steps from `first_step`; returns the last applied step's
        metrics (as in `make_train_step`) and `steps`, the number of steps applied."""
        first_step, num_steps = int(first_step), int(num_steps)
        if not 1 <= num_steps <= self.max_steps_per_call:
            raise ValueError(f"`num_steps` must be in [1, {self.max_steps_per_call}] "
                             f"(max_steps_per_call), got {num_steps}.")
        batches = (self._dummy if self.resident else
                   self._host_batches(first_step, num_steps))
        out = self._run(tf.constant(first_step, tf.int64), tf.constant(num_steps, tf.int64),
                        batches)
        if float(out["finite"]) != 1.:
            # The non-finite step (first_step + steps) was applied inside the loop: back to
            # the state at the call's start, then the good steps again (the same numbers:
            # every draw is a function of (seed, step)).
            self._restore()
            if int(out["steps"]):
                self._run(tf.constant(first_step, tf.int64), out["steps"], batches)
        return out
