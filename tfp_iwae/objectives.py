"""Importance weights and the bounds built from them.

All quantities are natural-log densities (nats). The sample axis is axis 0 unless
stated: log weights have shape `[num_samples, *batch]`.
"""

import tensorflow as tf

from tfp_iwae import checks
from tfp_iwae import errors
from tfp_iwae import seeds

__all__ = [
    "log_weights",
    "iwae_bound",
    "vae_bound",
    "normalized_weights",
    "effective_sample_size",
    "check_num_samples",
    "step_metrics",
]


def check_num_samples(num_samples, name="num_samples", description=None,
                      allow_tensor=False, minimum=1):
    """Returns a count >= `minimum` (e.g. k), or raises ArgumentError naming the argument.

    `checks.count` with this module's historical signature (kept public: the checks of
    k, block and chunk sizes across the package and in users' code call it).

    Args:
      num_samples: the value to check.
      name: the argument's name, used in the message (e.g. `num_samples`, `n`).
      description: what the count is, shown in parentheses in the message (e.g. "the
        number of samples to draw"); default: "the number of importance samples k" for
        `num_samples`, nothing for other names.
      allow_tensor: also accept a scalar integer Tensor. One whose value is known at
        trace time is checked now and returned as a Python int; otherwise it is returned
        as an int32 Tensor with a run-time check (InvalidArgumentError if < `minimum`).
      minimum: 1 (a count of samples, the default) or 0 (e.g. a number of draws to
        return, where none is an empty result); any other int works as well.

    Returns:
      A Python int >= `minimum` (or, with `allow_tensor`, an int32 scalar Tensor).

    Raises:
      ArgumentError (a ValueError): a bool, a non-integer, or an integer < `minimum`.
    """
    return checks.count(num_samples, name, minimum=minimum, description=description,
                        allow_tensor=allow_tensor)


def log_weights(x, *, prior, likelihood_fn, posterior, num_samples, seed=None,
                likelihood_block=None):
    """Log importance weights `log p(z) + log p(x|z) - log q(z|x)` for `z ~ q(z|x)`.

    Args:
      x: observed data, a Tensor `[*batch, *event_x]`.
      prior: a `tfd.Distribution` over z (its batch shape broadcasts against x's).
      likelihood_fn: callable mapping samples z `[num_samples, *batch, *event_z]` (or a
        structure of them, for joint distributions) to a `tfd.Distribution` over x
        with batch shape `[num_samples, *batch]`.
      posterior: a `tfd.Distribution` q(z|x) over z with batch shape `[*batch]`;
        reparameterized samples give pathwise gradients.
      num_samples: Python int k >= 1.
      seed: None, an int or a stateless `[2]` int Tensor; the same seed gives the
        same samples.
      likelihood_block: None (default), or a Python int b >= 1: all k samples are
        drawn at once as usual (the same draws), but p(x|z) is evaluated b samples at a
        time in a `tf.while_loop` (`tf.map_fn`; the k mod b left over in one more call),
        so the likelihood's intermediates (e.g. `[b, *batch, 784]` logits) stay small
        enough for the CPU's caches. The same log weights, up to float rounding.

    Returns:
      Tensor `[num_samples, *batch]` of log weights in nats.

    Raises:
      ArgumentError (a ValueError): if `num_samples` or `likelihood_block` is not an
        integer >= 1.
    """
    num_samples = check_num_samples(num_samples)
    z = posterior.sample(num_samples, seed=seeds.stateless_seed(seed))
    log_q = posterior.log_prob(z)
    log_pz = prior.log_prob(z)
    block = None if likelihood_block is None else check_num_samples(
        likelihood_block, "likelihood_block", "samples per likelihood evaluation")
    log_px_given_z = log_likelihood_in_blocks(lambda zb: likelihood_fn(zb).log_prob(x), z,
                                              num_samples, block, log_q.dtype)
    return log_pz + log_px_given_z - log_q


def log_likelihood_in_blocks(log_likelihood, z, num_samples, block, dtype):
    """`log_likelihood(z)` `[num_samples, *batch]`, computed `block` samples at a time.

    z: samples `[num_samples, ...]` (or a structure of them); log_likelihood maps samples
    `[n, ...]` to log-probabilities `[n, *batch]` of `dtype`. The first
    (num_samples // block) * block samples go through a `tf.map_fn` one block at a time
    (so a graph-mode caller holds one block's intermediates, not up to ten), the rest in
    one more call; block None, or >= num_samples: one call on all of z. Shared by
    `log_weights` and the evaluation's program with TensorFlow-op decoder matmuls.
    """
    if block is None or block >= num_samples:
        return log_likelihood(z)
    full, rest = divmod(num_samples, block)
    head = tf.nest.map_structure(
        lambda t: tf.reshape(t[:full * block], tf.concat([[full, block], tf.shape(t)[1:]],
                                                         axis=0)), z)
    per_block = tf.map_fn(log_likelihood, head, fn_output_signature=dtype,
                          parallel_iterations=1)
    parts = [tf.reshape(per_block, tf.concat([[full * block], tf.shape(per_block)[2:]],
                                             axis=0))]
    if rest:
        tail = tf.nest.map_structure(lambda t: t[full * block:], z)
        parts.append(log_likelihood(tail))
    return tf.concat(parts, axis=0) if rest else parts[0]


def _checked_log_weights(log_weights, axis, fn_name):
    """`log_weights` as a Tensor with at least one sample along `axis`, else a clear error.

    The dtype must be floating (log weights are real numbers in nats): an integer, bool
    or complex array/Tensor is refused with an ArgumentTypeError (a TypeError) naming
    `log_weights` and the dtype (TensorFlow's own error named an op attribute, "attr 'T'
    of int32"); Python numbers and lists of numbers are converted to float32.

    A known (static) shape is checked at once (ArgumentError, a ValueError); a sample
    axis of unknown length (e.g. inside a `tf.function` traced with `[None, None]`) gets
    a run-time assertion (InvalidArgumentError) naming the same problem. XLA
    (`jit_compile=True`) drops run-time assertions, so there only static shapes are
    checked; the training step's shapes are static, so its compiled graph holds no
    assertion.
    """
    what = f"{fn_name}: `log_weights`"

    def refuse(dtype):
        raise errors.ArgumentTypeError(
            f"{what} must be float log weights [num_samples, *batch] in nats (float32 or "
            f"float64), got dtype {dtype}.")

    dtype = getattr(log_weights, "dtype", None)  # a Tensor's or a NumPy array's
    if dtype is not None:
        try:
            dtype = tf.as_dtype(dtype)
        except TypeError:
            refuse(dtype)
        if not dtype.is_floating:
            refuse(dtype.name)
    log_weights = tf.convert_to_tensor(log_weights, dtype_hint=tf.float32)
    if not log_weights.dtype.is_floating:  # e.g. a list of bools
        refuse(log_weights.dtype.name)
    rank = log_weights.shape.rank
    if rank is None:
        with tf.control_dependencies([tf.debugging.assert_rank_at_least(
                log_weights, 1, message=f"{what} must have a sample axis, shape "
                                        f"[num_samples, *batch]; got a scalar")]):
            log_weights = tf.identity(log_weights)
    elif rank == 0:
        raise errors.ArgumentError(f"{what} must have a sample axis, shape "
                                   f"[num_samples, *batch]; got a scalar.")
    elif not -rank <= axis < rank:
        raise errors.ArgumentError(f"{what} has shape {log_weights.shape}: `axis`={axis} "
                                   f"is out of range.")
    else:
        size = log_weights.shape[axis]
        if size is not None:
            if size < 1:
                raise errors.ArgumentError(
                    f"{what} needs at least one sample along axis {axis} (the sample "
                    f"axis), got shape {log_weights.shape}.")
            return log_weights
    with tf.control_dependencies([tf.debugging.assert_positive(
            tf.shape(log_weights)[axis],
            message=f"{what} needs at least one sample along axis {axis} (the sample "
                    f"axis)")]):
        return tf.identity(log_weights)


def iwae_bound(log_weights, axis=0):
    """The k-sample importance weighted bound `L_k = logsumexp(log w, axis) - log k`.

    Args:
      log_weights: float Tensor `[num_samples, *batch]` in nats (samples along `axis`).
      axis: the sample axis.

    Returns:
      Tensor `[*batch]`, in nats. Computed with a max-shifted log-sum-exp, so it stays
      finite for very negative log weights (e.g. -1e4) and large k.

    Raises:
      ArgumentTypeError (a TypeError): a non-floating dtype (e.g. int32): float log
        weights expected.
      ArgumentError (a ValueError): a scalar, or no samples along `axis`
        (InvalidArgumentError at run time when that length is only known then).
    """
    log_weights = _checked_log_weights(log_weights, axis, "iwae_bound")
    k = tf.cast(tf.shape(log_weights)[axis], log_weights.dtype)
    return tf.reduce_logsumexp(log_weights, axis=axis) - tf.math.log(k)


def vae_bound(log_weights, axis=0):
    """The k-sample VAE objective: the mean of the log weights over samples.

    Args:
      log_weights: float Tensor `[num_samples, *batch]` in nats (samples along `axis`).
      axis: the sample axis.

    Returns:
      Tensor `[*batch]`, in nats: a Monte-Carlo estimate of the ELBO.

    Raises:
      TypeError: a non-floating dtype (as for `iwae_bound`).
      ValueError: a scalar, or no samples along `axis` (as for `iwae_bound`).
    """
    log_weights = _checked_log_weights(log_weights, axis, "vae_bound")
    return tf.reduce_mean(log_weights, axis=axis)


def normalized_weights(log_weights, axis=0):
    """Self-normalised importance weights `w~ = softmax(log w)` along `axis`.

    `log_weights`: float `[num_samples, *batch]` in nats. Returns the same shape, summing
    to 1 along `axis`. Raises TypeError for a non-floating dtype and ValueError for a
    scalar or no samples along `axis` (as for `iwae_bound`).
    """
    log_weights = _checked_log_weights(log_weights, axis, "normalized_weights")
    return tf.nn.softmax(log_weights, axis=axis)


def effective_sample_size(log_weights, axis=0):
    """Effective sample size `1 / sum_i w~_i^2 = (sum_i w_i)^2 / sum_i w_i^2` along `axis`.

    Args:
      log_weights: Tensor `[num_samples, *batch]` (samples along `axis`), in nats.
      axis: the sample axis.

    Returns:
      Tensor `[*batch]` in [1, k] (a count of samples, no unit), in log_weights' dtype.
      The weights are first divided by the largest one, u_i = exp(log w_i - max_j log
      w_j) in [0, 1], so the result is right however large |log w| is (at -1e9 nats
      float32 rounding hides log k, and normalising by a log-sum-exp first gave 1/k for
      k tied weights); the sums are taken in float64, so that near-uniform weights give
      at most k (float32 sums of 5,000 weights reached k + 0.045).

      Non-finite log weights: a -inf log weight is a zero weight and is allowed. An
      example whose log weights contain NaN or +inf, or are all -inf, has no normalised
      weights; its ESS is NaN (never a number outside [1, k]).

    Raises:
      TypeError: a non-floating dtype (as for `iwae_bound`).
      ValueError: a scalar, or no samples along `axis` (as for `iwae_bound`).
    """
    log_weights = _checked_log_weights(log_weights, axis, "effective_sample_size")
    valid = tf.math.logical_and(
        tf.reduce_all(log_weights < float("inf"), axis=axis),  # False for NaN and +inf
        tf.reduce_any(log_weights > float("-inf"), axis=axis))
    u = tf.exp(tf.cast(log_weights - tf.reduce_max(log_weights, axis=axis, keepdims=True),
                       tf.float64))
    ess = tf.square(tf.reduce_sum(u, axis=axis)) / tf.reduce_sum(tf.square(u), axis=axis)
    k = tf.cast(tf.shape(log_weights)[axis], tf.float64)
    ess = tf.cast(tf.minimum(ess, k), log_weights.dtype)  # float64 rounding, at most
    return tf.where(valid, ess, tf.constant(float("nan"), ess.dtype))


def step_metrics(bound, log_weights, grad_norm=None, finite=None):
    """The scalars a training step reports, from its bound and log weights.

    Args:
      bound: `[batch]`, each example's estimator bound (nats).
      log_weights: `[k, batch]`, the step's log weights (nats).
      grad_norm: optional scalar, the global norm of the step's gradients.
      finite: optional scalar bool, whether the step's loss and gradients are finite.

    Returns:
      A dict of scalars: `loss` (minus the batch-mean bound), `bound` (batch mean of the
      estimator's bound, nats), `iwae_bound` and `elbo` (batch means of L_k and of the
      mean log weight, nats), `ess` (batch mean of the per-example effective sample
      size); and, when given, `grad_norm` and `finite` (1. if the step was finite, as
      float32). `ess` is NaN when some example's log weights are NaN, +inf or all -inf:
      that example's bound is then non-finite too, so the step is reported non-finite and
      not applied, and a mean over the other examples would describe a batch that was not
      used.
    """
    bound = tf.reduce_mean(bound)
    out = dict(loss=-bound, bound=bound,
               iwae_bound=tf.reduce_mean(iwae_bound(log_weights)),
               elbo=tf.reduce_mean(vae_bound(log_weights)),
               ess=tf.reduce_mean(effective_sample_size(log_weights)))
    if grad_norm is not None:
        out["grad_norm"] = grad_norm
    if finite is not None:
        out["finite"] = tf.cast(finite, tf.float32)
    return out
