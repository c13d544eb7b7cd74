"""Public API contracts: argument checking, dtypes, distribution protocols, export."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfp_iwae
from tfp_iwae import schedule


@pytest.mark.parametrize("kwargs,match", [
    (dict(learning_rate=float("nan")), r"`learning_rate` must be a finite number > 0, got nan"),
    (dict(learning_rate=float("inf")), r"`learning_rate` must be a finite number > 0, got inf"),
    (dict(learning_rate=-1), r"`learning_rate` must be a finite number > 0, got -1"),
    (dict(learning_rate=0.), r"`learning_rate` must be a finite number > 0, got 0"),
    (dict(learning_rate="fast"), r"`learning_rate` must be a finite number > 0, got 'fast'"),
    (dict(learning_rate=True), r"`learning_rate` must be a finite number > 0, got True"),
    (dict(beta_1=1.), r"`beta_1` must be a finite number in \[0, 1\), got 1"),
    (dict(beta_1=-0.1), r"`beta_1` must be a finite number in \[0, 1\), got -0.1"),
    (dict(beta_2=float("nan")), r"`beta_2` must be a finite number in \[0, 1\), got nan"),
    (dict(epsilon=0.), r"`epsilon` must be a finite number > 0, got 0"),
    (dict(epsilon=-1e-4), r"`epsilon` must be a finite number > 0, got -0.0001"),
])
def test_make_optimizer_rejects_bad_hyperparameters(kwargs, match):
    # Adam needs a positive finite step size, decay rates in [0, 1) and a positive
    # epsilon; anything else used to be accepted and produced NaN or frozen weights.
    # The error is the package's own (`except tfp_iwae.Error`) and a ValueError.
    with pytest.raises(ValueError, match=match) as e:
        schedule.make_optimizer(**kwargs)
    assert isinstance(e.value, tfp_iwae.Error)


def test_make_optimizer_accepts_numbers_and_schedules():
    opt = schedule.make_optimizer(np.float32(3e-4), beta_1=0., epsilon=1e-8)
    np.testing.assert_allclose(float(opt.learning_rate), 3e-4, rtol=1e-6)
    assert opt.epsilon == 1e-8 and opt.beta_1 == 0.
    # A schedule is the optimizer's learning rate, read at its step: 1e-3 * 0.5^(t / 100).
    sched = keras.optimizers.schedules.ExponentialDecay(1e-3, 100, 0.5)
    opt = schedule.make_optimizer(sched)
    np.testing.assert_allclose(float(opt.learning_rate), 1e-3, rtol=1e-6)
    opt.iterations.assign(200)
    np.testing.assert_allclose(float(opt.learning_rate), 2.5e-4, rtol=1e-6)
    assert opt.epsilon == 1e-4  # the paper's Adam epsilon, the default


@pytest.mark.parametrize("layers", [1, 2])
def test_sample_accepts_a_tensor_n_inside_tf_function(layers):
    # n known only when the function runs: IWAE.sample and the marginal's sample draw
    # [n, 784] as they do eagerly (same seed, same draws), and n < 0 is refused then
    # (0 is an empty sample).
    m = tfp_iwae.IWAE(layers, seed=0)
    sample = tf.function(lambda n: m.sample(n, seed=1))
    np.testing.assert_array_equal(sample(tf.constant(3)).numpy(), m.sample(3, seed=1).numpy())
    p_x = tfp_iwae.ImportanceWeightedMarginal(m, num_samples=5, seed=0)
    marginal_sample = tf.function(lambda n: p_x.sample(n, seed=2))
    got = marginal_sample(tf.constant(4))
    assert got.shape == (4, 784)
    np.testing.assert_array_equal(got.numpy(), p_x.sample(4, seed=2).numpy())
    assert sample(tf.constant(0)).shape == (0, 784)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"`n` must be >= 0 \(the number of samples to draw\)"):
        sample(tf.constant(-1))


def test_count_errors_name_what_the_count_is():
    # The "(the number of importance samples k)" gloss belongs to num_samples only.
    from tfp_iwae import objectives
    with pytest.raises(ValueError, match=r"^`n` must be >= 0 \(the number of samples to "
                                         r"draw\), got -1\.$"):
        tfp_iwae.IWAE(1).sample(-1)
    with pytest.raises(ValueError, match=r"^`chunk_size` must be >= 1, got 0\.$"):
        objectives.check_num_samples(0, "chunk_size")
    with pytest.raises(ValueError, match=r"^`num_samples` must be a positive Python integer "
                                         r"\(the number of importance samples k\), got 2\.5"):
        objectives.check_num_samples(2.5)
    with pytest.raises(ValueError, match=r"`n` must be a non-negative integer or a scalar "
                                         r"integer Tensor \(the number of samples to draw\)"):
        tfp_iwae.IWAE(1).sample(tf.constant([2, 3]))


def _bernoulli_logits():
    from tfp_iwae import networks
    logits = tf.reshape(tf.range(-6., 6.), [3, 4])
    return networks.BernoulliLogits(logits), "logits", logits


def _diagonal_gaussian():
    from tfp_iwae import networks
    loc = tf.reshape(tf.range(6.), [3, 2])
    return networks.DiagonalGaussian(loc, tf.exp(loc / 10.)), "loc", loc


@pytest.mark.parametrize("make", [_bernoulli_logits, _diagonal_gaussian],
                         ids=["BernoulliLogits", "DiagonalGaussian"])
def test_network_distributions_copy_and_slice_their_batch(make):
    # Batch [3], event [units]. d[i] is the distribution of batch member i: batch shape
    # [] and log_prob(x[i]) = d.log_prob(x)[i]; d[:2] keeps the first two; copy() is the
    # same distribution. (BernoulliLogits raised TypeError; DiagonalGaussian's d[0] kept
    # batch shape [3].)
    d, name, param = make()
    cls = type(d)
    x = d.sample(seed=1)
    lp = d.log_prob(x).numpy()
    c = d.copy()
    assert type(c) is cls and c.batch_shape == [3]
    np.testing.assert_array_equal(c.log_prob(x).numpy(), lp)
    one = d[0]
    assert type(one) is cls and one.batch_shape == [] and one.event_shape == d.event_shape
    np.testing.assert_allclose(one.log_prob(x[0]).numpy(), lp[0], rtol=1e-6)
    two = d[:2]
    assert type(two) is cls and two.batch_shape == [2]
    np.testing.assert_allclose(two.log_prob(x[:2]).numpy(), lp[:2], rtol=1e-6)
    assert set(d.parameters) >= {"validate_args", "name"}
    np.testing.assert_array_equal(getattr(one, name).numpy(), param[0].numpy())


def _binary(n, seed=0):
    return (np.random.RandomState(seed).rand(n, 784) < 0.3).astype(np.float32)


def test_marginal_validate_args_checks_the_support_even_if_the_model_does_not():
    # The Bernoulli support is {0, 1}^784. ImportanceWeightedMarginal(validate_args=True)
    # refuses x outside it although the model was built without validate_args (5.0 used
    # to return a number, and 0.5 still does without validate_args: the relaxation).
    m = tfp_iwae.IWAE(1, seed=0)
    checked = tfp_iwae.ImportanceWeightedMarginal(m, num_samples=3, seed=0,
                                                  validate_args=True)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"x must be in \[0, 1\] for a Bernoulli likelihood"):
        checked.log_prob(5. * tf.ones([2, 784]))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"(?s)x must be binary \(every pixel 0 or 1\) for a "
                             r"Bernoulli likelihood with validate_args.*the largest:.*0\.5"):
        checked.log_prob(tf.fill([2, 784], 0.5))
    x = tf.constant(_binary(2))
    np.testing.assert_allclose(checked.log_prob(x).numpy(),
                               tfp_iwae.iwae_bound(m.log_weights(x, 3, seed=0)).numpy(),
                               rtol=1e-6)
    unchecked = tfp_iwae.ImportanceWeightedMarginal(m, num_samples=3, seed=0)
    assert np.all(np.isfinite(unchecked.log_prob(tf.fill([2, 784], 0.5)).numpy()))


def test_bernoulli_validate_args_means_binary_pixels():
    # With validate_args the model, and its BernoulliLogits likelihood on its own, refuse
    # 0.5 and 255 (positive log weights for 0/255 images), eagerly and inside a
    # tf.function with unknown shapes; binary pixels pass.
    from tfp_iwae import networks
    m = tfp_iwae.IWAE(1, seed=0, validate_args=True)
    lw = tf.function(lambda x: m.log_weights(x, 2, seed=0),
                     input_signature=[tf.TensorSpec([None, 784], tf.float32)])
    for fn in (lambda x: m.log_weights(x, 2, seed=0), lw):
        with pytest.raises(tf.errors.InvalidArgumentError, match="x must be binary"):
            fn(tf.fill([2, 784], 0.5))
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"x must be in \[0, 1\]"):
            fn(tf.fill([2, 784], 255.))
        assert fn(tf.constant(_binary(2))).shape == (2, 2)
    px = networks.BernoulliLogits(tf.zeros([2, 784]), validate_args=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="x must be binary"):
        px.log_prob(tf.fill([2, 784], 0.5))
    np.testing.assert_allclose(px.log_prob(tf.constant(_binary(2))).numpy(),
                               [784 * np.log(0.5)] * 2, rtol=1e-6)


def test_input_dtypes_are_converted_or_refused_by_name():
    # float64 and bool hold pixel values exactly: converted to float32, same log weights.
    # Integer dtypes (uint8 0-255 images) would be scored as Bernoulli data: refused,
    # naming x, the expected float32 and the dtype given (TF's conversion error before).
    m = tfp_iwae.IWAE(1, seed=0)
    x = _binary(3)
    want = m.log_weights(tf.constant(x), 2, seed=0).numpy()
    for same in (tf.constant(x, tf.float64), x.astype(np.float64), x.astype(bool)):
        np.testing.assert_array_equal(m.log_weights(same, 2, seed=0).numpy(), want)
    p_x = tfp_iwae.ImportanceWeightedMarginal(m, num_samples=2, seed=0)
    np.testing.assert_allclose(p_x.log_prob(tf.constant(x, tf.float64)).numpy(),
                               tfp_iwae.iwae_bound(want).numpy(), rtol=1e-6)
    match = (r"`x` must be float32 \(other floating dtypes and bool are converted\), got "
             r"{}\. Integer images \(e\.g\. uint8 0-255\) are not Bernoulli data")
    for bad, name in ((tf.constant(x * 255, tf.uint8), "uint8"),
                      ((x * 255).astype(np.uint8), "uint8"), (tf.constant(x, tf.int32), "int32")):
        for call in (lambda v: m.log_weights(v, 2), m.encoder, p_x.log_prob, p_x.prob):
            with pytest.raises(ValueError, match=match.format(name)):
                call(bad)


def test_exported_saved_model_names_the_expected_input_shape(tmp_path):
    # A loaded SavedModel's signatures check only the dtype of x, not its shape: [2, 783]
    # reached the first matmul and failed naming a fused network node (Tanh/BiasAdd).
    from tfp_iwae import export
    m = tfp_iwae.IWAE(1, seed=0)
    path = export.export_saved_model(m, str(tmp_path / "sm"), num_samples=3, seed=0)
    loaded = tf.saved_model.load(path)
    for name in ("log_prob", "encode"):
        for shape in ([2, 783], [784], [1, 2, 784]):
            with pytest.raises(tf.errors.InvalidArgumentError,
                               match=rf"{name}: `x` must have shape \[None, 784\] .*got "
                                     rf"shape\] \[{' '.join(map(str, shape))}\]"):
                loaded.signatures[name](x=tf.zeros(shape))
    x = tf.constant(_binary(2))
    np.testing.assert_allclose(loaded.signatures["log_prob"](x=x)["log_prob"].numpy(),
                               tfp_iwae.iwae_bound(m.log_weights(x, 3, seed=0)).numpy(),
                               rtol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"sample: `n` must be >= 0"):
        loaded.signatures["sample"](n=tf.constant(-1))
    assert loaded.signatures["sample"](n=tf.constant(2))["x"].shape == (2, 784)
