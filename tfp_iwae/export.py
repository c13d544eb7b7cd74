"""SavedModel export: serving signatures that need neither tfp_iwae nor TFP to load."""

import tensorflow as tf

from tfp_iwae import latent_model
from tfp_iwae import networks
from tfp_iwae import objectives
from tfp_iwae import seeds

__all__ = ["export_saved_model"]


def _checked_rows(x, event, signature, unit_interval):
    """x, with run-time checks that its shape is [N, dim] and, if `unit_interval`, that
    every value lies in [0, 1].

    A loaded SavedModel's signature functions do not check an input's shape against
    their `TensorSpec([None, dim])` (only its dtype), so a wrong shape would reach the
    first matmul and fail there, naming a fused network node (e.g. `.../Tanh` or
    `.../BiasAdd`) instead of the input. This check runs before the networks. The range
    (a Bernoulli model's: `networks.assert_unit_interval`, named with the signature)
    is checked after the shape.
    """
    shape = tf.shape(x)
    rank = len(event) + 1
    padded = tf.concat([shape, -tf.ones([rank], tf.int32)], axis=0)  # never out of range
    ok = tf.logical_and(tf.equal(tf.size(shape), rank),
                        tf.reduce_all(tf.equal(padded[1:rank], list(event))))
    want = ", ".join(str(d) for d in event)
    with tf.control_dependencies([tf.debugging.Assert(ok, [
            f"{signature}: `x` must have shape [None, {want}] (float32, one observation "
            f"of shape [{want}] per row); got shape", shape])]):
        x = tf.identity(x)
    return networks.assert_unit_interval(x, where=signature) if unit_interval else x


class _Serving(tf.Module):
    def __init__(self, model, num_samples, seed):
        super().__init__(name="iwae_serving")
        self._model = model
        self.model_variables = list(model.variables)  # tracked for saving
        self._k = objectives.check_num_samples(num_samples)
        self._seed = seeds.stateless_seed(seed)
        event = latent_model.event_shape_of(model)
        # x in [0, 1] for the paper's Bernoulli model (a Gaussian's x has no range; a
        # LatentVariableModel checks what its own check_inputs checks).
        unit = getattr(model, "likelihood", None) == "bernoulli"
        spec = tf.TensorSpec((None,) + event, tf.float32, name="x")

        @tf.function(input_signature=[spec])
        def log_prob(x):
            x = _checked_rows(x, event, "log_prob", unit)
            lw = latent_model.log_weights_of(self._model, x, self._k, seed=self._seed)
            return {"log_prob": objectives.iwae_bound(lw)}

        @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="n")])
        def sample(n):
            with tf.control_dependencies([tf.debugging.Assert(
                    n >= 0, ["sample: `n` must be >= 0 (the number of samples), got", n])]):
                n = tf.identity(n)
            x, mean = self._model.sample_and_mean(n, seed=self._seed)
            return {"x": x, "mean": mean}

        @tf.function(input_signature=[spec])
        def encode(x):
            x = _checked_rows(x, event, "encode", unit)
            params = self._model.posterior_parameters(x)  # layer i+1 at h_i's mean
            loc, scale = params[0]
            out = {"h1_mean": loc, "h1_stddev": scale}
            for i, (loc, scale) in enumerate(params[1:], start=2):
                out[f"h{i}_mean_given_h{i - 1}_mean"] = loc
                out[f"h{i}_stddev_given_h{i - 1}_mean"] = scale
            return out

        self.log_prob, self.sample, self.encode = log_prob, sample, encode


def export_saved_model(model, path, num_samples=1000, seed=0):
    """Writes a SavedModel with signatures `log_prob(x)`, `sample(n)`, `encode(x)`.

    - `log_prob(x [N, 784] float32) -> {"log_prob": [N]}`: L_k in nats, k = `num_samples`
      fixed at export, importance samples drawn with the fixed stateless `seed`.
    - `sample(n int32) -> {"x": [n, 784] binary, "mean": [n, 784] Bernoulli means}`.
    - `encode(x) -> {"h1_mean", "h1_stddev"}` (+ `h<i>_mean_given_h<i-1>_mean` and
      `h<i>_stddev_given_h<i-1>_mean`, layer i at the mean of layer i - 1, for deeper
      models).

    Load with plain `tf.saved_model.load(path).signatures["log_prob"](x=...)`. x must be
    float32 `[N, 784]` (`input_dim` columns): another shape fails with an
    InvalidArgumentError naming the signature and the expected `[None, 784]`, another
    dtype with TensorFlow's message that a float tensor was expected; n must be >= 0
    (0: empty `[0, 784]` results).

    For a Bernoulli model (`likelihood="bernoulli"`) `log_prob` and `encode` refuse x
    outside [0, 1] (InvalidArgumentError naming the signature, the range and the
    smallest and largest value found; nothing is clipped): binary pixels are scored
    exactly, grey levels in [0, 1] with the continuous relaxation of the Bernoulli,
    x log p + (1 - x) log(1 - p), as `IWAE.log_weights` scores them. A model built with
    `validate_args` also makes `log_prob` refuse non-binary or non-finite x.
    """
    latent_model.check_model(model, "export_saved_model",
                             tuple(latent_model.MODEL_MEMBERS) + ("sample_and_mean",
                                                                  "posterior_parameters"))
    latent_model.ensure_built(model, tf.zeros((1,) + latent_model.event_shape_of(model)))
    module = _Serving(model, num_samples, seed)
    tf.saved_model.save(module, path, signatures={
        "log_prob": module.log_prob, "sample": module.sample, "encode": module.encode,
        "serving_default": module.log_prob})
    return path
