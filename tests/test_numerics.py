"""Numerics: float32 bounds stay finite in extreme regimes; non-finite steps are not applied."""

import numpy as np
import tensorflow as tf

import tfp_iwae
from tfp_iwae import evaluation, training


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
    opt = training.make_optimizer()
    step = training.make_train_step(m, opt, 5)
    before = [v.numpy().copy() for v in m.variables]
    out = step(tf.fill([10, 784], np.nan), tf.constant([0, 1]))
    assert float(out["finite"]) == 0.
    for b, v in zip(before, m.variables):
        np.testing.assert_array_equal(b, v.numpy())
    out = step(tf.constant(binary(10)), tf.constant([0, 1]))
    assert float(out["finite"]) == 1.
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, m.variables))
