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

from helpers import FAST, ROOT, checkpoint_values, default_signals, launcher_env, run
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


def start_train(logdir, *args):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "launch", "train.py"),
                             f"--logdir={logdir}", *args], cwd=ROOT, env=launcher_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)


def send_after_line(proc, prefix, signum, delay=0.):
    """Sends `signum` once a stdout line starts with `prefix`; (stdout, stderr, seconds
    from the signal to the exit)."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix):
            time.sleep(delay)
            proc.send_signal(signum)
            sent = time.perf_counter()
            break
    else:
        raise AssertionError("".join(lines) + proc.stderr.read())
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a signal that was not answered: fail, not hang
            proc.kill()
            proc.communicate()
    return "".join(lines) + out, err, time.perf_counter() - sent


@pytest.mark.slow
def test_sighup_checkpoints_and_exits_129(tmp_path):
    # A closed terminal or ssh connection: handled like SIGTERM (it used to kill the run,
    # losing the steps since the last checkpoint and leaving its lock).
    logdir = tmp_path / "hup"
    proc = start_train(logdir, "--max_steps=100000", "--checkpoint_every=100000",
                       "--eval_every=0", *FAST, "--log_every=10")
    out, err, _ = send_after_line(proc, "step 10/", signal.SIGHUP)
    assert proc.returncode == 129, (out[-2000:], err[-2000:])
    (line,) = [l for l in out.splitlines() if l.startswith("received SIGHUP at step ")]
    at = int(line.split("at step ")[1].split(":")[0])
    assert tf.train.latest_checkpoint(str(logdir / "checkpoints")).endswith(f"ckpt-{at}")
    assert not (logdir / rundir.LOCK_FILE).exists()


@pytest.mark.slow
def test_sigint_during_start_up_exits_130_without_a_traceback(tmp_path):
    proc = start_train(tmp_path / "early", "--max_steps=10")
    time.sleep(1.)  # importing TensorFlow: before the training loop takes SIGINT over
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().endswith("interrupted"), err[-2000:]


def test_sigint_inside_an_import_exits_130_even_where_the_importer_catches_everything(
        tmp_path):
    # SIGINT while a module loads, under an importer that catches every exception, as
    # NumPy's C extension does (it turned the exit into an ImportError with a traceback
    # when Ctrl-C landed in TensorFlow's import on a loaded machine): the process still
    # exits 130 with the one line, before the importer sees anything.
    (tmp_path / "interrupts_itself.py").write_text(
        "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)\n")
    script = ("import sys\nfrom tfp_iwae.cli import common\ncommon.start()\n"
              f"sys.path.insert(0, {str(tmp_path)!r})\n"
              "try:\n    import interrupts_itself\n"
              "except BaseException as e:\n    print('caught', repr(e))\n    sys.exit(1)\n"
              "print('imported')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env=launcher_env(), cwd=ROOT,
                          preexec_fn=default_signals)
    assert proc.returncode == 130, (proc.stdout, proc.stderr[-2000:])
    assert proc.stdout == "" and proc.stderr.strip() == "interrupted", proc.stderr[-2000:]


@pytest.mark.slow
def test_sigterm_during_validation_stops_it_within_seconds(tmp_path):
    # A long validation (L_5000 of 500 images: ~10 s on 2 cores) starts right after the
    # step 20 line; SIGTERM half a second into it stops it between its batches of
    # VALIDATION_BATCH images, writes the step's checkpoint and exits (it used to finish
    # the validation first: 47 s in one probe, past a cluster's grace period).
    logdir = tmp_path / "val"
    proc = start_train(logdir, "--max_steps=40", "--log_every=20", "--eval_every=20",
                       "--eval_images=500", "--eval_samples=5000", "--batch_size=20",
                       "--checkpoint_every=1000")
    out, err, seconds = send_after_line(proc, "step 20/", signal.SIGTERM, delay=0.5)
    assert proc.returncode == 143, (out[-2000:], err[-2000:])
    assert "validation step 20: stopped unfinished" in out
    assert "received SIGTERM at step 20" in out
    assert seconds < 5., seconds
    assert tf.train.latest_checkpoint(str(logdir / "checkpoints")).endswith("ckpt-20")
