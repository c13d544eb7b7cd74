"""The run directory (`--logdir`) of a training run: what is in it and how to read it back.

A logdir holds `train.lock` (while a process trains in it; see `runlock`, whose names are
re-exported here), `run_config.json` (the run's flags, written atomically once the run
really starts; a later start with other model flags is refused), `checkpoints/` (each
checkpoint also records the run's model flags) and TensorBoard event directories.

`restore_run` gives the config, the model and the checkpoint of a finished or running run
(used by `launch/evaluate.py`, `sample.py` and `export.py`); the training loop checks the
logdir, resumes from its newest readable checkpoint or starts from `--init_from` with the
functions here.
"""

import json
import os

import tensorflow as tf

from tfp_iwae import data
from tfp_iwae import model as model_lib
from tfp_iwae.config import MODEL_FIELDS, RunConfig, TrainingError, model_flags
from tfp_iwae.runlock import LOCK_FILE, RunDirError, RunLock

__all__ = ["RunDirError", "LOCK_FILE", "CONFIG_FILE", "RunLock", "make_logdir",
           "read_config", "write_config", "config_differences", "load_config",
           "check_logdir", "checkpoint_dir", "build_model", "RESTORE_ERRORS",
           "checkpoint_flags", "restore_newest_readable", "init_model_from", "restore_run"]

CONFIG_FILE = "run_config.json"
# What reading a corrupt, truncated or mismatched checkpoint raises.
RESTORE_ERRORS = (tf.errors.OpError, AssertionError, ValueError, IndexError, KeyError)
# Where a checkpoint keeps the JSON of its run's MODEL_FIELDS.
RUN_FLAGS_KEY = "run_flags/.ATTRIBUTES/VARIABLE_VALUE"


def make_logdir(logdir):
    """Creates `logdir` (and parents) if needed; RunDirError naming --logdir if it cannot."""
    try:
        os.makedirs(logdir, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"--logdir: cannot create {logdir!r}: {e}") from None


def checkpoint_dir(logdir):
    """Where a run keeps its checkpoints: `<logdir>/checkpoints`."""
    return os.path.join(logdir, "checkpoints")


# -- run_config.json --------------------------------------------------------------------
def read_config(logdir):
    """The flags dict stored in `<logdir>/run_config.json`, or None if there is none.

    Raises RunDirError naming the file if it cannot be read or is not a JSON object.
    """
    path = os.path.join(logdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise RunDirError(f"--logdir: cannot read {path!r}: {e.strerror or e}.") from None
    try:
        flags = json.loads(text)
    except ValueError as e:
        what = "is empty" if not text.strip() else f"is not valid JSON ({e})"
        raise RunDirError(f"--logdir: {path!r} {what}. It records the flags of the run in "
                          f"this logdir: restore it, or use another --logdir.") from None
    if not isinstance(flags, dict):
        raise RunDirError(f"--logdir: {path!r} holds a JSON {type(flags).__name__}, "
                          f"expected an object of flag values.")
    return flags


def write_config(logdir, flags):
    """Writes `flags` (a JSON-able dict) to `<logdir>/run_config.json` atomically."""
    path = os.path.join(logdir, CONFIG_FILE)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(flags, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as e:
        raise RunDirError(f"--logdir: cannot write {path!r}: {e.strerror or e}.") from None


def config_differences(theirs, mine, fields):
    """`--flag=theirs there vs mine now` for each of `fields` whose values differ."""
    defaults = model_flags(RunConfig())  # a flag added later: older runs had its default
    theirs = {f: theirs.get(f, defaults.get(f)) for f in fields}
    return [f"--{f}={theirs[f]!r} there vs {mine.get(f)!r} now" for f in fields
            if theirs[f] != mine.get(f)]


def load_config(logdir):
    """The RunConfig recorded in `<logdir>/run_config.json`.

    Raises TrainingError naming the file if it is missing, not JSON, or holds unknown
    flags or values of the wrong type.
    """
    try:
        flags = read_config(logdir)
    except RunDirError as e:
        raise TrainingError(str(e)) from None
    if flags is None:
        raise TrainingError(f"--logdir {logdir!r}: no {CONFIG_FILE} (not the logdir of a "
                            f"training run?).")
    return RunConfig.from_flags(flags, os.path.join(logdir, CONFIG_FILE))


def check_logdir(config):
    """Creates the logdir; refuses one whose run_config.json holds other model flags.
    Writes nothing else: run_config.json is written once the run starts (`loop.train`)."""
    make_logdir(config.logdir)
    theirs = read_config(config.logdir)
    diff = config_differences(theirs, model_flags(config), MODEL_FIELDS) if (
        theirs is not None) else []
    if diff:
        raise TrainingError(f"--logdir {config.logdir!r} holds a run with different "
                            f"flags ({', '.join(diff)}); use another --logdir. Nothing was "
                            f"overwritten.")


# -- model and checkpoints --------------------------------------------------------------
def build_model(config, data_mean=None):
    """The (untrained) IWAE a RunConfig describes; `data_mean` (the training images' mean)
    sets the output bias of a Bernoulli decoder."""
    return model_lib.IWAE(stochastic_layers=config.stochastic_layers,
                          likelihood=config.likelihood,
                          std_parameterization=config.std_parameterization,
                          data_mean=data_mean if config.likelihood == "bernoulli" else None,
                          seed=config.seed,
                          dtype_policy="mixed_bfloat16" if config.mixed_precision else None)


def checkpoint_flags(path):
    """The MODEL_FIELDS dict recorded in a checkpoint, or None for one written before
    checkpoints recorded them."""
    reader = tf.train.load_checkpoint(path)
    if not reader.has_tensor(RUN_FLAGS_KEY):
        return None
    return json.loads(reader.get_tensor(RUN_FLAGS_KEY))


def restore_newest_readable(ckpt, manager, step, log, config, legacy):
    """Restores the newest checkpoint that reads cleanly; a corrupt newer one is skipped
    (and named), never deleted; if none reads, raises TrainingError. A checkpoint written
    with other model flags is refused (TrainingError), also when run_config.json is gone;
    one from before checkpoints recorded their flags is restored through `legacy`."""
    failures = []
    for path in reversed(manager.checkpoints):
        try:
            theirs = checkpoint_flags(path)
            if theirs is not None:
                diff = config_differences(theirs, model_flags(config), MODEL_FIELDS)
                if diff:
                    raise TrainingError(
                        f"--logdir {config.logdir!r}: checkpoint {path} was written by a run "
                        f"with different flags ({', '.join(diff)}); use another --logdir. "
                        f"Nothing was overwritten.")
                ckpt.restore(path).assert_existing_objects_matched()
            else:
                legacy.restore(path).assert_existing_objects_matched()
                log(f"note: {path} predates checkpoints that record their model flags: "
                    f"they could not be checked against this command's")
        except RESTORE_ERRORS as e:
            failures.append(f"{path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            continue
        for f in failures:
            log(f"warning: skipped unreadable checkpoint {f}")
        log(f"resumed from {path} at step {int(step)}")
        return
    raise TrainingError("Could not restore any checkpoint in the logdir (corrupt, or from "
                        "another architecture?): " + "; ".join(failures))


def init_model_from(model, init_from, log):
    """Loads only the model's weights from another run's checkpoint (--init_from)."""
    src = tf.train.latest_checkpoint(init_from) or init_from
    node = model.checkpointable()
    try:
        # The source also holds an optimizer, a step and a data position: not wanted here.
        tf.train.Checkpoint(model=node).read(src).assert_existing_objects_matched(
        ).expect_partial()
    except RESTORE_ERRORS as e:
        raise TrainingError(f"--init_from {init_from!r}: incompatible checkpoint "
                            f"({type(e).__name__}: {str(e)[:300]})") from None
    log(f"initialised model weights from {src} ({len(model.variables)} variables; "
        f"optimizer, step and data position start fresh)")


def restore_run(logdir, checkpoint=None):
    """(config, model, checkpoint path) of the training run in `logdir`: the model its
    run_config.json describes with the weights of `checkpoint` (default: the newest).

    Raises TrainingError (no or bad run_config.json, no checkpoint, a model that cannot be
    built or a checkpoint that cannot be read) or `data.DataError`, naming the cause.
    """
    config = load_config(logdir)
    ckpt_dir = checkpoint_dir(logdir)
    path = checkpoint or tf.train.latest_checkpoint(ckpt_dir)
    if not path:
        raise TrainingError(f"--logdir {logdir!r}: no checkpoint found in {ckpt_dir}.")
    try:
        train_x = data.load_array(config.dataset, "train", data_dir=config.data_dir,
                                  download=config.download)
        model = build_model(config, data_mean=train_x.mean(0))
    except data.DataError:
        raise
    except ValueError as e:
        raise TrainingError(f"--logdir {logdir!r}: cannot build the model its "
                            f"run_config.json describes ({e}).") from None
    try:
        tf.train.Checkpoint(model=model.checkpointable()).read(
            path).expect_partial().assert_existing_objects_matched()
    except RESTORE_ERRORS as e:
        raise TrainingError(f"checkpoint {path!r} could not be read (corrupt or "
                            f"incompatible): {e}") from None
    return config, model, path
