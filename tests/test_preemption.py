"""SIGTERM / SIGINT: finish the step, checkpoint it, exit 128 + signal, resume bit-exactly."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from helpers import FAST, ROOT, checkpoint_values, launcher_env, run
from tfp_iwae import preemption, rundir


def test_stop_request_records_signals_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with preemption.StopRequest() as stop:
        assert stop.requested is None
        os.kill(os.getpid(), signal.SIGTERM)  # would end the process without the block
        time.sleep(0.1)
        assert stop.requested == signal.SIGTERM and stop.name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


@contextlib.contextmanager
def handler_during(signum, handler):
    """`handler` for `signum` inside the block, the previous one restored after it."""
    before = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, before)


def test_second_sigint_interrupts_at_once():
    # SIGINT as in an interactive Python (KeyboardInterrupt), whatever the test runner was
    # started with: a shell starts background jobs (`pytest &`, nohup) with SIGINT
    # ignored, and StopRequest rightly leaves an ignored signal alone.
    with handler_during(signal.SIGINT, signal.default_int_handler), \
            preemption.StopRequest() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.requested == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):  # Python's own SIGINT behaviour again
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.1)


def test_an_ignored_signal_stays_ignored():
    # A job started with SIGTERM ignored (e.g. by its scheduler) keeps it so: the stop
    # request neither installs a handler nor records the signal.
    with handler_during(signal.SIGTERM, signal.SIG_IGN):
        with preemption.StopRequest() as stop:
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
            assert stop.requested is None
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN


def test_disabled_stop_request_leaves_signals_alone():
    before = signal.getsignal(signal.SIGINT)
    with preemption.StopRequest(enabled=False):
        assert signal.getsignal(signal.SIGINT) is before


def test_exit_codes_are_the_shells():
    assert preemption.Preempted(signal.SIGTERM, 7, "ckpt-7").exit_code == 143
    assert preemption.Preempted(signal.SIGINT, 7, "ckpt-7").exit_code == 130


@pytest.mark.slow
def test_sigterm_checkpoints_the_step_reached_and_the_restart_is_bit_exact(trained_run,
                                                                         tmp_path):
    # The trained_run fixture is an uninterrupted 300-step run with the FAST flags and the
    # default seed (its validation and diagnostics do not touch weights, optimizer or the
    # data stream), so its ckpt-300 is the reference. Here: the same run with a checkpoint
    # interval longer than the run, sent SIGTERM after its first progress line.
    args = ["--max_steps=300", "--checkpoint_every=100000", "--eval_every=0", *FAST,
            "--log_every=10"]
    logdir = tmp_path / "preempted"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch", "train.py"),
                             f"--logdir={logdir}", *args], cwd=ROOT,
                            env=launcher_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step 10/300"):
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=120)
    out = "".join(lines) + out
    assert proc.returncode == 143, (out[-2000:], err[-2000:])  # 128 + SIGTERM
    stopped = [l for l in out.splitlines() if l.startswith("received SIGTERM at step ")]
    assert len(stopped) == 1, out[-2000:]
    at = int(stopped[0].split("at step ")[1].split(":")[0])
    assert 10 <= at < 300  # it finished the step it was in, and no more than the run
    ckpt = os.path.join(logdir, "checkpoints", f"ckpt-{at}")
    assert f"saved checkpoint {ckpt}" in stopped[0]
    assert tf.train.latest_checkpoint(os.path.join(logdir, "checkpoints")) == ckpt
    assert not (logdir / rundir.LOCK_FILE).exists()  # the lock went with the run
    again = run("train.py", f"--logdir={logdir}", *args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resumed from {ckpt} at step {at}" in again.stdout
    a = checkpoint_values(os.path.join(trained_run[0], "checkpoints", "ckpt-300"))
    b = checkpoint_values(os.path.join(logdir, "checkpoints", "ckpt-300"))
    assert a.keys() == b.keys() and len(a) == 14
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
