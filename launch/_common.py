"""Shared launcher plumbing: quiet TF logs, error reporting, flag checks, run restore.

The launchers import the installed `tfp_iwae` (`pip install -e .` or `pip install .`);
nothing here changes the import path.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def fail(message):
    """Prints `error: message` to stderr and exits with status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def quiet_absl():
    from absl import logging
    logging.set_verbosity(logging.WARNING)


def check_flags(checks):
    """Fails naming every bad flag at once: `checks` is [(flag, value, ok, expected)]."""
    bad = [f"--{flag}: expected {expected}, got {value!r}" for flag, value, ok, expected
           in checks if not ok]
    if bad:
        fail("; ".join(bad) + ".")


def restore_run(logdir, checkpoint=None):
    """(config, model, checkpoint path) of a training run in `logdir` (`rundir.restore_run`);
    fails with its message."""
    from tfp_iwae import config, data, rundir
    try:
        return rundir.restore_run(logdir, checkpoint)
    except (config.TrainingError, data.DataError) as e:
        fail(str(e))
