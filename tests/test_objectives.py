"""The bound and the log weights, checked against exact math."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_iwae

tfd = tfp.distributions


def np_log_mean_exp(a, axis=0):
    a = np.asarray(a, np.float64)
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.mean(np.exp(a - m), axis=axis, keepdims=True))).squeeze(axis)


def test_exact_posterior_makes_every_log_weight_log_px(linear_gaussian):
    # w = p(x, z) / p(z|x) = p(x) for every z when q is the exact posterior, so
    # every log weight, and L_k for every k, equals log p(x).
    lg = linear_gaussian
    x = lg.sample_x(6)
    lw = tfp_iwae.log_weights(x, prior=lg.prior, likelihood_fn=lg.likelihood,
                              posterior=lg.exact_posterior(x), num_samples=7, seed=3)
    exact = lg.log_marginal(x).numpy()
    assert lw.shape == (7, 6)
    np.testing.assert_allclose(lw.numpy(), np.broadcast_to(exact, (7, 6)), rtol=0, atol=1e-9)
    for k in (1, 3, 7):
        np.testing.assert_allclose(tfp_iwae.iwae_bound(lw[:k]).numpy(), exact, atol=1e-9)


def test_bound_with_prior_proposal_grows_with_k_towards_log_px(linear_gaussian):
    # With q = p(z), E[L_k] is non-decreasing in k and tends to log p(x).
    lg = linear_gaussian
    x = lg.sample_x(1, seed=5)[0]
    exact = float(lg.log_marginal(x))
    reps = 400
    means, ses = [], []
    for k in (1, 10, 100, 1000):
        lw = tfp_iwae.log_weights(np.tile(x, (reps, 1)), prior=lg.prior,
                                  likelihood_fn=lg.likelihood,
                                  posterior=tfd.MultivariateNormalDiag(
                                      tf.zeros([reps, lg.d], tf.float64),
                                      tf.ones([reps, lg.d], tf.float64)),
                                  num_samples=k, seed=k)
        b = tfp_iwae.iwae_bound(lw).numpy()
        means.append(b.mean())
        ses.append(b.std() / np.sqrt(reps))
    for (m0, s0), (m1, s1) in zip(zip(means, ses), zip(means[1:], ses[1:])):
        assert m1 > m0 - 3 * np.hypot(s0, s1), means
    assert means[-1] > means[0] + 0.1  # the gain is real, not noise
    assert all(m < exact + 3 * s for m, s in zip(means, ses))  # a lower bound
    assert abs(means[-1] - exact) < 0.05 + 3 * ses[-1], (means, exact)


def test_iwae_bound_matches_float64_log_mean_exp():
    rng = np.random.RandomState(0)
    lw = rng.randn(50, 8) * 30 - 100
    got = tfp_iwae.iwae_bound(tf.constant(lw, tf.float32)).numpy()
    np.testing.assert_allclose(got, np_log_mean_exp(lw), rtol=1e-6)
    got_axis = tfp_iwae.iwae_bound(tf.constant(lw.T), axis=1).numpy()
    np.testing.assert_allclose(got_axis, np_log_mean_exp(lw), rtol=1e-12)


def test_iwae_bound_finite_for_very_negative_weights_and_k_5000():
    rng = np.random.RandomState(1)
    lw = -1e4 + rng.randn(5000, 3).astype(np.float32) * 5
    got = tfp_iwae.iwae_bound(tf.constant(lw)).numpy()
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, np_log_mean_exp(lw.astype(np.float64)), rtol=1e-6)
    # naive log(mean(exp)) underflows to -inf here: the max shift is what keeps it finite.
    assert np.all(np.isneginf(np.log(np.mean(np.exp(lw), axis=0))))


def test_vae_bound_is_mean_and_equals_iwae_at_k_1():
    lw = tf.constant(np.random.RandomState(2).randn(1, 5) * 10)
    np.testing.assert_allclose(tfp_iwae.iwae_bound(lw), tfp_iwae.vae_bound(lw), atol=1e-12)
    lw5 = tf.constant(np.random.RandomState(3).randn(5, 4))
    np.testing.assert_allclose(tfp_iwae.vae_bound(lw5), lw5.numpy().mean(0), atol=1e-12)
    # Jensen: L_k >= mean log w, with equality only for equal weights.
    assert np.all(tfp_iwae.iwae_bound(lw5).numpy() > tfp_iwae.vae_bound(lw5).numpy())


def test_effective_sample_size_limits():
    k = 10
    equal = tf.zeros([k, 2], tf.float64)
    np.testing.assert_allclose(tfp_iwae.effective_sample_size(equal), [k, k])
    one = tf.constant(np.r_[0., np.full(k - 1, -1e4)][:, None])
    np.testing.assert_allclose(tfp_iwae.effective_sample_size(one), [1.])


def test_iwae_gradient_is_normalised_weighted_sum_of_log_weight_gradients(linear_gaussian):
    # d L_k / d phi = sum_i w~_i d log w_i / d phi, w~ = softmax(log w).
    lg = linear_gaussian
    x = lg.sample_x(1, seed=2)
    loc = tf.Variable(np.array([[0.3, -0.2]]))
    log_scale = tf.Variable(np.array([[-0.1, 0.2]]))
    k = 6
    with tf.GradientTape(persistent=True) as tape:
        q = tfd.MultivariateNormalDiag(loc, tf.exp(log_scale))
        lw = tfp_iwae.log_weights(x, prior=lg.prior, likelihood_fn=lg.likelihood,
                                  posterior=q, num_samples=k, seed=11)
        bound = tfp_iwae.iwae_bound(lw)[0]
        per_sample = [lw[i, 0] for i in range(k)]
    g_bound = tape.gradient(bound, [loc, log_scale])
    w = tf.nn.softmax(lw[:, 0]).numpy()
    explicit = [sum(w[i] * tape.gradient(per_sample[i], v).numpy() for i in range(k))
                for v in (loc, log_scale)]
    for got, want in zip(g_bound, explicit):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, None])
def test_num_samples_must_be_positive_int(linear_gaussian, bad):
    lg = linear_gaussian
    x = lg.sample_x(2)
    with pytest.raises(ValueError, match="num_samples"):
        tfp_iwae.log_weights(x, prior=lg.prior, likelihood_fn=lg.likelihood,
                             posterior=lg.exact_posterior(x), num_samples=bad)


def test_same_int_seed_same_log_weights(linear_gaussian):
    lg = linear_gaussian
    x = lg.sample_x(3)
    kw = dict(prior=lg.prior, likelihood_fn=lg.likelihood,
              posterior=tfd.MultivariateNormalDiag(tf.zeros([3, 2], tf.float64),
                                                   tf.ones([3, 2], tf.float64)),
              num_samples=4)
    a = tfp_iwae.log_weights(x, seed=7, **kw).numpy()
    b = tfp_iwae.log_weights(x, seed=7, **kw).numpy()
    c = tfp_iwae.log_weights(x, seed=8, **kw).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_effective_sample_size_is_exact_for_log_weights_of_huge_magnitude():
    # At -2^28 nats float32 spacing is 32 nats: the offsets below are exact, and ESS =
    # (sum w)^2 / sum w^2 depends only on them. Subtracting a log-sum-exp first rounds
    # log k away (-2^28 + log 5 == -2^28 in float32) and gave 1/k = 0.2 for tied weights.
    base = -2. ** 28
    offsets = np.array([[0., 0., 0.], [0., -32., -64.], [0., -32., -32.], [0., -32., 0.],
                        [0., -64., -32.]])  # [k=5, batch 3]
    ess = tfp_iwae.effective_sample_size(tf.constant(base + offsets, tf.float32)).numpy()
    u = np.exp(offsets - offsets.max(0))
    np.testing.assert_allclose(ess, u.sum(0) ** 2 / (u ** 2).sum(0), rtol=1e-6)
    np.testing.assert_allclose(ess, [5., 1., 2.], rtol=1e-6)


def test_effective_sample_size_of_non_finite_log_weights():
    # -inf is a zero weight; NaN, +inf or all -inf leave the weights undefined: NaN.
    inf, nan = np.inf, np.nan
    lw = tf.constant(np.array([[0., nan, inf, -inf, -inf],
                               [0., 0., 0., -inf, -inf],
                               [-inf, 0., 0., -inf, 0.]], np.float32))
    ess = tfp_iwae.effective_sample_size(lw).numpy()
    np.testing.assert_allclose(ess[[0, 4]], [2., 1.], rtol=1e-6)
    assert np.all(np.isnan(ess[1:4])), ess


REDUCTIONS = [tfp_iwae.iwae_bound, tfp_iwae.vae_bound, tfp_iwae.effective_sample_size,
              tfp_iwae.normalized_weights]


@pytest.mark.parametrize("fn", REDUCTIONS, ids=lambda f: f.__name__)
def test_fewer_than_one_sample_is_a_clear_error(fn):
    # No samples: L_k, the ELBO and the ESS are undefined (mean over nothing): they used
    # to come back NaN (or empty) silently; a scalar has no sample axis at all.
    with pytest.raises(ValueError, match=rf"{fn.__name__}: `log_weights` needs at least "
                                         r"one sample along axis 0 .*shape \(0, 3\)"):
        fn(tf.zeros([0, 3]))
    with pytest.raises(ValueError, match=r"needs at least one sample along axis 1"):
        fn(tf.zeros([3, 0]), axis=1)
    with pytest.raises(ValueError, match=rf"{fn.__name__}: `log_weights` must have a "
                                         r"sample axis, shape \[num_samples, \*batch\]"):
        fn(tf.constant(1.))
    # Unknown length inside tf.function: checked when the function runs.
    traced = tf.function(fn, input_signature=[tf.TensorSpec([None, None], tf.float32)])
    assert traced(tf.zeros([4, 2])).shape[-1] == 2
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"{fn.__name__}: `log_weights` needs at least one sample"):
        traced(tf.zeros([0, 2]))
    # One sample is enough.
    assert np.all(np.isfinite(fn(tf.zeros([1, 3])).numpy()))


def test_ess_never_exceeds_k_at_near_uniform_weights():
    # k = 5000 nearly tied float32 log weights: float32 sums gave up to k + 0.045.
    rng = np.random.default_rng(0)
    lw = tf.constant(-90. + 1e-6 * rng.standard_normal([5000, 64]), tf.float32)
    ess = tfp_iwae.effective_sample_size(lw).numpy()
    assert ess.dtype == np.float32 and np.all(ess <= 5000.) and np.all(ess > 4999.)
