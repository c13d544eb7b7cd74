"""The paper's model: architecture, distributions, shapes, training on real digits."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_iwae
from tfp_iwae import seeds
from tfp_iwae import schedule
from tfp_iwae import step as step_lib

tfd = tfp.distributions


def dense(sizes):
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def test_paper_parameter_counts():
    # 1 layer: q 784-200-200-(50 mean, 50 log-std); p 50-200-200-784.
    enc1 = dense([784, 200, 200]) + 2 * dense([200, 50])
    dec1 = dense([50, 200, 200, 784])
    assert (enc1, dec1) == (217300, 207984)
    m1 = tfp_iwae.IWAE(1)
    assert m1.count_params_by_part() == {"encoder": enc1, "decoder": dec1}
    assert m1.count_params() == 425284
    # 2 layers: q(h1|x) 784-200-200-100, q(h2|h1) 100-100-100-50,
    #           p(h1|h2) 50-100-100-100, p(x|h1) 100-200-200-784.
    enc2 = (dense([784, 200, 200]) + 2 * dense([200, 100])
            + dense([100, 100, 100]) + 2 * dense([100, 50]))
    dec2 = dense([50, 100, 100]) + 2 * dense([100, 100]) + dense([100, 200, 200, 784])
    m2 = tfp_iwae.IWAE(2)
    assert m2.count_params_by_part() == {"encoder": enc2, "decoder": dec2}
    assert m2.count_params() == enc2 + dec2 == 521084


@pytest.mark.parametrize("layers", [1, 2])
def test_shapes(layers):
    m = tfp_iwae.IWAE(layers)
    x = tf.cast(tf.random.stateless_uniform([3, 784], [1, 2]) < 0.3, tf.float32)
    assert m.log_weights(x, 5, seed=1).shape == (5, 3)
    assert m.bound(x, 5).shape == (3,)
    assert m.bound(x, 5, objective="vae").shape == (3,)
    assert m.sample(4, seed=2).shape == (4, 784)
    assert m.reconstruct(x, seed=3).shape == (3, 784)
    q = m.encoder(x)
    z = q.sample(5, seed=4)
    if layers == 2:
        assert isinstance(q, tfd.JointDistributionNamed)
        assert isinstance(m.prior, tfd.JointDistributionNamed)
        assert z["h1"].shape == (5, 3, 100) and z["h2"].shape == (5, 3, 50)
    else:
        assert z.shape == (5, 3, 50)
    assert q.log_prob(z).shape == (5, 3)
    assert m.prior.log_prob(z).shape == (5, 3)
    assert m.decoder(z).log_prob(x).shape == (5, 3)
    # a sample is binary
    s = m.sample(2, seed=5).numpy()
    assert set(np.unique(s)) <= {0., 1.}


@pytest.mark.parametrize("layers", [1, 2])
def test_posterior_parameters_and_sample_and_mean(layers):
    # posterior_parameters: q(h1|x), and q(h2|h1) at h1's mean (no seed) or at the
    # seeded sample h1 = loc1 + scale1 * eps; sample_and_mean: sample()'s numbers.
    m = tfp_iwae.IWAE(layers, seed=1)
    x = tf.cast(tf.random.stateless_uniform([3, 784], [1, 2]) < 0.3, tf.float32)
    params = m.posterior_parameters(x)
    assert [(loc.shape, scale.shape) for loc, scale in params] == [
        ((3, u), (3, u)) for u in m.latent_units]
    loc1, scale1 = m.q_layers[0].parameters_for(x)
    np.testing.assert_array_equal(params[0][0], loc1)
    np.testing.assert_array_equal(params[0][1], scale1)
    if layers == 2:
        np.testing.assert_array_equal(params[1][0], m.q_layers[1].parameters_for(loc1)[0])
        eps = seeds.normal([3, 100], seeds.stateless_seed(7))
        at_sample = m.q_layers[1].parameters_for(loc1 + scale1 * eps)
        np.testing.assert_array_equal(m.posterior_parameters(x, seed=7)[1][1], at_sample[1])
    draw, mean = m.sample_and_mean(4, seed=2)
    np.testing.assert_array_equal(draw, m.sample(4, seed=2))
    np.testing.assert_array_equal(mean, m.sample(4, seed=2, mean=True))
    assert m.sample_and_mean(0, seed=2)[0].shape == (0, 784)
    with pytest.raises(ValueError, match="`n` must be >= 0"):
        m.sample_and_mean(-1)


def test_two_layer_log_weight_is_sum_of_its_terms():
    # log w = log p(h2) + log p(h1|h2) + log p(x|h1) - log q(h1|x) - log q(h2|h1).
    m = tfp_iwae.IWAE(2)
    x = tf.cast(tf.random.stateless_uniform([2, 784], [3, 4]) < 0.5, tf.float32)
    z = m.encoder(x).sample(3, seed=[1, 1])
    q1 = m.q_layers[0](x)
    q2 = m.q_layers[1](z["h1"])
    p2 = tfd.Independent(tfd.Normal(tf.zeros(50), 1.), 1)
    p1 = m.p_h1(z["h2"])
    px = m.p_x(z["h1"])
    manual = (p2.log_prob(z["h2"]) + p1.log_prob(z["h1"]) + px.log_prob(x)
              - q1.log_prob(z["h1"]) - q2.log_prob(z["h2"]))
    lw = m.prior.log_prob(z) + m.decoder(z).log_prob(x) - m.encoder(x).log_prob(z)
    np.testing.assert_allclose(lw.numpy(), manual.numpy(), rtol=1e-5)


def test_bernoulli_log_prob_matches_tfd_bernoulli():
    m = tfp_iwae.IWAE(1)
    z = tf.random.stateless_normal([4, 50], [0, 1])
    x = tf.cast(tf.random.stateless_uniform([4, 784], [0, 2]) < 0.4, tf.float32)
    logits = m.p_x.logits(z)
    ref = tfd.Independent(tfd.Bernoulli(logits=logits), 1).log_prob(x)
    np.testing.assert_allclose(m.decoder(z).log_prob(x), ref, rtol=1e-5)


def test_data_mean_initialises_output_bias_to_its_logit(mnist_5k):
    train, _ = mnist_5k
    mean = train.mean(0)
    m = tfp_iwae.IWAE(1, data_mean=mean)
    clipped = np.clip(mean, 1e-3, 1 - 1e-3)
    np.testing.assert_allclose(m.p_x.logits_layer.bias.numpy(),
                               np.log(clipped / (1 - clipped)), rtol=1e-5, atol=1e-6)


def test_std_parameterizations_are_positive_and_finite():
    for param in ("exp", "softplus"):
        m = tfp_iwae.IWAE(1, std_parameterization=param)
        x = tf.ones([2, 784]) * 1e6  # drives the std pre-activations far out
        loc, std = m.q_layers[0].parameters_for(x)
        assert np.all(np.isfinite(std.numpy())) and np.all(std.numpy() > 0)
    with pytest.raises(ValueError, match="std_parameterization"):
        tfp_iwae.IWAE(1, std_parameterization="relu")


def _gaussian_log_density(x, loc, std):
    """log N(x; loc, diag(std^2)) summed over the last axis, in float64 NumPy."""
    x, loc, std = (np.asarray(t, np.float64) for t in (x, loc, std))
    return np.sum(-0.5 * ((x - loc) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi), -1)


def test_gaussian_likelihood_for_continuous_data():
    # The gaussian likelihood scores continuous x with the diagonal Gaussian of the
    # decoder's (loc, std): its log-prob is the closed form, and each log weight is
    # log N(z; 0, I) + log N(x; loc(z), std(z)^2) - log N(z; loc_q(x), std_q(x)^2) for
    # the z that log_weights draws with the same seed.
    m = tfp_iwae.IWAE(1, input_dim=5, likelihood="gaussian", hidden_units=[[8]],
                      latent_units=[2], seed=0)
    x = tf.random.stateless_normal([3, 5], [2, 2])
    lw = m.log_weights(x, 4, seed=0)
    assert lw.shape == (4, 3)
    z = m.encoder(x).sample(4, seed=seeds.stateless_seed(0))  # [4, 3, 2]
    loc, std = m.p_x.parameters_for(z)
    log_px = _gaussian_log_density(x, loc, std)
    np.testing.assert_allclose(m.decoder(z).log_prob(x).numpy(), log_px, rtol=1e-5)
    loc_q, std_q = m.q_layers[0].parameters_for(x)
    expected = (_gaussian_log_density(z, 0., 1.) + log_px
                - _gaussian_log_density(z, loc_q, std_q))
    np.testing.assert_allclose(lw.numpy(), expected, rtol=1e-5, atol=1e-4)


def test_seeded_sampling_is_reproducible_compiled_and_not():
    # Philox sampling: the 1-layer model draws the same z with and without XLA.
    # (For 2 layers TFP's joint distribution derives the second seed differently
    # under XLA, so only same-mode reproducibility holds there.)
    x = tf.cast(tf.random.stateless_uniform([3, 784], [5, 5]) < 0.3, tf.float32)
    for layers in (1, 2):
        m = tfp_iwae.IWAE(layers)
        compiled = tf.function(lambda x: m.log_weights(x, 4, seed=9), jit_compile=True)
        np.testing.assert_array_equal(compiled(x).numpy(), compiled(x).numpy())
        np.testing.assert_array_equal(m.log_weights(x, 4, seed=9).numpy(),
                                      m.log_weights(x, 4, seed=9).numpy())
        if layers == 1:
            np.testing.assert_allclose(m.log_weights(x, 4, seed=9).numpy(),
                                       compiled(x).numpy(), rtol=1e-4)


def test_compiled_draws_match_eager_only_for_a_compile_time_constant_seed():
    # docs/library.md's "Seeds" paragraph, checked on the 1-layer model. Eager
    # and a plain tf.function draw the same z for the same seed, given as an argument or
    # not (their log weights agree to float32 rounding: graph mode may fuse a dense
    # layer's matmul, bias and tanh into one oneDNN kernel). Under XLA they agree (to float rounding of the networks) only when the seed
    # is a compile-time constant: TensorFlow then folds the Philox op before XLA sees
    # it. With the seed as an argument, as the training step and evaluation pass it,
    # XLA's own Philox kernel draws another stream: reproducible, but not eager's.
    m = tfp_iwae.IWAE(1, seed=0)
    x = tf.cast(tf.random.stateless_uniform([3, 784], [5, 5]) < 0.3, tf.float32)
    seed = tf.constant([9, 0])
    eager = m.log_weights(x, 4, seed=seed).numpy()
    plain = tf.function(lambda x, s: m.log_weights(x, 4, seed=s))
    np.testing.assert_allclose(plain(x, seed).numpy(), eager, rtol=1e-6)
    jit_const = tf.function(lambda x: m.log_weights(x, 4, seed=[9, 0]), jit_compile=True)
    np.testing.assert_allclose(jit_const(x).numpy(), eager, rtol=1e-4)
    jit_arg = tf.function(lambda x, s: m.log_weights(x, 4, seed=s), jit_compile=True)
    compiled = jit_arg(x, seed).numpy()
    np.testing.assert_array_equal(jit_arg(x, seed).numpy(), compiled)
    assert np.abs(compiled - eager).max() > 1., (compiled, eager)


@pytest.mark.slow  # 300 optimizer steps per architecture
@pytest.mark.parametrize("layers", [1, 2])
def test_training_on_real_mnist_raises_the_bound(mnist_5k, layers):
    train, test = mnist_5k
    m = tfp_iwae.IWAE(layers, data_mean=train.mean(0))
    opt = schedule.make_optimizer(1e-3)
    step = step_lib.make_train_step(m, opt, num_samples=5)
    rng = np.random.RandomState(0)
    xt = tf.constant((test[:500] > 0.5).astype(np.float32))  # a fixed binarisation
    before = float(tf.reduce_mean(m.bound(xt, 5, seed=1)))
    for i in range(300):
        idx = rng.randint(0, len(train), 100)
        x = (rng.rand(100, 784) < train[idx]).astype(np.float32)  # dynamic binarisation
        out = step(tf.constant(x), step_lib.step_seed(0, i))
        assert out["finite"] == 1.
    after = float(tf.reduce_mean(m.bound(xt, 5, seed=1)))
    # From the data-mean init (~-220 nats) 300 Adam steps reach about -135 (1 layer)
    # on held-out digits; a broken gradient leaves the bound where it started.
    assert after > before + 50, (before, after)
    assert after > -170, after


def test_bad_inputs():
    m = tfp_iwae.IWAE(1)
    with pytest.raises(ValueError, match="num_samples"):
        m.log_weights(tf.zeros([2, 784]), 0)
    with pytest.raises(ValueError, match=r"`x` must have shape \[..., 784\]"):
        m.log_weights(tf.zeros([2, 28, 28]), 3)
    with pytest.raises(ValueError, match="objective"):
        m.bound(tf.zeros([2, 784]), 3, objective="elbo2")
    with pytest.raises(ValueError, match="stochastic_layers"):
        tfp_iwae.IWAE(3)
    checked = tfp_iwae.IWAE(1, validate_args=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"x must be in \[0, 1\]"):
        checked.log_weights(tf.fill([2, 784], 1.5), 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="x must be finite"):
        checked.log_weights(tf.fill([2, 784], np.nan), 3)


def test_importance_weighted_marginal_is_a_distribution():
    m = tfp_iwae.IWAE(1)
    d = tfp_iwae.ImportanceWeightedMarginal(m, num_samples=20, seed=4)
    assert isinstance(d, tfd.Distribution)
    assert d.event_shape == [784] and d.batch_shape == []
    x = d.sample(6, seed=1)
    assert x.shape == (6, 784)
    lp = d.log_prob(x)
    assert lp.shape == (6,)
    np.testing.assert_allclose(lp, tfp_iwae.iwae_bound(m.log_weights(x, 20, seed=4)),
                               rtol=1e-5)
    np.testing.assert_allclose(d.log_prob(tf.reshape(x, [2, 3, 784])),
                               tf.reshape(lp, [2, 3]), rtol=1e-5)
    with pytest.raises(ValueError, match="num_samples"):
        tfp_iwae.ImportanceWeightedMarginal(m, num_samples=0)


@pytest.mark.slow
def test_mixed_bfloat16_policy_keeps_float32_variables_and_bounds(mnist_5k):
    # bf16 matmuls (8-bit mantissa): log weights agree with float32 to ~1%, everything the
    # user sees (variables, distribution parameters, bounds) stays float32.
    x = tf.constant((mnist_5k[1][:8] > 0.5).astype(np.float32))
    full = tfp_iwae.IWAE(2, seed=0)
    mixed = tfp_iwae.IWAE(2, seed=0, dtype_policy="mixed_bfloat16")
    assert all(v.dtype == "float32" for v in mixed.variables)
    for a, b in zip(full.variables, mixed.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    lw_full = full.log_weights(x, 5, seed=1)
    lw_mixed = mixed.log_weights(x, 5, seed=1)
    assert lw_mixed.dtype == tf.float32
    np.testing.assert_allclose(lw_mixed.numpy(), lw_full.numpy(), rtol=0.02)
    step = step_lib.make_train_step(mixed, schedule.make_optimizer(), 5)
    out = step(x, tf.constant([0, 1]))
    assert float(out["finite"]) == 1.


@pytest.mark.slow
def test_a_three_layer_model_trains_evaluates_and_exports(tmp_path, mnist_5k):
    # Depth is a list, not a branch: L = 3 stochastic layers (64, 32, 16 units) train
    # through make_train_step, and the estimator, active units and export take them.
    x = (np.random.default_rng(0).random(mnist_5k[0][:100].shape) < mnist_5k[0][:100]
         ).astype(np.float32)
    m = tfp_iwae.IWAE(stochastic_layers=3, latent_units=(64, 32, 16),
             hidden_units=((128, 128), (64, 64), (32, 32)), seed=0, data_mean=x.mean(0))
    assert [l.name for l in m.q_layers] == ["q_h1", "q_h2", "q_h3"]
    assert [l.name for l in m.p_layers] == ["p_h1", "p_h2"]
    z = m.prior.sample(2, seed=1)
    assert sorted(z) == ["h1", "h2", "h3"] and z["h1"].shape == (2, 64)
    step = step_lib.make_train_step(m, schedule.make_optimizer(1e-3), 5)
    first = float(step(x[:20], 0)["bound"])
    for s in range(1, 40):
        out = step(x[(s % 5) * 20:(s % 5 + 1) * 20], s)
    assert float(out["bound"]) > first + 20
    ll = tfp_iwae.estimate_log_likelihood(m, x[:10], 100, seed=0)
    assert ll.shape == (10,) and np.all(np.isfinite(ll)) and np.all(ll < 0)
    assert [len(s) for s in tfp_iwae.active_units(m, x)["statistics"]] == [64, 32, 16]
    tfp_iwae.export_saved_model(m, str(tmp_path / "sm"), num_samples=10)
    encoded = tf.saved_model.load(str(tmp_path / "sm")).signatures["encode"](
        x=tf.constant(x[:2]))
    assert encoded["h3_mean_given_h2_mean"].shape == (2, 16)


def test_other_depths_need_their_sizes():
    with pytest.raises(ValueError, match="for other depths give `latent_units`"):
        tfp_iwae.IWAE(stochastic_layers=3)
