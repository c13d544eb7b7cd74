"""The paper's IWAE/VAE model as a Keras 3 model holding TFP distributions."""

import inspect

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_iwae import checks
from tfp_iwae import errors
from tfp_iwae import latent_model
from tfp_iwae import networks
from tfp_iwae import objectives
from tfp_iwae import seeds

tfd = tfp.distributions

__all__ = ["IWAE", "LIKELIHOODS", "OBJECTIVES", "paper_architecture"]


LIKELIHOODS = ("bernoulli", "gaussian")
OBJECTIVES = ("iwae", "vae")


# (latent_units, hidden_units) of the paper's MNIST models (Burda et al., sec. 5), by
# number of stochastic layers.
_PAPER = {1: ((50,), ((200, 200),)), 2: ((100, 50), ((200, 200), (100, 100)))}


def paper_architecture(stochastic_layers):
    """(latent_units, hidden_units) of the paper's MNIST models (Burda et al., sec. 5)."""
    if stochastic_layers not in _PAPER:
        raise errors.ArgumentError(
            f"`stochastic_layers` must be 1 or 2 (the paper's architectures), got "
            f"{stochastic_layers!r}; for other depths give `latent_units` and "
            f"`hidden_units`.")
    return _PAPER[stochastic_layers]


def _architecture(stochastic_layers, latent_units, hidden_units):
    """(L, latent_units, hidden_units) of an `IWAE`, checked: L an integer >= 1, the
    paper's sizes where none are given (L = 1 or 2), one entry of each per layer."""
    stochastic_layers = checks.count(stochastic_layers, "stochastic_layers")
    if latent_units is None or hidden_units is None:
        default_latents, default_hidden = paper_architecture(stochastic_layers)
    latent_units = tuple(latent_units or default_latents)
    hidden_units = tuple(tuple(h) for h in (hidden_units or default_hidden))
    if len(latent_units) != stochastic_layers or len(hidden_units) != stochastic_layers:
        raise errors.ArgumentError(
            f"`latent_units` and `hidden_units` need one entry per stochastic layer "
            f"({stochastic_layers}), got {latent_units} and {hidden_units}.")
    return stochastic_layers, latent_units, hidden_units


def _conditional(layer, parent):
    """`layer(value of parent)`, as a function whose one argument is named `parent`:
    `tfd.JointDistributionNamed` finds a variable's parents by argument name."""
    def fn(*args, **kwargs):
        return layer(args[0] if args else kwargs[parent])
    fn.__signature__ = inspect.Signature(
        [inspect.Parameter(parent, inspect.Parameter.POSITIONAL_OR_KEYWORD)])
    return fn


def _standard_normal(units):
    return tfd.Independent(tfd.Normal(tf.zeros([units]), tf.ones([units])),
                           reinterpreted_batch_ndims=1)


class IWAE(latent_model.EstimatorFit, keras.Model):
    """Importance weighted autoencoder with L >= 1 stochastic layers of MLPs.

    Generative model p(x, z) = p(z) p(x|z) with prior `model.prior`, likelihood
    `model.decoder(z)`; inference network q(z|x) = `model.encoder(x)`. For L layers
    z = {"h1": h1, ..., "hL": hL}, p = p(hL) p(h(L-1)|hL) ... p(h1|h2) p(x|h1) and
    q = q(h1|x) q(h2|h1) ... q(hL|h(L-1)); prior and encoder are then
    `tfd.JointDistributionNamed` over that dict (one layer: z is a Tensor). The layers are
    lists (`q_layers`, `p_layers`), so one code path serves every depth.

    Args:
      stochastic_layers: L; 1 or 2 give the paper's two architectures by default, other
        depths need `latent_units` and `hidden_units`.
      input_dim: size of a flattened observation (784 for 28x28 images).
      latent_units: units per stochastic layer, bottom first; default the paper's.
      hidden_units: per stochastic layer, the deterministic hidden sizes of the network
        that maps the layer below to it (encoder order; the decoder mirrors them).
      activation: hidden activation (paper: tanh).
      likelihood: `bernoulli` (binary pixels; [0, 1] intensities are scored with the
        continuous relaxation unless `validate_args`; x outside [0, 1] is always
        refused, see `check_inputs`) or `gaussian` (continuous x).
      std_parameterization: `exp` (paper) or `softplus` for every Gaussian layer.
      min_std: floor added to softplus standard deviations.
      data_mean: optional mean training image `[input_dim]`; initialises the Bernoulli
        decoder's output bias to its logit (clipped to [1e-3, 1 - 1e-3]), as the
        paper's code does.
      validate_args: check at run time that x lies in the likelihood's support: finite,
        and for `bernoulli` binary (every pixel 0 or 1). Without it a Bernoulli model
        scores x in [0, 1] with the continuous relaxation of the paper's code.
      seed: optional int making the Glorot initialisation reproducible.
      dtype_policy: Keras dtype policy of the networks, e.g. `mixed_bfloat16` (float32
        variables, bfloat16 matmuls; distributions and bounds stay float32). None: float32.
    """

    def __init__(self, stochastic_layers=1, input_dim=784, latent_units=None,
                 hidden_units=None, activation="tanh", likelihood="bernoulli",
                 std_parameterization="exp", min_std=1e-4, data_mean=None,
                 validate_args=False, seed=None, dtype_policy=None, name="iwae", **kwargs):
        super().__init__(name=name, **kwargs)
        stochastic_layers, latent_units, hidden_units = _architecture(
            stochastic_layers, latent_units, hidden_units)
        if likelihood not in LIKELIHOODS:
            raise errors.ArgumentError(f"`likelihood` must be one of {LIKELIHOODS}, got "
                                       f"{likelihood!r}.")
        input_dim = checks.count(input_dim, "input_dim")
        self.stochastic_layers = stochastic_layers
        self.input_dim = input_dim
        self.latent_units = latent_units
        self.hidden_units = hidden_units
        self.likelihood = likelihood
        self.validate_args = validate_args
        self._config = dict(stochastic_layers=stochastic_layers, input_dim=self.input_dim,
                            latent_units=list(latent_units),
                            hidden_units=[list(h) for h in hidden_units],
                            activation=activation, likelihood=likelihood,
                            std_parameterization=std_parameterization, min_std=min_std)
        gauss = dict(activation=activation, std_parameterization=std_parameterization,
                     min_std=min_std, dtype=dtype_policy)
        self._make_layers(gauss, seed, data_mean)
        self.build((None, self.input_dim))

    def _make_layers(self, gauss, seed, data_mean):
        """The networks: `q_layers`, `p_layers` and `p_x` (`gauss`: the keyword arguments
        of every Gaussian layer; `seed`: the model's int seed or None)."""
        def sub(i):  # the initialiser seed of network i
            return seeds.sub_seed(seed, i, seeds.LAYER_SEED_STRIDE)

        depth, latent_units, hidden_units = (self.stochastic_layers, self.latent_units,
                                             self.hidden_units)
        # Inference network, bottom-up: q(h1|x), q(h2|h1), ... (initialiser seeds 1..L).
        self.q_layers = [networks.GaussianLayer(hidden_units[i], latent_units[i],
                                                name=f"q_h{i + 1}", seed=sub(i + 1), **gauss)
                         for i in range(depth)]
        # Generative network, p(h_i | h_(i+1)) for i = 1..L-1 (seeds L+1..2L-1), the
        # hidden sizes of q(h_(i+1)|h_i) mirrored. (The paper's two models keep their
        # seeds: q_h1 1, q_h2 2, p_h1 3, p_x 4.)
        self.p_layers = [networks.GaussianLayer(hidden_units[i][::-1], latent_units[i - 1],
                                                name=f"p_h{i}", seed=sub(depth + i), **gauss)
                         for i in range(1, depth)]
        x_seed = sub(4) if depth <= 2 else sub(2 * depth)
        self.p_x = self._observation_layer(gauss, x_seed, data_mean)

    def _observation_layer(self, gauss, seed, data_mean):
        """p(x | h1): the Bernoulli (output bias the logit of `data_mean`, if given) or
        the Gaussian observation network, hidden sizes those of q(h1|x) mirrored."""
        hidden = self.hidden_units[0][::-1]
        if self.likelihood != "bernoulli":
            return networks.GaussianObservationLayer(hidden, self.input_dim, name="p_x",
                                                     seed=seed, **gauss)
        bias = None if data_mean is None else networks.logit_of_mean(data_mean)
        if bias is not None and bias.shape != (self.input_dim,):
            raise errors.ArgumentError(f"`data_mean` must have shape [{self.input_dim}], "
                                       f"got {bias.shape}.")
        return networks.BernoulliLayer(hidden, self.input_dim,
                                       activation=gauss["activation"], output_bias=bias,
                                       dtype=gauss["dtype"], seed=seed, name="p_x",
                                       validate_args=self.validate_args)

    # -- Keras plumbing -------------------------------------------------------------
    def build(self, input_shape):
        for layer, d_in in zip(self.q_layers, (self.input_dim,) + self.latent_units[:-1]):
            layer.build((None, d_in))
        for layer, d_in in zip(self.p_layers, self.latent_units[1:]):
            layer.build((None, d_in))
        self.p_x.build((None, self.latent_units[0]))
        self.built = True

    def get_config(self):
        return dict(self._config)

    def call(self, x, num_samples=1):
        """The per-example IWAE bound `[batch]` (k = `num_samples`)."""
        return self.bound(x, num_samples)

    @property
    def event_shape(self):
        """The shape of one observation: `(input_dim,)` (flattened images)."""
        return (self.input_dim,)

    @property
    def encoder_variables(self):
        """Trainable variables of q(z|x)."""
        return [v for layer in self.q_layers for v in layer.trainable_variables]

    @property
    def decoder_variables(self):
        """Trainable variables of p(x, z) (the prior has none)."""
        return [v for layer in self.p_layers + [self.p_x] for v in layer.trainable_variables]

    # -- Distributions --------------------------------------------------------------
    @property
    def prior(self):
        """p(z): N(0, I) over the top layer's units (50 for the paper's one layer); for L
        layers p(hL) p(h(L-1)|hL) ... p(h1|h2) over {"h1", ..., "hL"}."""
        top = _standard_normal(self.latent_units[-1])
        if self.stochastic_layers == 1:
            return top
        parts = {f"h{i}": _conditional(layer, f"h{i + 1}")
                 for i, layer in enumerate(self.p_layers, start=1)}
        parts[f"h{self.stochastic_layers}"] = top
        return tfd.JointDistributionNamed(parts, validate_args=self.validate_args)

    @property
    def p_h1(self):
        """p(h1|h2), the first of `p_layers` (models of two or more layers)."""
        return self.p_layers[0]

    def check_inputs(self, x, validate_args=None):
        """x as a float32 Tensor `[*batch, input_dim]`, checked.

        dtype: float32 expected. Other floating dtypes (float64, float16, bfloat16) and
        bool are cast to float32 (exact for the values a pixel takes); integer dtypes
        are refused, since a uint8 image holds 0-255, which a Bernoulli likelihood would
        score as data (convert to [0, 1] and binarise first). Python numbers and lists
        are converted to float32.

        Range (Bernoulli likelihood, always): every pixel must lie in [0, 1]. Binary
        pixels are the Bernoulli support; grey levels in [0, 1] (e.g. 0.5) are scored
        with the continuous relaxation of the Bernoulli, x log p + (1 - x) log(1 - p)
        (as the paper's code scores unbinarised intensities). A value outside [0, 1]
        (e.g. -1 or 2) is refused: the relaxation would turn it into a number with no
        meaning (thousands of positive "nats"). Nothing is clipped. Eager x is checked
        at once; in a `tf.function` a run-time assertion checks it; inside an
        XLA-compiled function (`jit_compile=True`, e.g. the training step and the
        evaluation's programs, whose pixels were checked when they were loaded) XLA
        would drop the assertion, so none is built. The Gaussian likelihood has no
        range.

        Args:
          x: observations, `[*batch, input_dim]`.
          validate_args: also check at run time that x is finite and, for the
            Bernoulli likelihood, binary (every entry 0 or 1). Default: the model's
            `validate_args`.

        Raises:
          ArgumentError (a ValueError): an integer or non-numeric dtype, or a trailing
            dimension other than `input_dim` (both named with what was given).
          InvalidArgumentError: (eagerly, or at run time in a `tf.function`) Bernoulli:
            a value outside [0, 1], named with the smallest and largest value found;
            with validate_args also NaN/inf or, Bernoulli, a value strictly between 0
            and 1.
        """
        validate = self.validate_args if validate_args is None else validate_args
        x = self._as_float32(x)
        if x.shape.rank is not None and (x.shape.rank < 1 or
                                         x.shape[-1] not in (None, self.input_dim)):
            raise errors.ArgumentError(f"`x` must have shape [..., {self.input_dim}] "
                                       f"(flattened observations), got shape {x.shape}.")
        if validate:
            x = tf.debugging.assert_all_finite(x, "x must be finite (found NaN/inf)")
        if self.likelihood == "bernoulli":
            x = networks.assert_binary(x) if validate else networks.assert_unit_interval(x)
        return x

    def _as_float32(self, x):
        """x as a float32 Tensor: floating dtypes and bool cast, numbers and lists
        converted; ArgumentError for an integer or non-numeric dtype (see
        `check_inputs`)."""
        dtype = getattr(x, "dtype", None)
        if dtype is None:
            return tf.convert_to_tensor(x, dtype=tf.float32)
        try:
            dtype = tf.as_dtype(dtype)
        except TypeError:
            raise errors.ArgumentError(
                f"`x` must be float32 observations [..., {self.input_dim}], got dtype "
                f"{dtype!r}.") from None
        if not (dtype.is_floating or dtype == tf.bool):
            hint = ("Integer images (e.g. uint8 0-255) are not Bernoulli data as they "
                    "are: scale them to [0, 1] (tf.cast(x, tf.float32) / 255.) and "
                    "binarise them first." if self.likelihood == "bernoulli" else
                    "Convert x explicitly, scaled as the training data was.")
            raise errors.ArgumentError(
                f"`x` must be float32 (other floating dtypes and bool are converted), got "
                f"{dtype.name}. {hint}")
        return tf.cast(x, tf.float32)

    def encoder(self, x):
        """q(z|x) for x `[*batch, input_dim]`: batch shape `[*batch]`."""
        return self._posterior(self.check_inputs(x))

    def _posterior(self, x):
        """q(z|x) for an already checked float32 x."""
        q1 = self.q_layers[0](x)
        if self.stochastic_layers == 1:
            return q1
        parts = dict(h1=q1)
        for i, layer in enumerate(self.q_layers[1:], start=2):
            parts[f"h{i}"] = _conditional(layer, f"h{i - 1}")
        return tfd.JointDistributionNamed(parts, validate_args=self.validate_args)

    def posterior_parameters(self, x, seed=None):
        """The Gaussian parameters of q(z|x), one `(loc, scale)` pair per stochastic layer.

        Args:
          x: float32 observations `[batch, input_dim]` (any `[*batch, input_dim]`); dtype,
            trailing size and (Bernoulli) the range [0, 1] are checked as in
            `check_inputs`; binarity is not, whatever `validate_args` (grey levels are
            encoded as they are).
          seed: where each layer i + 1 >= 2's q(h(i+1)|h_i) is evaluated: None, at
            h_i = loc_i, the mean of layer i's Gaussian; else at one sample h_i = loc_i +
            scale_i * eps, eps = `seeds.normal(shape, s)` with s =
            `seeds.stateless_seed(seed)` for i = 1 and fold_in(seed, i) above (an int or a
            `[2]` stateless seed). Unused for one layer.

        Returns:
          A list, bottom layer first: `[(loc1, scale1)]` or `[(loc1, scale1), (loc2,
          scale2)]`; layer i's loc (a mean) and scale (a standard deviation, not a
          variance), in the units of z, each `[batch, latent_units[i]]`.
        """
        x = self.check_inputs(x, validate_args=False)
        loc, scale = self.q_layers[0].parameters_for(x)
        params = [(loc, scale)]
        for i, layer in enumerate(self.q_layers[1:], start=1):
            h = loc  # the layer below at its mean, or at one sample
            if seed is not None:
                s = seeds.stateless_seed(seed) if i == 1 else seeds.fold_in(seed, i)
                h = loc + scale * seeds.normal(tf.shape(loc), s)
            loc, scale = layer.parameters_for(h)
            params.append((loc, scale))
        return params

    def decoder(self, z):
        """p(x|z): z `[*lead, latent]` (or {"h1", "h2"}) -> distribution with batch `lead`."""
        h1 = z["h1"] if isinstance(z, dict) else z
        return self.p_x(h1)

    # -- Bounds ---------------------------------------------------------------------
    def log_weights(self, x, num_samples, seed=None, likelihood_block=None):
        """`log p(x, z_i) - log q(z_i|x)`, shape `[num_samples, batch]`, in nats.

        x: `[batch, input_dim]`, float32 (see `check_inputs` for dtypes and checks). For
        the Bernoulli likelihood every pixel must lie in [0, 1] (else
        InvalidArgumentError naming the smallest and largest value): binary pixels are
        scored exactly, grey levels with the continuous relaxation
        x log p + (1 - x) log(1 - p); with `validate_args` only binary pixels pass.
        likelihood_block: p(x|z) `likelihood_block` samples at a time (same draws; see
        `objectives.log_weights`).
        """
        x = self.check_inputs(x)
        return objectives.log_weights(x, prior=self.prior, likelihood_fn=self.decoder,
                                      posterior=self._posterior(x), num_samples=num_samples,
                                      seed=seed, likelihood_block=likelihood_block)

    def bound(self, x, num_samples, objective="iwae", seed=None):
        """Per-example bound `[batch]` in nats: `iwae` (L_k) or `vae` (mean log weight)."""
        if objective not in OBJECTIVES:
            raise errors.ArgumentError(f"`objective` must be one of {OBJECTIVES}, got "
                                       f"{objective!r}.")
        lw = self.log_weights(x, num_samples, seed=seed)
        return objectives.iwae_bound(lw) if objective == "iwae" else objectives.vae_bound(lw)

    def sample(self, n, seed=None, mean=False):
        """Ancestral samples x ~ p(z) p(x|z), shape `[n, input_dim]`.

        `n` is a Python int >= 0 or a scalar integer Tensor (also one only known when a
        `tf.function` runs; checked then); 0 gives an empty `[0, input_dim]` sample, as
        a TFP distribution's `sample(0)` does. With `mean=True`, returns E[x|z]
        (Bernoulli probabilities) instead of a sample.

        Raises:
          ArgumentError (a ValueError): n negative or not an integer
            (InvalidArgumentError at run time for a Tensor n known only then).
        """
        n = objectives.check_num_samples(n, "n", "the number of samples to draw",
                                         allow_tensor=True, minimum=0)
        px, seed_x = self._generate(n, seed)
        return px.mean() if mean else px.sample(seed=seed_x)

    def sample_and_mean(self, n, seed=None):
        """`(x, mean)`, each `[n, input_dim]`: x ~ p(x|z) and E[x|z] (Bernoulli
        probabilities) for the same ancestral draws z ~ p(z).

        The same numbers as `sample(n, seed)` and `sample(n, seed, mean=True)`; `n` as in
        `sample` (0: empty `[0, input_dim]` results).
        """
        n = objectives.check_num_samples(n, "n", "the number of samples to draw",
                                         allow_tensor=True, minimum=0)
        px, seed_x = self._generate(n, seed)
        return px.sample(seed=seed_x), px.mean()

    def _generate(self, n, seed):
        """(p(x|z) for z ~ p(z) `[n, ...]`, the seed of x's draw), from `seed` split in two."""
        seed_z, seed_x = seeds.split_seed(seed, 2)
        return self.decoder(self.prior.sample(n, seed=seed_z)), seed_x

    def reconstruct(self, x, seed=None):
        """E[x | z] for one z ~ q(z|x): `[batch, input_dim]`."""
        z = self.encoder(x).sample(seed=seeds.stateless_seed(seed))
        return self.decoder(z).mean()

    def checkpointable(self):
        """A `tf.train.Checkpoint` node holding every variable under its layer path.

        Keras 3 models are not tracked by `tf.train.Checkpoint` through their layer
        lists, so checkpoints hold this node (names like `q_h1.mlp.dense_0.kernel`);
        a checkpoint of another architecture then fails to restore with a clear error.
        """
        return tf.train.Checkpoint(**{
            v.path.split("/", 1)[-1].replace("/", "."): v for v in self.variables})

    def count_params_by_part(self):
        """{'encoder': n, 'decoder': n} trainable parameter counts."""
        return {"encoder": int(sum(np.prod(v.shape) for v in self.encoder_variables)),
                "decoder": int(sum(np.prod(v.shape) for v in self.decoder_variables))}
