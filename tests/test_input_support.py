"""Inputs outside what a function can score are refused by name, not turned into numbers
(issue #29): Bernoulli pixels outside [0, 1], integer log weights, non-integer seeds;
and `sample(0)` is an empty sample, as for a TFP distribution."""

import numpy as np
import pytest
import tensorflow as tf

import tfp_iwae
from tfp_iwae import evaluation, objectives, seeds

D = 784


def _binary(n, seed=0):
    return (np.random.RandomState(seed).rand(n, D) < 0.3).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return tfp_iwae.IWAE(1, seed=0)


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
