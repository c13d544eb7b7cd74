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
    """(config, model, checkpoint path) of a training run in `logdir`."""
    import tensorflow as tf
    from tfp_iwae import data, loop
    try:
        config = loop.load_config(logdir)
    except loop.TrainingError as e:
        fail(str(e))
    path = checkpoint or tf.train.latest_checkpoint(f"{logdir}/checkpoints")
    if not path:
        fail(f"--logdir {logdir!r}: no checkpoint found in {logdir}/checkpoints.")
    try:
        train_x = data.load_array(config.dataset, "train", data_dir=config.data_dir,
                                  download=config.download)
        model = loop.build_model(config, data_mean=train_x.mean(0))
    except data.DataError as e:
        fail(str(e))
    except ValueError as e:
        fail(f"--logdir {logdir!r}: cannot build the model its run_config.json describes "
             f"({e}).")
    try:
        tf.train.Checkpoint(model=model.checkpointable()).read(
            path).expect_partial().assert_existing_objects_matched()
    except loop.RESTORE_ERRORS as e:
        fail(f"checkpoint {path!r} could not be read (corrupt or incompatible): {e}")
    return config, model, path
