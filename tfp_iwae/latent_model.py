"""Your own model: `LatentVariableModel` from Keras networks, and what every tool needs.

A model is anything with the members of `MODEL_MEMBERS`: `prior` (p(z), a
`tfd.Distribution`), `encoder(x)` (q(z|x)), `decoder(z)` (p(x|z)), `encoder_variables`,
`decoder_variables` (two disjoint lists) and `event_shape` (the shape of one x, e.g.
`[28, 28, 1]`). `tfp_iwae.IWAE` (the paper's model) is one; `LatentVariableModel` makes
one from networks you write for `[batch, ...]` inputs:

    encoder = keras.Sequential([keras.layers.Conv2D(32, 3, 2, activation="relu"), ...,
                                keras.layers.Dense(2 * 16)])   # loc and raw scale
    decoder = keras.Sequential([keras.layers.Dense(7 * 7 * 32, activation="relu"), ...,
                                keras.layers.Conv2DTranspose(1, 3, padding="same")])
    model = tfp_iwae.LatentVariableModel(encoder, decoder)   # N(0, I) prior over 16
    model.compile(optimizer=tfp_iwae.make_optimizer(1e-3), estimator="dreg",
                  num_samples=5)
    model.fit(images_dataset, epochs=10, callbacks=[keras.callbacks.TensorBoard(...)])

The sample axis is folded into the batch for your networks and unfolded after: the
decoder sees z `[k * batch, 16]`, its output comes back as `[k, batch, 28, 28, 1]`, and
every tool (bounds, estimators, `make_train_step`, `estimate_log_likelihood`,
`ImportanceWeightedMarginal`, `active_units`, SavedModel export, Keras `fit`) works with
images in their own shape. Bounds are in nats; log weights are `[num_samples, batch]`.
"""

import numpy as np
import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_iwae import errors
from tfp_iwae import estimators
from tfp_iwae import networks
from tfp_iwae import objectives
from tfp_iwae import seeds

tfd = tfp.distributions

__all__ = ["LatentVariableModel", "EstimatorFit", "MODEL_MEMBERS", "check_model", "event_shape_of",
           "ensure_built", "log_weights_of", "checked_inputs",
           "DISTRIBUTION_HEADS"]

# What every tool needs of a model, and what each member is.
MODEL_MEMBERS = {
    "prior": "p(z), a tfd.Distribution over z",
    "encoder": "a method x [batch, *event_shape] -> q(z|x), a tfd.Distribution with batch "
               "shape [batch]",
    "decoder": "a method z [*lead, *latent] -> p(x|z), a tfd.Distribution with batch shape "
               "[*lead] and event shape event_shape",
    "encoder_variables": "the trainable variables of q(z|x) (a list)",
    "decoder_variables": "the trainable variables of p(x, z) (a list, disjoint from "
                         "encoder_variables)",
    "event_shape": "the shape of one observation x, e.g. [28, 28, 1]",
}


def check_model(model, what, members=tuple(MODEL_MEMBERS)):
    """Raises ArgumentTypeError (a TypeError) naming every member of `members` that
    `model` lacks (`what`: the tool that needs them)."""
    missing = [m for m in members if not _has_member(model, m)]
    if missing:
        raise errors.ArgumentTypeError(
            f"{what} needs a model with " + "; ".join(
                f"`{m}` ({MODEL_MEMBERS.get(m, 'see its docstring')})" for m in missing)
            + f"; {type(model).__name__} has no " + ", ".join(f"`{m}`" for m in missing)
            + ". tfp_iwae.LatentVariableModel(encoder, decoder) makes one from networks.")


def _has_member(obj, name):
    """Whether obj has attribute `name`, without evaluating a property (one that is not
    ready yet, such as an unbuilt model's default prior, raises)."""
    return hasattr(type(obj), name) or name in getattr(obj, "__dict__", {})


def event_shape_of(model):
    """The shape of one observation of `model` as a tuple of ints (`event_shape`, or
    `(input_dim,)` for models that only state that)."""
    shape = getattr(model, "event_shape", None)
    if shape is None and hasattr(model, "input_dim"):
        shape = (model.input_dim,)
    if shape is None:
        raise errors.ArgumentError(f"{type(model).__name__} has no event shape yet: build "
                                   f"it first (model.build_from(x) with a batch of data, or "
                                   f"call it once).")
    return tuple(int(d) for d in shape)


def ensure_built(model, x):
    """Builds a model whose networks have no weights yet from a batch x (`build_from`);
    models built already (or without `build_from`) are left as they are."""
    if hasattr(model, "build_from") and not getattr(model, "built", True):
        model.build_from(x)


def log_weights_of(model, x, num_samples, seed=None, likelihood_block=None):
    """`model.log_weights(...)` if the model has it, else the log weights of its
    `prior`, `encoder` and `decoder` (`objectives.log_weights`): `[num_samples, batch]`
    in nats."""
    if hasattr(model, "log_weights"):
        return model.log_weights(x, num_samples, seed=seed, likelihood_block=likelihood_block)
    x = checked_inputs(model, x)
    q = model.encoder(x)
    return objectives.log_weights(x, prior=model.prior, likelihood_fn=model.decoder,
                                  posterior=q, num_samples=num_samples, seed=seed,
                                  likelihood_block=likelihood_block)


def checked_inputs(model, x):
    """x through the model's `check_inputs` if it has one, else as a float32 Tensor."""
    if hasattr(model, "check_inputs"):
        return model.check_inputs(x)
    return tf.convert_to_tensor(x, tf.float32)


def _gaussian_head(params):
    """q(z|x) from an encoder output `[..., 2 * d]`: loc and std = exp(raw) (clipped as
    the paper's layers, `networks.LOG_STD_BOUND`), a diagonal Gaussian over d units."""
    loc, raw = tf.split(tf.cast(params, tf.float32), 2, axis=-1)
    scale = tf.exp(tf.clip_by_value(raw, -networks.LOG_STD_BOUND, networks.LOG_STD_BOUND))
    return networks.DiagonalGaussian(loc, scale)


def _bernoulli_head(logits, event_ndims):
    """p(x|z) from decoder logits shaped like x: independent Bernoulli pixels, scored by
    `networks.BernoulliLogits` (grey levels in [0, 1] by the continuous relaxation)."""
    logits = tf.cast(logits, tf.float32)
    return tfd.Independent(tfd.Bernoulli(logits=logits),
                           reinterpreted_batch_ndims=event_ndims)


# Names of the distribution heads a network's Tensor output can be turned into.
DISTRIBUTION_HEADS = ("gaussian", "bernoulli")


class _Unfolded(tfd.BatchReshape):
    """A folded distribution (batch `[n]`) seen with batch shape `[*lead]`; `log_prob`
    broadcasts its argument to the full batch first (e.g. x `[batch, *event]` against
    samples `[k, batch]`), as a distribution with that batch shape would."""

    def _log_prob(self, x):
        full = tf.concat([self.batch_shape_tensor(), self.event_shape_tensor()], axis=0)
        x = tf.broadcast_to(x, tf.broadcast_dynamic_shape(tf.shape(x), full))
        return super()._log_prob(x)


def _fold(t, event_ndims):
    """t `[*lead, *event]` -> (`[prod(lead), *event]`, lead shape Tensor)."""
    shape = tf.shape(t)
    rank = tf.rank(t) if t.shape.rank is None else t.shape.rank
    lead = shape[:rank - event_ndims]
    event = shape[rank - event_ndims:]
    folded = tf.reshape(t, tf.concat([[-1], event], axis=0))
    if t.shape.rank is not None:
        folded.set_shape([None] + t.shape[t.shape.rank - event_ndims:].as_list())
    return folded, lead


def _unfold_output(out, lead, head):
    """A network's output for folded inputs, back to the leading shape `lead`: a Tensor
    (reshaped, then `head(t)`), or a Distribution with batch `[n]` (`_Unfolded`)."""
    if isinstance(out, tfd.Distribution):
        if out.batch_shape.rank is not None and out.batch_shape.rank != 1:
            raise errors.ArgumentError(f"a network returning a distribution must give it "
                                       f"batch shape [batch] for inputs [batch, ...], got "
                                       f"{out.batch_shape}.")
        return _Unfolded(out, lead)
    out = tf.convert_to_tensor(out)
    rest = tf.shape(out)[1:]
    t = tf.reshape(out, tf.concat([lead, rest], axis=0))
    return head(t)


class EstimatorFit:
    """Keras `compile`/`fit`/`evaluate` for a Keras model with the members of
    `MODEL_MEMBERS` (and `check_inputs`): `fit` trains it with the package's gradient
    estimators (mixed into `LatentVariableModel` and `IWAE`)."""

    def compile(self, optimizer="adam", *, estimator="iwae", num_samples=5, seed=0,
                **kwargs):
        """Keras `compile` with the package's gradient estimator: `fit` trains with
        `estimator` (a name of `tfp_iwae.ESTIMATOR_NAMES`) at k = `num_samples`, step s
        drawing with the stateless seed fold_in(seed, s) (as `make_train_step` with
        `step.step_seed`), and reports `loss` (minus the estimator's bound), `bound`,
        `iwae_bound` (L_k), `elbo` and `ess` (batch means, nats) in History and to Keras
        callbacks (TensorBoard among them). `evaluate` gives L_k, ELBO and ESS at that k.
        No `loss=` is needed (or taken)."""
        if "loss" in kwargs:
            raise errors.ArgumentError("compile: the loss is the estimator's bound; pass "
                                       "`estimator=` and `num_samples=`, not `loss=`.")
        k = objectives.check_num_samples(num_samples)
        est = estimators.get_estimator(estimator, k)
        self._fit_settings = dict(estimator=est, num_samples=k,
                                  seed=seeds.stateless_seed(seed))
        kwargs.setdefault("jit_compile", True)
        super().compile(optimizer=optimizer, **kwargs)
        # Set past Keras' attribute tracking: a built model (IWAE) takes no new state,
        # and the running means are no part of the model's weights or checkpoints.
        object.__setattr__(self, "_trackers", {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", "bound", "iwae_bound", "elbo", "ess")})

    def get_compile_config(self):
        """Keras' compile config plus `estimator` (its canonical name), `num_samples` and
        `seed` (as `[2]` ints), so that a `.keras` file loads compiled as it was saved."""
        config = super().get_compile_config()
        settings = getattr(self, "_fit_settings", None)
        if config and settings is not None:
            config = dict(config, estimator=settings["estimator"].name,
                          num_samples=settings["num_samples"],
                          seed=(None if settings["seed"] is None else
                                [int(v) for v in np.asarray(settings["seed"])]))
        return config

    def compile_from_config(self, config):
        """Compiles from `get_compile_config()`'s dict (Keras calls it on `.keras` load)."""
        config = keras.saving.deserialize_keras_object(config)
        for unused in ("loss", "loss_weights", "metrics", "weighted_metrics"):
            if config.get(unused) is None:
                config.pop(unused, None)
        self.compile(**config)
        if self.built:  # the slots in the order `train_step` applies gradients
            self.optimizer.build(list(self.decoder_variables) + list(self.encoder_variables))

    def fit(self, x=None, *args, **kwargs):
        """Keras `fit`; networks without weights are first built from x's first batch
        (Keras' BackupAndRestore, among others, needs a built model)."""
        self._build_from_data(x)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        """Keras `evaluate`: L_k, ELBO and ESS at the compiled k (and `loss` = -L_k)."""
        self._build_from_data(x)
        return super().evaluate(x, *args, **kwargs)

    def _build_from_data(self, x):
        if self.built or x is None or not hasattr(self, "build_from"):
            return
        if isinstance(x, tf.data.Dataset):
            x = next(iter(x.take(1)))
            x = x[0] if isinstance(x, (tuple, list)) else x
        elif isinstance(x, (tuple, list)):
            x = x[0]
        if hasattr(x, "shape") and len(x.shape) >= 1:
            self.build_from(x[:1])

    @property
    def metrics(self):
        return list(getattr(self, "_trackers", {}).values())

    def _fit_batch(self, data):
        if isinstance(data, (tuple, list)):
            data = data[0]
        if getattr(self, "_fit_settings", None) is None:
            raise errors.ArgumentError("call model.compile(optimizer=..., estimator=..., "
                                       "num_samples=...) before fit/evaluate.")
        return self.check_inputs(data)

    def _report(self, bound, log_weights):
        values = objectives.step_metrics(bound, log_weights)
        for name, value in values.items():
            self._trackers[name].update_state(value)
        return {name: t.result() for name, t in self._trackers.items()}

    def train_step(self, data):
        x = self._fit_batch(data)
        s = self._fit_settings
        step_seed = seeds.fold_in(s["seed"], self.optimizer.iterations)
        dec_vars, enc_vars = self.decoder_variables, self.encoder_variables
        out = estimators.estimator_gradients(
            s["estimator"], x, prior=self.prior, likelihood_fn=self.decoder,
            posterior_fn=self.encoder, encoder_variables=enc_vars,
            decoder_variables=dec_vars, num_samples=s["num_samples"], seed=step_seed)
        grads = list(out["decoder_grads"]) + list(out["encoder_grads"])
        self.optimizer.apply(grads, dec_vars + enc_vars)
        return self._report(out["bound"], tf.stop_gradient(out["log_weights"]))

    def test_step(self, data):
        x = self._fit_batch(data)
        s = self._fit_settings
        lw = self.log_weights(x, s["num_samples"], seed=s["seed"])
        return self._report(objectives.iwae_bound(lw), lw)


class LatentVariableModel(EstimatorFit, keras.Model):
    """p(z) p(x|z) and q(z|x) from your own networks (see the module docstring).

    Args:
      encoder: a Keras layer or model (or any callable) for x `[batch, *event_shape]`,
        returning a Tensor `[batch, 2 * d]` (turned into q(z|x) by `encoder_head`) or a
        `tfd.Distribution` over z with batch shape `[batch]`.
      decoder: likewise for z `[batch, *latent_shape]`, returning a Tensor (e.g. logits
        `[batch, *event_shape]`, turned into p(x|z) by `decoder_head`) or a
        `tfd.Distribution` over x with batch shape `[batch]`.
      prior: p(z), a `tfd.Distribution` (its trainable variables, if any, count as the
        decoder's). Default: a standard normal over q(z|x)'s event shape.
      encoder_head: `gaussian` (loc and std = exp(raw) from the two halves of the last
        axis) or a callable Tensor -> distribution (leading axes `[*lead]` restored).
      decoder_head: `bernoulli` (logits shaped like x; [0, 1] grey levels scored by the
        continuous relaxation x log p + (1 - x) log(1 - p)), or a callable.
      event_shape: the shape of one x; default: taken from the first batch.

    Networks that have no weights yet are built from the first batch (`build_from(x)`;
    `fit`, `make_train_step` and the other tools call it), as Keras builds layers.
    """

    def __init__(self, encoder, decoder, prior=None, *, encoder_head="gaussian",
                 decoder_head="bernoulli", event_shape=None, name="latent_variable_model",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        for label, net in (("encoder", encoder), ("decoder", decoder)):
            if not callable(net):
                raise errors.ArgumentTypeError(
                    f"`{label}` must be a Keras layer or model (or a callable), got "
                    f"{type(net).__name__}.")
        self.encoder_network, self.decoder_network = encoder, decoder
        self._encoder_head = self._head(encoder_head, "encoder_head")
        self._decoder_head_spec = decoder_head
        self._decoder_head = self._head(decoder_head, "decoder_head")
        self._prior = prior
        self._event_shape = None if event_shape is None else tuple(int(d) for d in event_shape)

    @staticmethod
    def _head(spec, label):
        if callable(spec):
            return spec
        if spec == "gaussian":
            return _gaussian_head
        if spec == "bernoulli":
            return spec  # needs the event rank: made in decoder()
        raise errors.ArgumentError(f"`{label}` must be one of {DISTRIBUTION_HEADS} or a "
                                   f"callable, got {spec!r}.")

    # -- shapes and building -----------------------------------------------------------
    @property
    def event_shape(self):
        """The shape of one observation x (a tuple), once known."""
        return self._event_shape

    @property
    def latent_shape(self):
        """The event shape of z (a tuple), once the prior is known."""
        return tuple(self.prior.event_shape.as_list())

    def build_from(self, x):
        """Builds the networks (and the default prior) from a batch x `[batch,
        *event_shape]`: runs the encoder on it and the decoder on one sample."""
        x = tf.convert_to_tensor(x, tf.float32)
        if self._event_shape is None:
            self._event_shape = tuple(int(d) for d in x.shape[1:])
        q = self.encoder(x[:1])
        self.decoder(q.sample(seed=seeds.stateless_seed(0)))
        self.built = True

    def build(self, input_shape):
        self.build_from(tf.zeros([1] + list(input_shape[1:]), tf.float32))

    # -- the model's distributions -------------------------------------------------------
    @property
    def prior(self):
        """p(z); by default N(0, I) over q(z|x)'s event shape (known once built)."""
        if self._prior is None:
            raise errors.ArgumentError("the default prior takes q(z|x)'s event shape: build "
                                       "the model first (model.build_from(x) with a batch of "
                                       "data).")
        return self._prior

    def check_inputs(self, x, validate_args=None):
        """x as float32 `[*batch, *event_shape]`; ArgumentError for integer dtypes or a
        trailing shape other than `event_shape`."""
        dtype = getattr(x, "dtype", None)
        if dtype is not None:
            try:
                dtype = tf.as_dtype(dtype)
            except TypeError:
                raise errors.ArgumentError(f"`x` must be float32 observations, got dtype "
                                           f"{dtype!r}.") from None
            if not (dtype.is_floating or dtype == tf.bool):
                raise errors.ArgumentError(f"`x` must be float32 observations, got "
                                           f"{dtype.name} (scale integer images to [0, 1] "
                                           f"first).")
        x = tf.cast(x, tf.float32)
        shape = self._event_shape
        if shape is not None and x.shape.rank is not None:
            tail = x.shape[x.shape.rank - len(shape):] if x.shape.rank >= len(shape) else None
            if tail is None or not tail.is_compatible_with(shape):
                raise errors.ArgumentError(f"`x` must have shape "
                                           f"[..., {', '.join(map(str, shape))}] "
                                           f"(event_shape), got {x.shape}.")
        return x

    def encoder(self, x):
        """q(z|x) for x `[*lead, *event_shape]`: batch shape `[*lead]`."""
        if self._event_shape is None:
            x = tf.convert_to_tensor(x, tf.float32)
            self._event_shape = tuple(int(d) for d in x.shape[1:])
        x = self.check_inputs(x)
        folded, lead = _fold(x, len(self._event_shape))
        q = _unfold_output(self.encoder_network(folded), lead, self._encoder_head)
        if self._prior is None:  # N(0, I) over z's event shape, made once
            shape = q.event_shape.as_list()
            self._prior = tfd.Independent(tfd.Normal(tf.zeros(shape), tf.ones(shape)),
                                          reinterpreted_batch_ndims=len(shape))
        return q

    def decoder(self, z):
        """p(x|z) for z `[*lead, *latent_shape]`: batch shape `[*lead]`, event shape
        `event_shape`."""
        folded, lead = _fold(tf.convert_to_tensor(z), len(self.latent_shape))
        head = self._decoder_head
        if head == "bernoulli":
            ndims = len(self._event_shape) if self._event_shape is not None else 1
            head = lambda logits: _bernoulli_head(logits, ndims)  # noqa: E731
        return _unfold_output(self.decoder_network(folded), lead, head)

    @property
    def encoder_variables(self):
        """Trainable variables of q(z|x)."""
        return list(_trainable(self.encoder_network))

    @property
    def decoder_variables(self):
        """Trainable variables of p(x|z) and of the prior (if it has any)."""
        prior = list(_trainable(self._prior)) if self._prior is not None else []
        return list(_trainable(self.decoder_network)) + prior

    # -- bounds, samples -----------------------------------------------------------------
    def log_weights(self, x, num_samples, seed=None, likelihood_block=None):
        """`log p(x, z_i) - log q(z_i|x)`, `[num_samples, batch]` in nats, z_i ~ q(z|x)."""
        x = self.check_inputs(x)
        q = self.encoder(x)  # first: it makes the default prior
        return objectives.log_weights(x, prior=self.prior, likelihood_fn=self.decoder,
                                      posterior=q, num_samples=num_samples,
                                      seed=seed, likelihood_block=likelihood_block)

    def bound(self, x, num_samples, objective="iwae", seed=None):
        """Per-example bound `[batch]` in nats: `iwae` (L_k) or `vae` (mean log weight)."""
        lw = self.log_weights(x, num_samples, seed=seed)
        if objective not in ("iwae", "vae"):
            raise errors.ArgumentError(f"`objective` must be iwae or vae, got {objective!r}.")
        return objectives.iwae_bound(lw) if objective == "iwae" else objectives.vae_bound(lw)

    def call(self, x, num_samples=1):
        """The per-example IWAE bound `[batch]` at k = `num_samples` (nats)."""
        return self.bound(x, num_samples)

    def sample(self, n, seed=None, mean=False):
        """Ancestral samples x ~ p(z) p(x|z), `[n, *event_shape]` (E[x|z] with `mean`)."""
        n = objectives.check_num_samples(n, "n", "the number of samples to draw",
                                         allow_tensor=True, minimum=0)
        seed_z, seed_x = seeds.split_seed(seed, 2)
        px = self.decoder(self.prior.sample(n, seed=seed_z))
        return px.mean() if mean else px.sample(seed=seed_x)

    def sample_and_mean(self, n, seed=None):
        """`(x, E[x|z])`, each `[n, *event_shape]`, for the same z ~ p(z)."""
        n = objectives.check_num_samples(n, "n", "the number of samples to draw",
                                         allow_tensor=True, minimum=0)
        seed_z, seed_x = seeds.split_seed(seed, 2)
        px = self.decoder(self.prior.sample(n, seed=seed_z))
        return px.sample(seed=seed_x), px.mean()

    def reconstruct(self, x, seed=None):
        """E[x|z] for one z ~ q(z|x): `[batch, *event_shape]`."""
        z = self.encoder(x).sample(seed=seeds.stateless_seed(seed))
        return self.decoder(z).mean()

    def posterior_parameters(self, x, seed=None):
        """`[(mean, stddev)]` of q(z|x), each `[batch, *latent_shape]` (one stochastic
        layer; `active_units` reads the mean)."""
        q = self.encoder(x)
        return [(q.mean(), q.stddev())]

    def checkpointable(self):
        """A `tf.train.Checkpoint` node holding every variable under its path."""
        return tf.train.Checkpoint(**{
            v.path.replace("/", "."): v for v in self.weights})

    def get_config(self):
        return {"encoder": keras.saving.serialize_keras_object(self.encoder_network),
                "decoder": keras.saving.serialize_keras_object(self.decoder_network),
                "decoder_head": self._decoder_head_spec if isinstance(
                    self._decoder_head_spec, str) else "bernoulli",
                "event_shape": list(self._event_shape) if self._event_shape else None,
                "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        decoder = keras.saving.deserialize_keras_object(config.pop("decoder"))
        model = cls(encoder, decoder, **config)
        if model.event_shape is not None:
            model.build_from(tf.zeros((1,) + model.event_shape))
        return model


def _trainable(obj):
    """The trainable variables of a Keras layer, a tf.Module or a distribution."""
    if obj is None:
        return []
    if isinstance(obj, keras.layers.Layer):
        return obj.trainable_variables
    return getattr(obj, "trainable_variables", ())


# Keras saves and loads the model by this name (`.keras` files).
keras.saving.register_keras_serializable(package="tfp_iwae")(LatentVariableModel)
