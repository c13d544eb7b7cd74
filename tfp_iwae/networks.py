"""Keras 3 layers that output distribution parameters, wrapped in `tfd` distributions.

Every network here accepts inputs with any number of leading (sample/batch) dimensions,
`[*lead, d_in]`, and runs its matmuls on one flattened `[prod(lead), d_in]` matrix, so
k samples for a whole batch are one large GEMM per layer.
"""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_iwae import errors
from tfp_iwae import seeds

try:  # TensorFlow's own test for "inside an XLA-compiled function" (TFP uses it too)
    from tensorflow.python.ops import control_flow_util as _control_flow_util
except ImportError:  # pragma: no cover
    _control_flow_util = None

tfd = tfp.distributions

__all__ = ["MLP", "DiagonalGaussian", "GaussianLayer", "BernoulliLayer", "GaussianObservationLayer",
           "BernoulliLogits", "bernoulli_log_prob", "STD_PARAMETERIZATIONS", "LOG_STD_BOUND",
           "assert_binary", "assert_unit_interval"]

STD_PARAMETERIZATIONS = ("exp", "softplus")

# Bound on the pre-activation of a standard deviation. For the paper's `exp`
# parameterization std = exp(clip(raw, -LOG_STD_BOUND, LOG_STD_BOUND)), i.e. std in
# [3e-7, 3.3e6]: exactly the paper's model inside that range, finite outside it.
LOG_STD_BOUND = 15.0


def _flatten_lead(x):
    """[*lead, d] -> ([prod(lead), d], lead_shape)."""
    lead = tf.shape(x)[:-1]
    return tf.reshape(x, [-1, x.shape[-1]]), lead


def _unflatten_lead(y, lead):
    return tf.reshape(y, tf.concat([lead, [y.shape[-1]]], axis=0))


def _glorot(seed):
    return keras.initializers.GlorotUniform(seed=seed)


def _sub_seed(seed, i):
    """The initialiser seed of sub-layer i (None stays unseeded; `seeds.sub_seed`)."""
    return seeds.sub_seed(seed, i, seeds.SUBLAYER_SEED_STRIDE)


def _dense(units, name, seed=None, bias_initializer="zeros", dtype=None):
    return keras.layers.Dense(units, kernel_initializer=_glorot(seed),
                              bias_initializer=bias_initializer, name=name, dtype=dtype)


def _float32(t):
    """Distribution parameters leave the (possibly mixed-precision) networks as float32."""
    return tf.cast(t, tf.float32)


class MLP(keras.layers.Layer):
    """A stack of Dense layers with one activation, applied to `[*lead, d_in]` inputs."""

    def __init__(self, hidden_units, activation="tanh", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation = keras.activations.get(activation)
        self.layers_ = [_dense(u, f"dense_{i}", _sub_seed(seed, i), dtype=self.dtype_policy)
                        for i, u in enumerate(self.hidden_units)]

    def build(self, input_shape):
        d = input_shape[-1]
        for layer, units in zip(self.layers_, self.hidden_units):
            layer.build((None, d))
            d = units
        self.built = True

    def call(self, x):
        for layer in self.layers_:
            x = self.activation(layer(x))
        return x


def _std(raw, parameterization, min_std):
    if parameterization == "exp":
        return tf.exp(tf.clip_by_value(raw, -LOG_STD_BOUND, LOG_STD_BOUND))
    return tf.nn.softplus(raw) + min_std


class DiagonalGaussian(tfd.Independent):
    """`Independent(Normal(loc, scale), 1)` with fast reparameterised Philox sampling.

    loc, scale: `[*batch, units]`; batch shape `[*batch]`, event shape `[units]`. Its
    parameters are `loc`, `scale`, `validate_args`, `name`, so `copy()` and batch
    slicing (`d[0]`, `d[:2]`) work as for any TFP distribution.
    """

    def __init__(self, loc, scale, validate_args=False, name="DiagonalGaussian"):
        parameters = dict(locals())
        super().__init__(tfd.Normal(loc, scale, validate_args=validate_args),
                         reinterpreted_batch_ndims=1, validate_args=validate_args,
                         name=name)
        self._parameters = parameters
        self._loc, self._scale = loc, scale

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict(
            loc=tfp.util.ParameterProperties(event_ndims=1),
            scale=tfp.util.ParameterProperties(
                event_ndims=1,
                default_constraining_bijector_fn=lambda: tfp.bijectors.Softplus(
                    low=np.finfo(np.dtype(getattr(dtype, "as_numpy_dtype", dtype))).eps)))

    @property
    def loc(self):
        return self._loc

    @property
    def scale(self):
        return self._scale

    def _sample_n(self, n, seed=None):
        shape = tf.concat([[n], tf.shape(self._loc)], axis=0)
        return self._loc + self._scale * seeds.normal(shape, seed, self._loc.dtype)


class GaussianLayer(keras.layers.Layer):
    """MLP -> diagonal Gaussian `tfd.Independent(tfd.Normal(loc, std), 1)`.

    Input `[*lead, d_in]`; the distribution has batch shape `lead` and event shape
    `[units]`. std = exp(linear) (paper) or softplus(linear) + min_std.
    """

    def __init__(self, hidden_units, units, activation="tanh", std_parameterization="exp",
                 min_std=1e-4, seed=None, **kwargs):
        super().__init__(**kwargs)
        if std_parameterization not in STD_PARAMETERIZATIONS:
            raise errors.ArgumentError(f"`std_parameterization` must be one of "
                                       f"{STD_PARAMETERIZATIONS}, got "
                                       f"{std_parameterization!r}.")
        self.units = int(units)
        self.std_parameterization = std_parameterization
        self.min_std = float(min_std)
        self.mlp = MLP(hidden_units, activation, seed=_sub_seed(seed, 1), name="mlp",
                       dtype=self.dtype_policy)
        self.loc_layer = _dense(self.units, "loc", _sub_seed(seed, 2), dtype=self.dtype_policy)
        self.std_layer = _dense(self.units, "raw_std", _sub_seed(seed, 3),
                                dtype=self.dtype_policy)

    def build(self, input_shape):
        self.mlp.build(input_shape)
        d = self.mlp.hidden_units[-1] if self.mlp.hidden_units else input_shape[-1]
        self.loc_layer.build((None, d))
        self.std_layer.build((None, d))
        self.built = True

    def parameters_for(self, x):
        """Returns (loc, std), each `[*lead, units]`."""
        flat, lead = _flatten_lead(x)
        h = self.mlp(flat)
        loc = _float32(self.loc_layer(h))
        std = _std(_float32(self.std_layer(h)), self.std_parameterization, self.min_std)
        return _unflatten_lead(loc, lead), _unflatten_lead(std, lead)

    def call(self, x):
        loc, std = self.parameters_for(x)
        return DiagonalGaussian(loc, std)


# Factors (1 + exp(-|l|)), each in (1, 2], multiplied per group before one log: a group's
# product is at most 2**16, far from float32 overflow, and its rounding (<= 16 ulp) costs
# at most ~1e-6 nats per group. One log per 16 pixels instead of a log1p per pixel.
_LOG_GROUP = 16


def _row_sums(t):
    """Sum over the last axis as a matrix-vector product `[rows, d] x [d, 1]`.

    The same sums as `reduce_sum(t, -1)`; on the CPU, XLA runs a GEMV on every core, where
    its row reduction of a fused elementwise producer runs on one, so the Bernoulli
    log-probs are faster this way (timings: docs/benchmarks.md).
    """
    d = t.shape[-1]
    if d is None:
        return tf.reduce_sum(t, axis=-1)
    flat = tf.reshape(t, [-1, d])
    return tf.reshape(tf.matmul(flat, tf.ones([d, 1], t.dtype)), tf.shape(t)[:-1])


def _group_size(d):
    """The largest divisor of d that is at most `_LOG_GROUP` (1 if d is unknown)."""
    if d is None:
        return 1
    return max(g for g in range(1, _LOG_GROUP + 1) if d % g == 0)


@tf.custom_gradient
def _sum_log1p_exp_neg_abs(logits):
    """sum_j log(1 + exp(-|l_j|)) over the last axis, `[*batch, d]` -> `[*batch]`.

    Forward: the factors (1 + exp(-|l|)) are multiplied in groups of `_group_size(d)` and
    each group's product takes one log. Gradient: d/dl_j = -sign(l_j) e_j / (1 + e_j),
    e_j = exp(-|l_j|) (written out: the product's automatic gradient would need
    cumulative products).
    """
    d = logits.shape[-1]
    g = _group_size(d)
    e = tf.exp(-tf.abs(logits))
    one_e = 1. + e
    if g > 1:
        shape = tf.concat([tf.shape(logits)[:-1], [d // g, g]], axis=0)
        terms = tf.math.log(tf.reduce_prod(tf.reshape(one_e, shape), axis=-1))
    else:
        terms = tf.math.log(one_e)
    out = _row_sums(terms)

    def grad(dy):
        return -dy[..., None] * tf.sign(logits) * (e / one_e)
    return out, grad


def bernoulli_log_prob(x, logits):
    """log p(x) of independent Bernoulli pixels, summed over the last axis (nats).

    `sum_j x_j l_j - softplus(l_j)`, computed as
    `sum_j (x_j l_j - max(l_j, 0)) - sum_j log(1 + exp(-|l_j|))`: no overflow for any
    finite logit, one exp per pixel and one log per group of up to 16 pixels, row sums
    as matrix-vector products (see `_row_sums`). Agrees with the softplus form to float32
    rounding, which is relative to the size of the sum: within 1e-4 nats of a float64
    reference for log-probabilities of the size of MNIST's (~100 nats over 784 pixels),
    about 2e-7 times |log p| at large |log p| (2.3e-3 nats at 1.2e4). Real-valued x in
    [0, 1] gives the continuous relaxation.

    Args:
      x: `[*batch_x, d]` pixels (0/1, or intensities for the relaxation).
      logits: `[*batch_l, d]` logits; the batch shapes broadcast.

    Returns:
      `[*broadcast(batch_x, batch_l)]` log-probabilities in nats, in logits' dtype.
    """
    logits = tf.convert_to_tensor(logits)
    x = tf.convert_to_tensor(x, dtype=logits.dtype)
    # x l - max(l, 0), with max(l, 0) = (l + |l|) / 2 (exact in floating point).
    linear = x * logits - 0.5 * (logits + tf.abs(logits))
    return _row_sums(linear) - _sum_log1p_exp_neg_abs(logits)


class BernoulliLogits(tfd.Independent):
    """Independent Bernoulli over the last axis, with a fused, fast `log_prob`.

    `log_prob(x) = sum_j x_j l_j - softplus(l_j)` (`bernoulli_log_prob`) for x in [0, 1]
    (real-valued x gives the continuous relaxation used by the paper's code for non-binary
    pixels; with `validate_args` x must be binary, every entry 0 or 1, the Bernoulli
    support). Samples are float32 {0, 1}. logits: `[*batch, units]`; batch shape
    `[*batch]`, event shape `[units]`; parameters `logits`, `validate_args`, `name`
    (`copy()` and batch slicing work).
    """

    def __init__(self, logits, validate_args=False, name="BernoulliLogits"):
        parameters = dict(locals())
        logits = tf.convert_to_tensor(logits, dtype_hint=tf.float32)
        super().__init__(tfd.Bernoulli(logits=logits, dtype=logits.dtype,
                                       validate_args=validate_args),
                         reinterpreted_batch_ndims=1, validate_args=validate_args,
                         name=name)
        # Record this class's own parameters (not Independent's), so that `copy()` and
        # batch slicing (`d[0]`, `d[:2]`) rebuild a BernoulliLogits.
        self._parameters = parameters
        self._logits = logits

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict(logits=tfp.util.ParameterProperties(event_ndims=1))

    @property
    def logits(self):
        return self._logits

    def _sample_n(self, n, seed=None):
        shape = tf.concat([[n], tf.shape(self._logits)], axis=0)
        u = seeds.uniform(shape, seed, self._logits.dtype)
        return tf.cast(u < tf.sigmoid(self._logits), self._logits.dtype)

    def _log_prob(self, x):
        x = tf.convert_to_tensor(x, dtype=self._logits.dtype)
        if self.validate_args:
            x = assert_binary(x)
        return bernoulli_log_prob(x, self._logits)


def _in_xla_context():
    """True while tracing a function XLA compiles (`tf.function(jit_compile=True)`).

    XLA drops run-time assertions (logging "Ignoring Assert operator" at every compile),
    so the checks below build none there: the compiled training step, fused loop and
    evaluation take pixels checked where they entered (at data load, and in
    `evaluation.estimate_log_likelihood` before its batches are dispatched).
    """
    if _control_flow_util is None:  # pragma: no cover (a TensorFlow without the module)
        return False
    return _control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def assert_unit_interval(x, where=None):
    """x, checked to lie in [0, 1]: the x a Bernoulli likelihood scores.

    Binary pixels are the Bernoulli support; grey levels in [0, 1] are scored with the
    continuous relaxation x log p + (1 - x) log(1 - p). A value below 0 or above 1
    (e.g. -1, 2 or a 0-255 pixel) has no meaning there: the relaxation would return a
    number (positive "log-probabilities" of thousands of nats), so it is refused. NaN is
    not refused here (it gives a NaN log-probability); `validate_args` refuses it.

    Eager x is checked at once on the host; in a `tf.function` a run-time assertion
    checks it; inside an XLA-compiled function nothing is checked (see `_in_xla_context`).

    Args:
      x: a float Tensor (or array) of any shape.
      where: optional prefix of the message naming the entry point (e.g. `log_prob`).

    Returns:
      x as a Tensor.

    Raises:
      InvalidArgumentError: "x must be in [0, 1] for a Bernoulli likelihood ...", with
        the smallest and largest value found (eagerly, also how many lie outside).
    """
    x = tf.convert_to_tensor(x)
    message = (f"{where + ': ' if where else ''}x must be in [0, 1] for a Bernoulli "
               f"likelihood (binary pixels, or grey levels scored with the continuous "
               f"relaxation); found values outside [0, 1]:")
    if tf.executing_eagerly():
        values = x.numpy()
        outside = (values < 0) | (values > 1)
        if outside.any():
            raise tf.errors.InvalidArgumentError(
                None, None, f"{message} min {float(np.nanmin(values))!r}, max "
                            f"{float(np.nanmax(values))!r} ({int(outside.sum())} of "
                            f"{values.size} values outside).")
        return x
    if _in_xla_context():
        return x
    nan = tf.math.is_nan(x)
    inf = tf.constant(np.inf, x.dtype)
    low = tf.reduce_min(tf.where(nan, inf, x))  # NaN ignored; +inf when x is empty
    high = tf.reduce_max(tf.where(nan, -inf, x))
    ok = tf.logical_and(low >= 0., high <= 1.)
    with tf.control_dependencies([tf.debugging.Assert(ok, [message, "min", low, "max",
                                                           high])]):
        return tf.identity(x)


def assert_binary(x):
    """x, with run-time checks that every entry is 0 or 1: the Bernoulli support.

    A value outside [0, 1] (e.g. a 0-255 pixel) fails the `assert_unit_interval` check;
    a value strictly between 0 and 1 (e.g. 0.5, an unbinarised intensity, which the
    relaxation `x l - softplus(l)` would score without complaint), or NaN, fails with a
    message saying x must be binary. InvalidArgumentError in both cases. Nothing is
    checked inside an XLA-compiled function (see `_in_xla_context`).
    """
    x = assert_unit_interval(x)
    if _in_xla_context():
        return x
    inside = tf.math.logical_and(x > 0., x < 1.)
    binary = tf.math.logical_or(tf.equal(x, 0.), tf.equal(x, 1.))
    largest = tf.reduce_max(tf.where(inside, x, tf.zeros_like(x)))
    with tf.control_dependencies([tf.debugging.Assert(
            tf.reduce_all(binary),
            ["x must be binary (every pixel 0 or 1) for a Bernoulli likelihood with "
             "validate_args; found values strictly between 0 and 1 (or NaN), the largest:",
             largest,
             "(binarise the data first; without validate_args such values are scored "
             "with the continuous [0, 1] relaxation)"])]):
        return tf.identity(x)


class BernoulliLayer(keras.layers.Layer):
    """MLP -> Bernoulli logits over `units` pixels (`BernoulliLogits`)."""

    def __init__(self, hidden_units, units, activation="tanh", output_bias=None,
                 validate_args=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.validate_args = validate_args
        self.mlp = MLP(hidden_units, activation, seed=_sub_seed(seed, 1), name="mlp",
                       dtype=self.dtype_policy)
        bias_init = "zeros"
        if output_bias is not None:
            bias_init = keras.initializers.Constant(np.asarray(output_bias, np.float32))
        self.logits_layer = _dense(self.units, "logits", _sub_seed(seed, 2), bias_init,
                                   dtype=self.dtype_policy)

    def build(self, input_shape):
        self.mlp.build(input_shape)
        d = self.mlp.hidden_units[-1] if self.mlp.hidden_units else input_shape[-1]
        self.logits_layer.build((None, d))
        self.built = True

    def logits(self, z):
        flat, lead = _flatten_lead(z)
        return _unflatten_lead(_float32(self.logits_layer(self.mlp(flat))), lead)

    def call(self, z):
        return BernoulliLogits(self.logits(z), validate_args=self.validate_args)


class GaussianObservationLayer(GaussianLayer):
    """MLP -> diagonal Gaussian over continuous x (the `gaussian` likelihood)."""


def logit_of_mean(mean_pixels, eps=1e-3):
    """logit(clip(mean, eps, 1 - eps)): the paper code's decoder output-bias init."""
    m = np.clip(np.asarray(mean_pixels, np.float64), eps, 1. - eps)
    return (np.log(m) - np.log1p(-m)).astype(np.float32)
