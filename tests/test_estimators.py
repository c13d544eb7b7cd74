"""Gradient estimators: each checked against its defining formula and its known properties.

Model: a linear-Gaussian p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I) with trainable
decoder (W, b) and an affine diagonal-Gaussian encoder q(z|x) = N(A x + c, diag(exp(d))^2),
all float64. Per-sample gradients are computed one sample at a time with autodiff:
  full  = d log w_i / d phi                  (through z_i and through q's density),
  path  = d log w_i / d phi with q's parameters stopped inside log q (only through z_i),
  score = d log q(z_i | x) / d phi at fixed z_i.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_iwae
from linear_gaussian import LinearGaussian
from tfp_iwae import estimators

tfd = tfp.distributions


class TrainableLG(LinearGaussian):
    """The linear-Gaussian model with trainable decoder (W, b) and encoder (A, c, log_std)."""

    def __init__(self, d=2, D=3, s=0.6, seed=0, optimal=False, dtype=np.float64):
        rng = np.random.RandomState(seed)
        var = lambda a: tf.Variable(np.asarray(a, dtype))  # noqa: E731
        # Orthogonal columns make the exact posterior diagonal (so q can match it).
        q_mat, _ = np.linalg.qr(rng.randn(D, d))
        w = q_mat * np.array([1.5, 0.8][:d])
        W = var(w)
        b = rng.randn(D)
        super().__init__(W, var(b), s, dtype)
        if optimal:
            lam = np.sum(w ** 2, axis=0)
            post_var = 1. / (1. + lam / s ** 2)
            a = (post_var[:, None] * w.T) / s ** 2
            self.A = var(a)
            self.c = var(-a @ b)
            self.log_std = var(0.5 * np.log(post_var))
        else:
            self.A = var(rng.randn(d, D) * 0.3)
            self.c = var(rng.randn(d) * 0.3)
            self.log_std = var(rng.randn(d) * 0.3 - 0.5)

    @property
    def decoder_variables(self):
        return [self.W, self.b]

    @property
    def encoder_variables(self):
        return [self.A, self.c, self.log_std]

    def posterior_params(self, x):
        return tf.linalg.matvec(self.A, x) + self.c, tf.exp(self.log_std) * tf.ones_like(
            x[..., :self.d])

    def posterior(self, x):
        loc, scale = self.posterior_params(x)
        return tfd.MultivariateNormalDiag(loc, scale)

    def grads(self, name, x, k, seed):
        out = tfp_iwae.estimator_gradients(
            name, x, prior=self.prior, likelihood_fn=self.likelihood,
            posterior_fn=self.posterior, encoder_variables=self.encoder_variables,
            decoder_variables=self.decoder_variables, num_samples=k, seed=seed)
        return out

    def per_sample(self, x, k, seed):
        """log w [k, B] and per-sample gradients (lists over variables of [k, B, ...])."""
        z0 = self.posterior(x).sample(k, seed=seed)
        loc0, scale0 = self.posterior_params(x)
        eps = ((z0 - loc0) / scale0).numpy()
        B = x.shape[0]
        full, path, score, dec = [], [], [], []
        lw = np.zeros([k, B])
        for i in range(k):
            for j in range(B):
                xj = x[j:j + 1]
                with tf.GradientTape(persistent=True) as tape:
                    loc, scale = self.posterior_params(xj)
                    z = loc + scale * eps[i, j]
                    log_p = self.prior.log_prob(z) + self.likelihood(z).log_prob(xj)
                    log_w = log_p - tfd.MultivariateNormalDiag(loc, scale).log_prob(z)
                    log_w_path = log_p - tfd.MultivariateNormalDiag(
                        tf.stop_gradient(loc), tf.stop_gradient(scale)).log_prob(z)
                    log_q_score = tfd.MultivariateNormalDiag(loc, scale).log_prob(
                        tf.stop_gradient(z))
                lw[i, j] = float(log_w[0])
                full.append(tape.gradient(log_w, self.encoder_variables))
                path.append(tape.gradient(log_w_path, self.encoder_variables))
                score.append(tape.gradient(log_q_score, self.encoder_variables))
                dec.append(tape.gradient(log_w, self.decoder_variables))

        def stack(gs):
            return [np.stack([g[v].numpy() for g in gs]).reshape((k, B) + g0.shape)
                    for v, g0 in enumerate(gs[0])]
        return lw, stack(full), stack(path), stack(score), stack(dec)


def softmax(a, axis=0):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def weighted(coef, per_sample, batch):
    """-(1/B) sum_{i,b} coef[i,b] * g[i,b,...] for each variable."""
    return [-np.tensordot(coef, g, axes=([0, 1], [0, 1])) / batch for g in per_sample]


def group_softmax(lw, m, k):
    return softmax(lw.reshape(m, k, -1), axis=1).reshape(m * k, -1) / m


def definitions(name, lw, full, path, score, dec):
    """(decoder grads, encoder grads) of each estimator's loss, written from its definition."""
    k, B = lw.shape
    w = softmax(lw)
    if name == "iwae":
        return weighted(w, dec, B), weighted(w, full, B)
    if name == "vae":
        return weighted(np.full_like(w, 1 / k), dec, B), weighted(np.full_like(w, 1 / k), full, B)
    if name == "stl":
        return weighted(w, dec, B), weighted(w, path, B)
    if name == "dreg":
        return weighted(w, dec, B), weighted(w ** 2, path, B)
    if name == "rws":  # wake-q: maximise sum_i w~_i log q(z_i|x) at fixed z_i
        return weighted(w, dec, B), weighted(w, score, B)
    if name == "miwae(2,3)":
        c = group_softmax(lw, 2, 3)
        return weighted(c, dec, B), weighted(c, full, B)
    if name == "ciwae(0.3)":
        c = 0.3 / k + 0.7 * w
        return weighted(c, dec, B), weighted(c, full, B)
    if name == "piwae(2,3)":
        return weighted(w, dec, B), weighted(group_softmax(lw, 2, 3), full, B)
    raise KeyError(name)


NAMES = ["iwae", "vae", "stl", "dreg", "rws", "miwae(2,3)", "ciwae(0.3)", "piwae(2,3)"]


@pytest.fixture(scope="module")
def per_sample_reference():
    model = TrainableLG()
    x = np.random.RandomState(4).randn(2, 3)
    return model, x, model.per_sample(x, 6, seed=[3, 4])


@pytest.mark.parametrize("name", NAMES)
def test_gradients_equal_the_defining_formula(name, per_sample_reference):
    model, x, (lw, full, path, score, dec) = per_sample_reference
    out = model.grads(name, x, 6, seed=[3, 4])
    np.testing.assert_allclose(out["log_weights"].numpy(), lw, rtol=1e-10)
    want_dec, want_enc = definitions(name, lw, full, path, score, dec)
    for got, want in zip(out["decoder_grads"], want_dec):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-8, atol=1e-12)
    for got, want in zip(out["encoder_grads"], want_enc):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_surrogate_losses_have_the_same_gradients(name, per_sample_reference):
    # The explicit surrogates (two losses, stop-gradients written out) agree with the
    # fused one-backward-pass implementation.
    model, x, _ = per_sample_reference
    out = model.grads(name, x, 6, seed=[3, 4])
    z0 = model.posterior(x).sample(6, seed=[3, 4])
    loc0, scale0 = model.posterior_params(x)
    eps = (z0 - loc0) / scale0
    with tf.GradientTape(persistent=True) as tape:
        loc, scale = model.posterior_params(x)
        z = loc + scale * eps
        log_p = model.prior.log_prob(z) + model.likelihood(z).log_prob(x)
        q = tfd.MultivariateNormalDiag(loc, scale)
        lw = log_p - q.log_prob(z)
        lw_path = log_p - tfd.MultivariateNormalDiag(
            tf.stop_gradient(loc), tf.stop_gradient(scale)).log_prob(z)
        lq_score = q.log_prob(tf.stop_gradient(z))
        bound, dec_loss, enc_loss = tfp_iwae.surrogate_losses(name, lw, lw_path, lq_score)
    for got, want in zip(out["decoder_grads"], tape.gradient(dec_loss,
                                                             model.decoder_variables)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-8, atol=1e-12)
    for got, want in zip(out["encoder_grads"], tape.gradient(enc_loss,
                                                             model.encoder_variables)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(bound.numpy(), out["bound"].numpy(), rtol=1e-12)


class _Shifted:
    """p(x|z) with a constant shift_i (no gradient) added to sample i's log density.

    Moves whole groups of log weights any number of nats apart without changing any
    gradient of log w_i.
    """

    def __init__(self, dist, shift):
        self.dist, self.shift = dist, shift

    def log_prob(self, x):
        return self.dist.log_prob(x) + self.shift


@pytest.fixture(scope="module")
def float32_reference():
    model = TrainableLG(seed=1, dtype=np.float32)
    x = np.random.RandomState(9).randn(2, 3).astype(np.float32)
    return model, x, model.per_sample(x, 6, seed=[5, 6])


@pytest.mark.parametrize("gap", [95., 110., 200.])
@pytest.mark.parametrize("name", NAMES)
def test_float32_gradients_stay_exact_when_a_group_lags_by_gap_nats(name, gap,
                                                                    float32_reference):
    # Samples 3-5 (PIWAE's and MIWAE's second group of K=3) are moved `gap` nats below
    # samples 0-2. Their IWAE coefficient softmax(log w)_i ~ e^-gap is then below float32's
    # smallest normal number (e^-87.3) and exactly 0 beyond e^-103.9, while PIWAE's
    # encoder coefficient softmax_group(log w)_i / M is unchanged (~1/2 for the group's
    # best sample). Every estimator must still give its defining gradient (computed in
    # float64 from per-sample gradients); computing PIWAE's as c_i (= 0) times
    # c'_i / c_i (= inf) gave 0 * inf = NaN.
    model, x, (lw, full, path, score, dec) = float32_reference
    shift = np.repeat([0., -gap], 3)[:, None]
    out = tfp_iwae.estimator_gradients(
        name, x, prior=model.prior,
        likelihood_fn=lambda z: _Shifted(model.likelihood(z), tf.constant(shift, tf.float32)),
        posterior_fn=model.posterior, encoder_variables=model.encoder_variables,
        decoder_variables=model.decoder_variables, num_samples=6, seed=[5, 6])
    np.testing.assert_allclose(out["log_weights"].numpy(), lw + shift, rtol=1e-5)
    want_dec, want_enc = definitions(name, lw + shift, full, path, score, dec)
    for got, want in zip(out["decoder_grads"] + out["encoder_grads"], want_dec + want_enc):
        assert np.all(np.isfinite(got.numpy())), (name, gap)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4,
                                   atol=1e-5 * max(1., np.abs(want).max()))
    if name == "piwae(2,3)":
        # The encoder follows MIWAE(2,3), which a constant shift of one group's log
        # weights does not change: its gradient is the unshifted one, far from zero.
        _, enc0 = definitions("miwae(2,3)", lw, full, path, score, dec)
        for got, want in zip(out["encoder_grads"], enc0):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-4,
                                       atol=1e-5 * max(1., np.abs(want).max()))
        assert max(np.abs(w).max() for w in enc0) > 1e-2


def test_special_cases_of_the_grouped_and_combined_bounds():
    lw = tf.constant(np.random.RandomState(0).randn(12, 3) * 3)
    get = estimators.get_estimator

    def same(a, b):
        wa, wb = get(a)(lw), get(b)(lw)
        for fa, fb in zip(wa, wb):
            np.testing.assert_allclose(fa.numpy(), fb.numpy(), rtol=1e-12, atol=1e-14)

    same("miwae(1,12)", "iwae")   # MIWAE(1, K) = IWAE(K)
    same("miwae(12,1)", "vae")    # MIWAE(M, 1) = VAE(M)
    same("ciwae(1)", "vae")       # CIWAE(1) = VAE
    same("ciwae(0)", "iwae")      # CIWAE(0) = IWAE
    same("piwae(1,12)", "iwae")   # PIWAE(1, K): both nets on IWAE(K)
    # The miwae bound is the mean over groups of L_K.
    g = lw.numpy().reshape(3, 4, 3)
    want = np.mean(np.log(np.mean(np.exp(g), axis=1)), axis=0)
    np.testing.assert_allclose(get("miwae(3,4)")(lw).bound.numpy(), want, rtol=1e-10)


def _mean_and_se(model, name, x, k, draws):
    gs = [np.concatenate([g.numpy().ravel() for g in model.grads(
        name, x, k, seed=[7, i])["encoder_grads"]]) for i in range(draws)]
    gs = np.array(gs)
    return gs.mean(0), gs.std(0, ddof=1) / np.sqrt(draws), gs


def test_dreg_is_unbiased_for_the_iwae_encoder_gradient():
    # E[DReG encoder gradient] = E[IWAE encoder gradient] (Tucker et al. 2018, eq. 7).
    model = TrainableLG(seed=1)
    x = np.tile(np.random.RandomState(5).randn(1, 3), (200, 1))  # 200 draws per call
    m_iwae, se_iwae, _ = _mean_and_se(model, "iwae", x, 5, 30)
    m_dreg, se_dreg, _ = _mean_and_se(model, "dreg", x, 5, 30)
    z = (m_iwae - m_dreg) / np.hypot(se_iwae, se_dreg)
    assert np.all(np.abs(z) < 4.5), z
    assert np.linalg.norm(m_iwae) > 10 * np.max(np.hypot(se_iwae, se_dreg))  # not ~0


def test_stl_is_unbiased_at_k_1():
    # With k = 1 the score term has zero expectation, so STL and IWAE (= VAE) agree in
    # expectation.
    model = TrainableLG(seed=2)
    x = np.tile(np.random.RandomState(6).randn(1, 3), (200, 1))
    m_iwae, se_iwae, _ = _mean_and_se(model, "iwae", x, 1, 30)
    m_stl, se_stl, _ = _mean_and_se(model, "stl", x, 1, 30)
    z = (m_iwae - m_stl) / np.hypot(se_iwae, se_stl)
    assert np.all(np.abs(z) < 4.5), z


def test_path_estimators_vanish_at_the_exact_posterior():
    # q = p(z|x) makes log w_i = log p(x) for every z: d log w / d z = 0, so the
    # STL and DReG encoder gradients are exactly zero, while IWAE's score term is not.
    model = TrainableLG(optimal=True)
    x = np.random.RandomState(7).randn(4, 3)
    for name in ("stl", "dreg"):
        for g in model.grads(name, x, 10, seed=[1, 2])["encoder_grads"]:
            np.testing.assert_allclose(g.numpy(), 0., atol=1e-10)
    iwae = model.grads("iwae", x, 10, seed=[1, 2])["encoder_grads"]
    lw = model.grads("iwae", x, 10, seed=[1, 2])["log_weights"].numpy()
    np.testing.assert_allclose(lw, np.broadcast_to(lw[0], lw.shape), atol=1e-10)
    # The IWAE encoder gradient is also zero in expectation here, but per draw its
    # score term sum_i w~_i d log q / d phi = mean_i d log q / d phi is not zero.
    assert max(np.abs(g.numpy()).max() for g in iwae) > 1e-6


@pytest.mark.slow
def test_dreg_has_higher_encoder_snr_than_iwae_at_k_50():
    # The reason DReG exists: IWAE's encoder SNR decays like 1/sqrt(k) (Rainforth et
    # al. 2018), DReG's does not. SNR = |mean| / std over repeated draws, per parameter,
    # measured near the optimum (exact posterior parameters plus a small perturbation),
    # where training spends its time.
    model = TrainableLG(seed=3, optimal=True)
    rng = np.random.RandomState(0)
    for v in model.encoder_variables:
        v.assign_add(rng.randn(*v.shape) * 0.1)
    x = np.random.RandomState(8).randn(1, 3)
    _, _, g_iwae = _mean_and_se(model, "iwae", x, 50, 200)
    _, _, g_dreg = _mean_and_se(model, "dreg", x, 50, 200)
    snr = lambda g: np.abs(g.mean(0)) / g.std(0)  # noqa: E731
    assert np.median(snr(g_dreg)) > 5 * np.median(snr(g_iwae)), (snr(g_dreg), snr(g_iwae))


@pytest.mark.parametrize("bad,match", [
    ("iwea", "Unknown estimator 'iwea'; known: iwae, vae"),
    ("miwae(2)", "takes two arguments"),
    ("miwae(0,5)", "M must be >= 1"),
    ("ciwae(1.5)", r"beta must be a finite number in \[0, 1\], got 1.5"),
    ("piwae(a,2)", "M must be an integer"),
])
def test_bad_estimator_names(bad, match):
    with pytest.raises(ValueError, match=match):
        estimators.get_estimator(bad)


def test_grouped_estimator_checks_num_samples():
    with pytest.raises(ValueError, match=r"M\*K = 64 samples .* num_samples is 50"):
        estimators.get_estimator("miwae(8,8)", num_samples=50)


def test_an_estimator_object_passes_the_same_checks_as_its_name():
    # A grouped estimator draws exactly M*K samples, whether named or passed in built.
    built = estimators.get_estimator("miwae(8,8)")
    with pytest.raises(ValueError, match=r"M\*K = 64 samples .* num_samples is 50"):
        estimators.get_estimator(built, num_samples=50)
    assert estimators.get_estimator(built, num_samples=64) is built


def test_every_table_row_parses_back_to_its_canonical_name():
    # ESTIMATOR_NAMES, canonical names and example names all come from ESTIMATORS: an
    # example name that fits k parses to itself and needs k (or any k) samples.
    assert estimators.ESTIMATOR_NAMES == tuple(
        estimators.estimator_signature(key) for key in estimators.ESTIMATORS)
    for key, spec in estimators.ESTIMATORS.items():
        for k in (1, 5, 50, 64):
            name = estimators.example_name(key, k)
            est = estimators.get_estimator(name, num_samples=k)
            assert est.name == name and est.plain == spec.plain
            assert est.num_samples in (None, k)
    assert estimators.example_name("miwae", 50) == "miwae(5,10)"
    with pytest.raises(ValueError, match="iwae takes no arguments"):
        estimators.get_estimator("iwae(3)")
