"""The compiled training step: one optimizer update of a model by an estimator's
gradients, on one device or replicated under a `tf.distribute` strategy.

`make_train_step(model, optimizer, k)` returns `step(x, seed) -> metrics` for x
`[batch, *event_shape]` and a `[2]` int32 seed; the metrics are scalars (nats, batch
means; see `objectives.step_metrics`). Training step s of a run seeded with `seed` draws
with `step_seed(seed, s)`.
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf

from tfp_iwae import errors
from tfp_iwae import estimators
from tfp_iwae import latent_model
from tfp_iwae import objectives
from tfp_iwae import seeds

__all__ = ["make_train_step", "step_is_finite", "step_seed"]

# Optimizer options a replicated step would ignore (it applies plain updates).
_UNREPLICATED_OPTIONS = ("clipnorm", "clipvalue", "global_clipnorm", "weight_decay",
                         "use_ema", "gradient_accumulation_steps", "loss_scale_factor")


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
                raise errors.ArgumentError(
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
      int32 seed, and returning `objectives.step_metrics`' scalars (`loss`, `bound`,
      `iwae_bound`, `elbo`, `ess`, `grad_norm`, `finite`). A step whose loss or gradients
      are not finite changes nothing: the optimizer update (weights, moments and
      `optimizer.iterations`) is skipped, also under a strategy
      (`_single_device_step`, `_replicated_step`).
    """
    num_samples = objectives.check_num_samples(num_samples)
    est = estimators.get_estimator(estimator, num_samples)
    variables = model.decoder_variables + model.encoder_variables
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    num_shards = max(int(num_shards or 1), replicas)
    if num_shards % replicas:
        raise errors.ArgumentError(
            f"`num_shards` ({num_shards}) must be a multiple of the number of replicas "
            f"({replicas}).")
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        optimizer.build(variables)
    shard_gradients = _shard_gradients(model, est, num_samples, num_shards,
                                       num_shards // replicas)
    if strategy is None:
        return _single_device_step(shard_gradients, optimizer, variables, jit_compile)
    return _replicated_step(shard_gradients, optimizer, variables, strategy,
                            num_shards // replicas, jit_compile)


def _shard_gradients(model, est, num_samples, num_shards, local_shards):
    """`shard_gradients(x, seed, first_shard) -> (grads, bound, log_weights)` over one
    device's `local_shards` shards of its part x `[b, *event_shape]` of the batch: shard
    j of x is shard first_shard + j of the batch's `num_shards` (the layout of
    `_compiled_train_step`). Returns the mean over its shards of the gradients (decoder's
    variables, then encoder's), the bound `[b]` and the log weights `[k, b]` (no
    gradient)."""
    enc_vars, dec_vars = model.encoder_variables, model.decoder_variables

    def shard_gradients(x, seed, first_shard):
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

    return shard_gradients


def _single_device_step(shard_gradients, optimizer, variables, jit_compile):
    """The step on one device: gradients of all its shards, applied when finite."""

    def step(x, seed):
        grads, bound, lw = shard_gradients(x, seed, 0)
        grad_norm = tf.linalg.global_norm(grads)
        finite = step_is_finite(grads, bound)

        def apply():
            optimizer.apply_gradients(zip(grads, variables))
            return tf.constant(True)

        tf.cond(finite, apply, lambda: tf.constant(False))
        return objectives.step_metrics(bound, lw, grad_norm, finite)

    return tf.function(step, jit_compile=jit_compile)


def _replicated_step(shard_gradients, optimizer, variables, strategy, local_shards,
                     jit_compile):
    """The step under `strategy`: each replica takes its slice of the global batch (its
    `local_shards` consecutive shards), the gradients are all-reduced to their mean, and
    every replica applies it, or none does (a non-finite value on any replica)."""
    unused = [name for name in _UNREPLICATED_OPTIONS if getattr(optimizer, name, None)]
    if unused:
        raise errors.ArgumentError(
            f"Under a tf.distribute strategy the step applies plain optimizer updates; the "
            f"optimizer's {', '.join(unused)} would be ignored.")
    replica_step = _replica_step(tf.function(shard_gradients, jit_compile=jit_compile),
                                 strategy.num_replicas_in_sync, local_shards)

    def step(x, seed):
        mean_grads, per_replica, finite = strategy.run(replica_step, args=(x, seed))
        # Every replica (on every worker) holds the same all-reduced gradients and flag, so
        # all take the same branch. The update runs in cross-replica context, where the
        # Keras optimizer applies each device's copy of the mean gradient without reducing
        # again; a non-finite step skips it whole (no moment update, no iteration), rather
        # than applying zeros, which Adam's momentum would still turn into a weight change.
        ok = strategy.experimental_local_results(finite)[0]
        tf.cond(ok, lambda: _apply_replicated(optimizer, strategy, mean_grads, variables),
                lambda: tf.constant(False))
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                for k, v in per_replica.items()}

    return tf.function(step)


def _replica_step(compiled_shard_gradients, replicas, local_shards):
    """`replica_step(x, seed)`, run on each replica: this replica's slice of the global
    batch x -> (all-reduced mean gradients, this replica's metrics, finite everywhere)."""

    def replica_step(x, seed):
        ctx = tf.distribute.get_replica_context()
        rid = ctx.replica_id_in_sync_group
        local = tf.shape(x)[0] // replicas
        x_local = x[rid * local:(rid + 1) * local]
        grads, bound, lw = compiled_shard_gradients(x_local, seed, rid * local_shards)
        mean_grads = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, grads)
        grad_norm = tf.linalg.global_norm(mean_grads)
        finite = tf.math.logical_and(
            step_is_finite(mean_grads, tf.zeros([])),
            ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(
                tf.reduce_all(tf.math.is_finite(bound)), tf.float32)) > replicas - 0.5)
        return mean_grads, objectives.step_metrics(bound, lw, grad_norm, finite), finite

    return replica_step


def _apply_replicated(optimizer, strategy, mean_grads, variables):
    """What `optimizer.apply_gradients` does for a plain optimizer (see
    `_UNREPLICATED_OPTIONS`), minus the second all-reduce: Keras' own apply cannot run
    under a tf.cond (it synchronises the replicas through a merge_call). Runs in
    cross-replica context; returns True."""

    def update(var, grad):
        optimizer.update_step(grad, var, optimizer.learning_rate)

    with strategy.scope():  # cross-replica context
        for grad, var in zip(mean_grads, variables):
            strategy.extended.update(
                var.value if isinstance(var, keras.Variable) else var, update,
                args=(grad,), group=False)
        optimizer.iterations.assign_add(1)
    return tf.constant(True)


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
