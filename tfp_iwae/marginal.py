"""The trained model as a `tfd.Distribution` over x."""

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_iwae import latent_model
from tfp_iwae import objectives
from tfp_iwae import seeds

tfd = tfp.distributions

__all__ = ["ImportanceWeightedMarginal"]


class ImportanceWeightedMarginal(tfd.Distribution):
    """p(x) of a model (an `IWAE`, a `LatentVariableModel`, anything with the members of
    `tfp_iwae.MODEL_MEMBERS`), with `log_prob` the k-sample IWAE estimate L_k (nats).

    Event shape `[input_dim]`, batch shape `[]`. `log_prob(x)` for x `[*s, input_dim]`
    returns `[*s]`: logsumexp over k importance samples minus log k, a stochastic lower
    bound on log p(x) whose expectation increases to log p(x) as k grows. `sample(n)` is
    ancestral sampling z ~ p(z), x ~ p(x|z), `[n, input_dim]` (n = 0: an empty sample).

    For a Bernoulli model x must lie in [0, 1], always (InvalidArgumentError naming the
    smallest and largest value otherwise; nothing is clipped): binary pixels are scored
    exactly, grey levels in [0, 1] with the continuous relaxation of the Bernoulli,
    x log p + (1 - x) log(1 - p) (see `IWAE.check_inputs`). With `validate_args` only
    binary, finite pixels pass.

    Args:
      model: an `IWAE`.
      num_samples: k >= 1.
      seed: None, an int or `[2]` stateless seed used by `log_prob` (the same seed gives
        the same estimate); None draws fresh samples on every call.
      validate_args: check at run time that x lies in the likelihood's support (finite;
        Bernoulli: every pixel 0 or 1), whether or not `model` was built with
        `validate_args`. `log_prob` always checks x's dtype (float32 expected; see
        `IWAE.check_inputs`) and trailing dimension.
    """

    def __init__(self, model, num_samples=5000, seed=None, validate_args=False,
                 name="ImportanceWeightedMarginal"):
        parameters = dict(locals())
        latent_model.check_model(model, "ImportanceWeightedMarginal")
        self._model = model
        self._num_samples = objectives.check_num_samples(num_samples)
        seeds.stateless_seed(seed)  # refuses a seed of another kind now, by name
        self._seed = seed
        super().__init__(dtype=tf.float32,
                         reparameterization_type=tfd.NOT_REPARAMETERIZED,
                         validate_args=validate_args, allow_nan_stats=True,
                         parameters=parameters, name=name)

    @property
    def model(self):
        return self._model

    @property
    def num_samples(self):
        return self._num_samples

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return {}

    def _event_shape(self):
        return tf.TensorShape(latent_model.event_shape_of(self._model))

    def _event_shape_tensor(self):
        return tf.constant(latent_model.event_shape_of(self._model), tf.int32)

    def _batch_shape(self):
        return tf.TensorShape([])

    def _batch_shape_tensor(self):
        return tf.constant([], tf.int32)

    def log_prob(self, value, name="log_prob", **kwargs):
        """L_k(x) `[*s]` in nats for x `[*s, input_dim]` float32 (see the class docstring).

        x's dtype is checked here, before `tfd.Distribution.log_prob` would cast a NumPy
        array to float32: a uint8 0-255 image is refused (ArgumentError, a ValueError),
        not scored; so is (Bernoulli) a pixel outside [0, 1] (InvalidArgumentError).
        """
        return super().log_prob(self._checked(value, validate_args=False), name=name,
                                **kwargs)

    def prob(self, value, name="prob", **kwargs):
        """exp(L_k(x)) `[*s]`; x as for `log_prob`."""
        return super().prob(self._checked(value, validate_args=False), name=name, **kwargs)

    def _checked(self, x, validate_args):
        if hasattr(self._model, "check_inputs"):
            return self._model.check_inputs(x, validate_args=validate_args)
        return tf.convert_to_tensor(x, tf.float32)

    def _log_prob(self, x):
        # dtype, shape and (Bernoulli) the range [0, 1] are always checked; the support
        # (finite, Bernoulli: binary) when this distribution or its model has
        # validate_args.
        x = self._checked(x, validate_args=self.validate_args or None)
        event = latent_model.event_shape_of(self._model)
        lead = tf.shape(x)[:tf.rank(x) - len(event)]
        flat = tf.reshape(x, (-1,) + event)
        latent_model.ensure_built(self._model, flat[:1])  # no-op once built
        lw = latent_model.log_weights_of(self._model, flat, self._num_samples,
                                         seed=seeds.stateless_seed(self._seed))
        return tf.reshape(objectives.iwae_bound(lw), lead)

    def _sample_n(self, n, seed=None):
        return self._model.sample(n, seed=seed)
