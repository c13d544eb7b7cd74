"""The linear-Gaussian model of the objective and estimator tests (float64 by default).

p(z) = N(0, I_d), p(x|z) = N(W z + b, s^2 I_D): log p(x) and p(z|x) are exact,

    p(x) = N(b, W W^T + s^2 I);  p(z|x) = N(S W^T (x - b) / s^2, S),
    S = (I + W^T W / s^2)^{-1}.

`LinearGaussian.random(...)` draws W `[D, d]` and b `[D]` from a seeded RandomState (the
`linear_gaussian` fixture of conftest.py); tests/test_estimators.py subclasses it with
trainable W, b (tf.Variables) and an encoder.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

__all__ = ["LinearGaussian"]


class LinearGaussian:
    """p(z) = N(0, I_d), p(x|z) = N(W z + b, s^2 I_D), z `[*batch, d]`, x `[*batch, D]`.

    W: `[D, d]` and b: `[D]`, NumPy arrays or tf.Variables of `dtype`; s: the
    likelihood's standard deviation (a float).
    """

    def __init__(self, W, b, s, dtype=np.float64):
        self.W, self.b, self.s, self.dtype = W, b, s, dtype
        self.D, self.d = (int(n) for n in W.shape)

    @classmethod
    def random(cls, d=2, D=3, s=0.7, seed=0):
        """W, b with standard normal entries from `np.random.RandomState(seed)`."""
        rng = np.random.RandomState(seed)
        W = rng.randn(D, d)
        return cls(W, rng.randn(D), s)

    @property
    def prior(self):
        return tfd.MultivariateNormalDiag(tf.zeros(self.d, self.dtype),
                                          tf.ones(self.d, self.dtype))

    def likelihood(self, z):
        loc = tf.linalg.matvec(tf.convert_to_tensor(self.W), z) + self.b
        return tfd.MultivariateNormalDiag(loc, self.s * tf.ones(self.D, self.dtype))

    def log_marginal(self, x):
        """Exact log p(x) `[*batch]` in nats."""
        W, b = np.asarray(self.W), np.asarray(self.b)
        cov = W @ W.T + self.s ** 2 * np.eye(self.D)
        return tfd.MultivariateNormalTriL(b, np.linalg.cholesky(cov)).log_prob(x)

    def exact_posterior(self, x):
        """p(z|x) for x `[batch, D]`: batch shape `[batch]`, event shape `[d]`."""
        W, b = np.asarray(self.W), np.asarray(self.b)
        S = np.linalg.inv(np.eye(self.d) + W.T @ W / self.s ** 2)
        mean = (np.asarray(x) - b) @ W @ S.T / self.s ** 2
        return tfd.MultivariateNormalTriL(mean, np.linalg.cholesky(S))

    def sample_x(self, n, seed=1):
        """n observations `[n, D]` from p(x), NumPy, drawn with `RandomState(seed)`."""
        W, b = np.asarray(self.W), np.asarray(self.b)
        rng = np.random.RandomState(seed)
        z = rng.randn(n, self.d)
        return z @ W.T + b + self.s * rng.randn(n, self.D)
