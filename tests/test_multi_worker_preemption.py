"""A multi-worker run survives preemption (issue #32): SIGTERM to one worker stops both at
one step with a checkpoint and status 143; re-running the commands resumes and ends where
an uninterrupted two-worker run ends."""

import os
import re
import signal

import numpy as np
import pytest

from helpers import FAST, Workers, checkpoint_values
from tfp_iwae import config as run_config
from tfp_iwae import rundir, trainer

def test_multi_worker_calls_are_not_sized_by_time():
    # The workers name the step at which they all stop by counting calls, so a worker's
    # calls must not depend on its own timings.
    timed, fixed = trainer._CallSizer(100), trainer._CallSizer(100, by_time=False)
    for sizer in (timed, fixed):
        sizer.record(10, 0.01)
    assert timed.size == 100 and fixed.size == 10


@pytest.mark.slow
def test_sigterm_to_the_non_chief_worker_stops_both_at_one_step_and_resume_matches(
        tmp_path):
    logdir = tmp_path / "mw"
    args = ["--strategy=multi_worker", "--max_steps=150", "--checkpoint_every=25",
            "--eval_every=0", "--noxla", *FAST, "--log_every=5"]
    started = []

    def workers(logdir, name):
        (tmp_path / name).mkdir()
        started.append(Workers([f"--logdir={logdir}", *args], tmp_path / name))
        return started[-1]

    try:
        # SIGTERM to worker 1 once the chief logged step 25 (training runs; the periodic
        # checkpoint of step 25 follows that line).
        run = workers(logdir, "preempted")
        assert run.wait_for_chief_line("step 25/"), run.stdout(0)[-3000:]
        run.procs[1].send_signal(signal.SIGTERM)
        (rc0, out0, err0), (rc1, _, err1) = run.finish()
        assert rc0 == 143, (out0[-2000:], err0[-3000:])
        assert rc1 == 143, err1[-3000:]
        stopped = re.search(r"received SIGTERM on worker 1 at step (\d+): saved checkpoint "
                            r"(\S+); stopping \(re-run the same commands to resume\)", out0)
        assert stopped, out0[-3000:]
        s, path = int(stopped.group(1)), stopped.group(2)
        assert 25 < s < 150 and path == str(logdir / "checkpoints" / f"ckpt-{s}")
        for err, where in ((err0, logdir / "checkpoints"),
                           (err1, logdir / "worker_scratch" / "1")):
            assert f"stopped: stopped by SIGTERM at step {s}; checkpoint {where}/ckpt-{s}" \
                in err, err[-3000:]
        # A checkpoint of the agreed step, newer than the periodic one, with the run's
        # model flags (as the loop's own checkpoints record them).
        assert rundir.checkpoint_flags(path) == run_config.model_flags(
            rundir.load_config(str(logdir)))
        steps = sorted(int(f.split("-")[1].split(".")[0])
                       for f in os.listdir(logdir / "checkpoints") if f.endswith(".index"))
        assert steps[0] == 25 and steps[-1] == s, steps

        # Re-running the same commands resumes from it and ends where an uninterrupted
        # two-worker run ends.
        (rc0, out0, err0), (rc1, _, err1) = workers(logdir, "resumed").finish()
        assert rc0 == 0, err0[-3000:]
        assert rc1 == 0, err1[-3000:]
        assert f"resumed from {path} at step {s}" in out0, out0[-3000:]
        (rc0, _, err0), (rc1, _, err1) = workers(tmp_path / "ref", "reference").finish()
        assert rc0 == 0 and rc1 == 0, (err0[-3000:], err1[-3000:])
    finally:
        for w in started:
            w.kill()
    a = checkpoint_values(str(logdir / "checkpoints" / "ckpt-150"))
    b = checkpoint_values(str(tmp_path / "ref" / "checkpoints" / "ckpt-150"))
    assert a.keys() == b.keys() and a
    for k in a:  # the tolerance of the multi-worker test against one process
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)
