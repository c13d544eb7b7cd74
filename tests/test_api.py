"""Public API contracts: argument checking, dtypes, distribution protocols, export."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfp_iwae
from tfp_iwae import training


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
    with pytest.raises(ValueError, match=match):
        training.make_optimizer(**kwargs)


def test_make_optimizer_accepts_numbers_and_schedules():
    opt = training.make_optimizer(np.float32(3e-4), beta_1=0., epsilon=1e-8)
    np.testing.assert_allclose(float(opt.learning_rate), 3e-4, rtol=1e-6)
    assert opt.epsilon == 1e-8 and opt.beta_1 == 0.
    sched = keras.optimizers.schedules.ExponentialDecay(1e-3, 100, 0.5)
    assert training.make_optimizer(sched) is not None
