"""Inputs outside what a function can score are refused by name, not turned into numbers
(issue #29): Bernoulli pixels outside [0, 1], integer log weights, non-integer seeds;
and `sample(0)` is an empty sample, as for a TFP distribution."""

import numpy as np
import pytest
import tensorflow as tf

import tfp_iwae
from tfp_iwae import evaluation, export, networks, objectives, seeds

D = 784
OUTSIDE = r"x must be in \[0, 1\] for a Bernoulli likelihood .*continuous relaxation"


def _binary(n, seed=0):
    return (np.random.RandomState(seed).rand(n, D) < 0.3).astype(np.float32)


def _out_of_range(low, high):
    """Two rows of binary pixels with one pixel at `low` and one at `high`."""
    x = _binary(2)
    x[0, 3], x[1, 5] = low, high
    return x


@pytest.fixture(scope="module")
def model():
    return tfp_iwae.IWAE(1, seed=0)


# -- 1. Bernoulli pixels outside [0, 1] ---------------------------------------------------
@pytest.mark.parametrize("low,high", [(-1., 1.), (0., 2.), (-1., 2.), (0., 255.),
                                      (-np.inf, 1.), (0., np.inf)])
def test_library_refuses_bernoulli_pixels_outside_unit_interval_eagerly(model, low, high):
    # -1 and 2 used to get log weights of +5744 / -3376 "nats" (the relaxation x l -
    # softplus(l) takes any x). Refused eagerly by log_weights, bound, the encoder,
    # posterior_parameters, reconstruct and the marginal's log_prob/prob, naming x, the
    # range [0, 1] and the smallest and largest value found.
    x = _out_of_range(low, high)
    outside = int(low < 0) + int(high > 1)
    found = rf"min {float(low)!r}, max {float(high)!r} \({outside} of {2 * D} values outside\)"
    p_x = tfp_iwae.ImportanceWeightedMarginal(model, num_samples=3, seed=0)
    calls = {"log_weights": lambda v: model.log_weights(v, 3, seed=0),
             "bound": lambda v: model.bound(v, 3, seed=0), "encoder": model.encoder,
             "posterior_parameters": model.posterior_parameters,
             "reconstruct": lambda v: model.reconstruct(v, seed=0),
             "marginal.log_prob": p_x.log_prob, "marginal.prob": p_x.prob}
    for name, call in calls.items():
        for value in (x, tf.constant(x)):
            with pytest.raises(tf.errors.InvalidArgumentError,
                               match=rf"{OUTSIDE}.*{found}"):
                call(value)
                pytest.fail(f"{name} scored x in [{low}, {high}]")


def test_library_refuses_pixels_outside_unit_interval_inside_tf_function(model):
    # In a tf.function (shape unknown at trace time) the check runs with the graph.
    lw = tf.function(lambda x: model.log_weights(x, 2, seed=0),
                     input_signature=[tf.TensorSpec([None, D], tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"{OUTSIDE}.*\[min\] \[-1\] \[max\] \[2\]"):
        lw(tf.constant(_out_of_range(-1., 2.)))
    np.testing.assert_allclose(lw(tf.constant(_binary(2))).numpy(),
                               model.log_weights(_binary(2), 2, seed=0).numpy(), rtol=1e-6)


def test_grey_levels_are_scored_with_the_continuous_relaxation(model):
    # Grey levels in [0, 1] (0 and 1 included) keep working without validate_args: the
    # relaxation x log p + (1 - x) log(1 - p) of the Bernoulli. NaN is not refused by the
    # always-on range check (it scores NaN); validate_args refuses it.
    x = np.random.RandomState(1).rand(2, D).astype(np.float32)
    x[0, :2] = 0., 1.
    assert np.all(np.isfinite(model.log_weights(x, 2, seed=0).numpy()))
    p_x = tfp_iwae.ImportanceWeightedMarginal(model, num_samples=2, seed=0)
    assert np.all(np.isfinite(p_x.log_prob(x).numpy()))
    logits = np.linspace(-5., 5., D).astype(np.float32)
    p = 1. / (1. + np.exp(-logits.astype(np.float64)))
    want = np.sum(x * np.log(p) + (1. - x) * np.log1p(-p), axis=-1)
    np.testing.assert_allclose(networks.BernoulliLogits(logits).log_prob(x).numpy(), want,
                               rtol=1e-5)
    assert np.all(np.isnan(model.log_weights(np.full([1, D], np.nan, np.float32), 2,
                                             seed=0).numpy()))
    strict = tfp_iwae.IWAE(1, seed=0, validate_args=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="x must be binary"):
        strict.log_weights(x, 2, seed=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="x must be finite"):
        strict.log_weights(np.full([1, D], np.nan, np.float32), 2, seed=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="x must be binary"):
        networks.BernoulliLogits(logits, validate_args=True).log_prob(
            np.full([D], np.nan, np.float32))


def test_gaussian_likelihood_has_no_range(model):
    gauss = tfp_iwae.IWAE(1, seed=0, likelihood="gaussian")
    lw = gauss.log_weights(_out_of_range(-1., 2.), 2, seed=0)
    assert np.all(np.isfinite(lw.numpy()))


@pytest.mark.parametrize("decoder_matmuls", ["xla", "tensorflow"])
def test_estimate_log_likelihood_refuses_pixels_outside_unit_interval(model,
                                                                      decoder_matmuls):
    # Its compiled programs cannot check x (XLA drops assertions): the array, or each
    # batch of a Dataset, is checked before it is dispatched.
    x = _out_of_range(-1., 2.)
    for data in (x, tf.data.Dataset.from_tensor_slices(x).batch(2)):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"{OUTSIDE}.*min -1\.0, max 2\.0"):
            evaluation.estimate_log_likelihood(model, data, 2, seed=0,
                                               decoder_matmuls=decoder_matmuls)
    got = evaluation.estimate_log_likelihood(model, _binary(2), 2, seed=0,
                                             decoder_matmuls=decoder_matmuls)
    assert got.shape == (2,) and np.all(np.isfinite(got))


def test_xla_compiled_functions_build_no_range_assertion(model):
    # XLA drops run-time assertions ("Ignoring Assert operator" at every compile), so
    # inside jit_compile=True none is built: the compiled training step and evaluation
    # (which take pixels checked when loaded) compile as before and give the same
    # numbers; a plain tf.function holds the assertion.
    spec = [tf.TensorSpec([2, D], tf.float32)]

    def fn(x):
        return model.log_weights(x, 2, seed=0)

    def names(jit):
        graph = tf.function(fn, jit_compile=jit).get_concrete_function(*spec).graph
        return [op.name for op in graph.get_operations()]

    assert not any("Assert" in n for n in names(True))
    assert any("Assert" in n for n in names(False))
    x = tf.constant(_binary(2))
    np.testing.assert_allclose(tf.function(fn, jit_compile=True)(x).numpy(),
                               fn(x).numpy(), rtol=1e-4, atol=1e-3)


def test_saved_model_signatures_refuse_pixels_outside_unit_interval(model, tmp_path):
    # The exported log_prob returned +5744 / -3376 for pixels -1 / 2; log_prob and encode
    # now refuse them naming the signature, x, [0, 1] and the min/max found; grey levels
    # are scored (the relaxation) and encoded.
    path = export.export_saved_model(model, str(tmp_path / "sm"), num_samples=3, seed=0)
    loaded = tf.saved_model.load(path)
    for name in ("log_prob", "encode"):
        for low, high in ((-1., 1.), (0., 2.)):
            with pytest.raises(tf.errors.InvalidArgumentError,
                               match=rf"{name}: {OUTSIDE}.*\[min\] \[{low:g}\] \[max\] "
                                     rf"\[{high:g}\]"):
                loaded.signatures[name](x=tf.constant(_out_of_range(low, high)))
    grey = tf.fill([2, D], 0.5)
    np.testing.assert_allclose(
        loaded.signatures["log_prob"](x=grey)["log_prob"].numpy(),
        objectives.iwae_bound(model.log_weights(grey, 3, seed=0)).numpy(), rtol=1e-5)
    assert loaded.signatures["encode"](x=grey)["h1_mean"].shape == (2, 50)


# -- 2. Log weights must be floating --------------------------------------------------------
@pytest.mark.parametrize("fn", [objectives.iwae_bound, objectives.vae_bound,
                                objectives.normalized_weights,
                                objectives.effective_sample_size])
def test_objectives_refuse_non_floating_log_weights_by_name(fn):
    # An int32 Tensor raised TensorFlow's "attr 'T' of int32 is not in the list of
    # allowed values"; integer, bool and complex dtypes are refused naming the function,
    # `log_weights`, the expected float [num_samples, *batch] in nats and the dtype given.
    name = fn.__name__
    for bad, dtype in ((tf.constant([[1, 2], [3, 4]]), "int32"),
                       (np.array([[1, 2], [3, 4]], np.int64), "int64"),
                       (tf.constant([[True, False]]), "bool")):
        with pytest.raises(TypeError, match=rf"^{name}: `log_weights` must be float log "
                                            rf"weights \[num_samples, \*batch\] in nats "
                                            rf".*got dtype {dtype}\.$"):
            fn(bad)
    # Python numbers are numbers: converted to float32, as before.
    lw = [[0., -1.], [-2., 0.]]
    np.testing.assert_allclose(fn([[0, -1], [-2, 0]]).numpy(), fn(lw).numpy())
    assert fn(tf.constant(lw, tf.float64)).dtype == tf.float64


# -- 3. Seeds ----------------------------------------------------------------------------
SEED_MESSAGE = r"`seed`: expected None, an int or a \[2\] int32/int64 tensor, got "


@pytest.mark.parametrize("bad,shown", [
    ("abc", "str 'abc'"), (b"ab", "bytes b'ab'"), (1.5, "float 1.5"), (True, "bool True"),
    ([1.5, 2.], r"list \[1\.5, 2\.0\]"), (tf.constant([1., 2.]),
                                          r"a tensor of dtype float32 and shape \[2\]"),
    (np.array([1, 2, 3]), r"an array of dtype int64 and shape \[3\]"),
    (tf.constant(3), r"a tensor of dtype int32 and shape \[\]")])
def test_seeds_refuse_non_integer_seeds_by_name(model, bad, shown):
    # stateless_seed('abc') said "shape [2], got ()"; a float [2] Tensor was silently
    # truncated. Every public function taking seed= says what it expected and got.
    match = SEED_MESSAGE + shown
    calls = [seeds.stateless_seed, lambda s: seeds.split_seed(s, 2),
             lambda s: seeds.fold_in(s, 1), lambda s: model.sample(2, seed=s),
             lambda s: model.log_weights(_binary(1), 2, seed=s),
             lambda s: model.reconstruct(_binary(1), seed=s),
             lambda s: tfp_iwae.ImportanceWeightedMarginal(model, 2, seed=s).log_prob(
                 _binary(1)),
             lambda s: evaluation.estimate_log_likelihood(model, _binary(1), 2, seed=s)]
    if not tf.is_tensor(bad):  # a Tensor is a stateless seed for seeds.normal
        calls.append(lambda s: seeds.normal([2], s))
    for call in calls:
        with pytest.raises(ValueError, match=match):
            call(bad)


def test_seeds_still_accept_ints_numpy_ints_pairs_and_none(model):
    want = seeds.stateless_seed(7).numpy()
    for same in (7, np.int64(7), np.int32(7), [7, 0], np.array([7, 0]),
                 tf.constant([7, 0]), tf.constant([7, 0], tf.int64)):
        np.testing.assert_array_equal(seeds.stateless_seed(same).numpy(), want)
    assert seeds.stateless_seed(None) is None
    np.testing.assert_array_equal(model.sample(2, seed=np.int64(3)).numpy(),
                                  model.sample(2, seed=3).numpy())
    with pytest.raises(ValueError, match=r"`seed`: expected None or an int \(the seed of "
                                         r"the Keras initialisers\), got str 'abc'"):
        tfp_iwae.IWAE(1, seed="abc")
    with pytest.raises(ValueError, match=r"`seed`: expected a non-negative int, got -1"):
        seeds.stateless_seed(-1)


# -- 4. sample(0) ------------------------------------------------------------------------
@pytest.mark.parametrize("layers", [1, 2])
def test_sample_zero_is_an_empty_sample(layers):
    # IWAE.sample(0) and the marginal's sample(0) raised "`n` must be >= 1" where a TFP
    # distribution (and the exported `sample` signature) returns an empty sample.
    m = tfp_iwae.IWAE(layers, seed=0)
    p_x = tfp_iwae.ImportanceWeightedMarginal(m, num_samples=2, seed=0)
    for draw in (m.sample(0, seed=1), m.sample(0, seed=1, mean=True), p_x.sample(0),
                 p_x.sample(0, seed=1), *m.sample_and_mean(0, seed=1),
                 tf.function(lambda n: m.sample(n, seed=1))(tf.constant(0))):
        assert draw.shape == (0, D) and draw.dtype == tf.float32
    for call in (m.sample, p_x.sample, m.sample_and_mean):
        with pytest.raises(ValueError, match=r"`n` must be >= 0 \(the number of samples "
                                             r"to draw\), got -1"):
            call(-1)
