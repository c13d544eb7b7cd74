"""The compiled training step, the optimizer and the paper's learning-rate schedule."""

import math

import keras
import tensorflow as tf

from tfp_iwae import estimators
from tfp_iwae import objectives
from tfp_iwae import seeds

__all__ = ["make_optimizer", "make_train_step", "paper_schedule", "PAPER_ADAM_EPSILON"]

PAPER_ADAM_EPSILON = 1e-4


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


def make_train_step(model, optimizer, num_samples, estimator="iwae", jit_compile=True,
                    num_shards=1, strategy=None):
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

    def metrics(bound, lw, grad_norm, finite):
        # `ess` is the batch mean of the per-example ESS, in [1, k]. It is NaN when some
        # example's log weights are NaN, +inf or all -inf: that example's bound is then
        # non-finite too, so the step is reported non-finite and not applied, and a mean
        # over the other examples would describe a batch that was not used.
        bound = tf.reduce_mean(bound)
        return dict(loss=-bound, bound=bound,
                    iwae_bound=tf.reduce_mean(objectives.iwae_bound(lw)),
                    elbo=tf.reduce_mean(objectives.vae_bound(lw)),
                    ess=tf.reduce_mean(objectives.effective_sample_size(lw)),
                    grad_norm=grad_norm, finite=tf.cast(finite, tf.float32))

    def is_finite(grad_norm, bound):
        return tf.math.logical_and(tf.math.is_finite(grad_norm),
                                   tf.reduce_all(tf.math.is_finite(bound)))

    if strategy is None:
        def step(x, seed):
            grads, bound, lw = shard_gradients(x, seed, 0)
            grad_norm = tf.linalg.global_norm(grads)
            finite = is_finite(grad_norm, bound)

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
            tf.math.is_finite(grad_norm),
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


def step_seed(base_seed, step):
    """The stateless seed for training step `step` of a run seeded with `base_seed`."""
    return seeds.fold_in(base_seed, step)


