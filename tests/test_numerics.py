"""Numerics: float32 bounds stay finite in extreme regimes; non-finite steps are not applied."""

import numpy as np
import pytest
import tensorflow as tf

import tfp_iwae
from tfp_iwae import evaluation, schedule
from tfp_iwae import step as step_lib


def binary(n, seed=0):
    return (np.random.RandomState(seed).rand(n, 784) < 0.3).astype(np.float32)


def test_k_5000_with_saturated_logits_is_finite():
    # |logit| > 50: softplus(50) = 50 exactly in float32 and sigmoid saturates; the
    # Bernoulli log-prob x*l - softplus(l) must not become inf/nan, nor L_5000.
    m = tfp_iwae.IWAE(1, seed=0)
    bias = m.p_x.logits_layer.bias
    bias.assign(np.where(np.arange(784) % 2 == 0, 60., -60.).astype(np.float32))
    x = binary(4)
    est = evaluation.estimate_log_likelihood(m, x, 5000, chunk_size=1000, seed=0)
    assert np.all(np.isfinite(est))
    # pixels that disagree with a saturated logit cost ~60 nats each: a very low but finite bound
    assert np.all(est < -1000)


def test_near_zero_posterior_scales_stay_finite():
    m = tfp_iwae.IWAE(2, seed=0)
    for layer in m.q_layers:
        layer.std_layer.bias.assign(np.full(layer.units, -40., np.float32))  # exp(-40)
    x = tf.constant(binary(3))
    loc, std = m.q_layers[0].parameters_for(x)
    assert np.all(std.numpy() > 0)  # clipped at exp(-15) ~ 3e-7, not 0
    lw = m.log_weights(x, 5000, seed=1)
    assert np.all(np.isfinite(lw.numpy()))
    assert np.all(np.isfinite(tfp_iwae.iwae_bound(lw).numpy()))


def test_non_finite_step_is_detected_and_not_applied():
    m = tfp_iwae.IWAE(1, seed=0)
    opt = schedule.make_optimizer()
    step = step_lib.make_train_step(m, opt, 5)
    before = [v.numpy().copy() for v in m.variables]
    out = step(tf.fill([10, 784], np.nan), tf.constant([0, 1]))
    assert float(out["finite"]) == 0.
    for b, v in zip(before, m.variables):
        np.testing.assert_array_equal(b, v.numpy())
    out = step(tf.constant(binary(10)), tf.constant([0, 1]))
    assert float(out["finite"]) == 1.
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, m.variables))


def test_piwae_gradients_on_the_two_layer_model_at_init_are_finite_and_exact():
    # On the paper's 2-layer model at initialisation (data-mean output bias), some digits
    # have one group of K=8 log weights ~100 nats below the best group of the same
    # example (here 100.5 nats). PIWAE(8,8)'s decoder follows IWAE(64) and its encoder
    # MIWAE(8,8) (coefficient softmax within the group / M, finite at any gap), so from
    # the same draws its gradients must equal those two; writing the encoder coefficient
    # as the IWAE one (0 there) times their ratio (inf) made them NaN.
    import hashlib
    from tfp_iwae import sources
    train = sources.embedded_mnist("train")[0]
    # Images in an order of their own (by content hash), whatever order the split uses.
    train = train[np.argsort([hashlib.sha1(r.tobytes()).hexdigest() for r in train],
                             kind="stable")]
    rng = np.random.RandomState(0)
    x = tf.constant((rng.rand(240, 784) < train[:240]).astype(np.float32)[220:])  # batch 20
    m = tfp_iwae.IWAE(2, seed=0, data_mean=train.mean(0))
    lw = m.log_weights(x, 64, seed=[11, 0])
    group_lse = tf.reduce_logsumexp(tf.reshape(lw, [8, 8, 20]), axis=1)
    assert float(tf.reduce_max(tf.reduce_max(group_lse, 0) - tf.reduce_min(group_lse, 0))) > 95

    def grads(name):
        out = tfp_iwae.estimator_gradients(
            name, x, prior=m.prior, likelihood_fn=m.decoder, posterior_fn=m.encoder,
            encoder_variables=m.encoder_variables, decoder_variables=m.decoder_variables,
            num_samples=64, seed=[11, 0])
        return out["decoder_grads"], out["encoder_grads"]

    dec, enc = grads("piwae(8,8)")
    for g in dec + enc:
        assert np.all(np.isfinite(g.numpy()))
    for got, want in zip(enc, grads("miwae(8,8)")[1]):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    for got, want in zip(dec, grads("iwae")[0]):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


def test_training_step_ess_stays_in_1_k_when_log_weights_are_huge():
    # A diverged decoder (output logits +-1e9) makes every log weight ~ -1e11 nats, where
    # float32 spacing (~8e3) ties all k = 5 of them: the true ESS is k. The step's
    # batch-mean `ess` must lie in [1, k] (it read 1/k = 0.2 before), and be NaN, not a
    # number, for a batch with non-finite log weights.
    m = tfp_iwae.IWAE(1, seed=0)
    m.p_x.logits_layer.bias.assign(np.where(np.arange(784) % 2 == 0, 1e9, -1e9).astype(
        np.float32))
    step = step_lib.make_train_step(m, schedule.make_optimizer(), 5)
    out = step(tf.constant(binary(10)), tf.constant([0, 1]))
    assert float(out["elbo"]) < -1e10
    np.testing.assert_allclose(float(out["ess"]), 5., rtol=1e-6)
    out = step(tf.fill([10, 784], np.nan), tf.constant([0, 1]))
    assert float(out["finite"]) == 0. and np.isnan(float(out["ess"]))


def _bernoulli_reference(x, logits):
    """float64 sum_j x_j l_j - softplus(l_j) over the last axis (NumPy, exact enough)."""
    x, logits = np.asarray(x, np.float64), np.asarray(logits, np.float64)
    return np.sum(x * logits - np.logaddexp(0., logits), axis=-1)


@pytest.mark.parametrize("d", [784, 30, 13, 1])  # groups of 16, 15, none (prime), 1
@pytest.mark.parametrize("jit", [False, True])
def test_bernoulli_log_prob_is_x_l_minus_softplus_to_float32_rounding(d, jit):
    # bernoulli_log_prob = sum_j (x l - max(l, 0)) - sum over groups of log prod(1 + e^-|l|):
    # the same function as sum_j x_j l_j - softplus(l_j). Against a float64 reference over
    # logits from -60 to 60 (saturated pixels included), binary and relaxed x, and the
    # [k, batch, d] x [batch, d] broadcast of log_weights. Its gradient in the logits is
    # x - sigmoid(l).
    from tfp_iwae import networks
    rng = np.random.RandomState(d)
    logits = (rng.randn(3, 5, d) * 20.).clip(-60, 60).astype(np.float32)
    logits[0, 0, :] = 60.
    x = (rng.rand(5, d) < 0.4).astype(np.float32)
    x[1] = rng.rand(d).astype(np.float32)  # intensities: the continuous relaxation
    lt = tf.constant(logits)

    def f(l):
        with tf.GradientTape() as tape:
            tape.watch(l)
            lp = networks.bernoulli_log_prob(tf.constant(x), l)
        return lp, tape.gradient(lp, l)
    lp, grad = (tf.function(f, jit_compile=True) if jit else f)(lt)
    assert lp.shape == (3, 5)
    want = _bernoulli_reference(x, logits)
    np.testing.assert_allclose(lp.numpy(), want, rtol=0, atol=1e-6 * d * 60 + 1e-5)
    sig = 1. / (1. + np.exp(-logits.astype(np.float64)))
    np.testing.assert_allclose(grad.numpy(), x - sig, rtol=0, atol=1e-6)
    # The distribution's log_prob is this function (eager; summation order may differ).
    px = networks.BernoulliLogits(lt)
    np.testing.assert_allclose(px.log_prob(x).numpy(), want, rtol=0, atol=1e-6 * d * 60 + 1e-5)


def test_bernoulli_log_prob_is_accurate_over_784_pixels_at_paper_scale():
    # The L_5000 evaluation sums 784 pixels: the grouped products must not cost more than
    # float32 summation does. Mean absolute error against float64 over 1,000 rows of
    # logits N(0, 5^2): under 1e-4 nats, no worse than the plain softplus form's.
    from tfp_iwae import networks
    rng = np.random.RandomState(1)
    logits = (rng.randn(1000, 784) * 5.).astype(np.float32)
    x = (rng.rand(1000, 784) < 0.3).astype(np.float32)
    want = _bernoulli_reference(x, logits)
    fast = networks.bernoulli_log_prob(x, logits).numpy().astype(np.float64)
    plain = tf.reduce_sum(x * logits - tf.nn.softplus(logits), -1).numpy().astype(np.float64)
    fast_err, plain_err = np.mean(np.abs(fast - want)), np.mean(np.abs(plain - want))
    assert fast_err < 1e-4, fast_err
    assert fast_err < 2 * plain_err + 1e-5, (fast_err, plain_err)
