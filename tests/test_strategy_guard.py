"""The non-finite guard under tf.distribute: a bad step must not move anything."""

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT

pytestmark = pytest.mark.slow

# Two logical CPU devices must be configured before TensorFlow starts: a fresh process.
SCRIPT = r"""
import json
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import tfp_iwae
from tfp_iwae import schedule, step as step_lib
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = tfp_iwae.IWAE(1, seed=0)
    opt = schedule.make_optimizer(1e-3)
step = step_lib.make_train_step(model, opt, 3, jit_compile=False, strategy=strategy)
x = (np.random.RandomState(0).rand(4, 784) > .5).astype(np.float32)
for i in range(2):  # two good steps: Adam's moments are now non-zero
    good = float(step(tf.constant(x), tf.constant([0, i]))["finite"])
snapshot = lambda vs: [v.numpy().copy() for v in vs]
weights, slots = snapshot(model.variables), snapshot(opt.variables)
iterations = int(opt.iterations.numpy())
bad = x.copy()
bad[1, 5] = np.nan  # one NaN pixel: a NaN bound on replica 0
flag = float(step(tf.constant(bad), tf.constant([0, 9]))["finite"])
same = lambda a, vs: all(np.array_equal(u, v.numpy()) for u, v in zip(a, vs))
replicas = [[c.numpy() for c in strategy.experimental_local_results(v.value)]
            for v in model.variables]
res = dict(good=good, bad=flag, iterations=[iterations, int(opt.iterations.numpy())],
           weights_unchanged=same(weights, model.variables),
           optimizer_unchanged=same(slots, opt.variables),
           replicas_agree=all(np.array_equal(*r) for r in replicas))
step(tf.constant(x), tf.constant([0, 10]))  # a good step after it still updates
res.update(after_good=[int(opt.iterations.numpy()), not same(weights, model.variables)])
print(json.dumps(res))
"""


def test_non_finite_step_under_mirrored_strategy_leaves_weights_and_adam_untouched():
    # With zeroed gradients Adam would still move every weight by lr * m_hat /
    # (sqrt(v_hat) + eps), m and v decaying from the good steps, and count an iteration.
    # The guard must skip the update itself: weights, moments and iterations unchanged.
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["good"] == 1. and res["bad"] == 0.
    assert res["iterations"] == [2, 2]
    assert res["weights_unchanged"] and res["optimizer_unchanged"]
    assert res["replicas_agree"]
    assert res["after_good"] == [3, True]
