"""Kill safety: SIGKILL a training run at 10 random moments, restart it each time."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from helpers import FAST, ROOT, checkpoint_values, launcher_env, run

pytestmark = pytest.mark.slow


def latest_step(ckdir):
    path = tf.train.latest_checkpoint(ckdir)
    return (int(path.rsplit("-", 1)[1]), path) if path else (0, None)


def test_ten_random_sigkills_lose_no_checkpoint_and_reproduce_the_run(tmp_path):
    # Checkpoints every 10 steps, so many kills land during a checkpoint write. After each
    # kill the newest completed checkpoint must be readable and never older than before;
    # the finished run must equal an uninterrupted one bit for bit (same seed, same data
    # stream and step seeds, deterministic CPU kernels).
    args = ["--max_steps=1000", "--checkpoint_every=10", "--keep_checkpoints=2",
            "--eval_every=0", *FAST]
    logdir = str(tmp_path / "killed")
    ckdir = os.path.join(logdir, "checkpoints")
    rng = np.random.RandomState(0)
    env = launcher_env()
    last = 0
    for kill in range(10):
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch", "train.py"),
                                 f"--logdir={logdir}", *args], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # wait until this process has made progress past the previous checkpoint, then a
        # random extra moment (start-up, training, or in the middle of a save)
        deadline = time.time() + 120
        while time.time() < deadline and latest_step(ckdir)[0] <= last and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0., 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        step, path = latest_step(ckdir)
        assert step >= last, f"kill {kill}: checkpoint went back from {last} to {step}"
        assert path is not None
        tf.train.load_checkpoint(path)  # the newest completed checkpoint reads
        last = step
    assert 0 < last < 1000, last  # the run was really interrupted
    final = run("train.py", f"--logdir={logdir}", *args)
    assert final.returncode == 0, final.stderr[-2000:]
    assert "resumed from" in final.stdout
    ref = str(tmp_path / "ref")
    assert run("train.py", f"--logdir={ref}", *args).returncode == 0
    a = checkpoint_values(os.path.join(ref, "checkpoints", "ckpt-1000"))
    b = checkpoint_values(os.path.join(ckdir, "ckpt-1000"))
    assert a.keys() == b.keys() and len(a) == 14
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
