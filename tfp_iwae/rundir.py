"""The run directory (`logdir`) of a training run: what is in it and how to read it back.

A logdir holds `train.lock` (while a process trains in it; see `runlock`, whose names are
re-exported here), `run_config.json` (the run's flags, written atomically once the run
really starts; a later start with other model flags is refused), `checkpoints/` (each
checkpoint also records the run's model flags) and TensorBoard event directories.

`restore_run` gives the config, the model and the checkpoint of a finished or running run
(used by `evaluate_run` and the evaluate, sample and export commands); the training loop
checks the logdir, resumes from its newest readable checkpoint or starts from another
run's weights (`init_from`) with the functions here. Messages name the RunConfig fields
and arguments (`logdir=`, `checkpoint=`), which the commands say as flags.
"""

import json
import os
import re
import shutil
import time
import typing

import tensorflow as tf

from tfp_iwae import model as model_lib
from tfp_iwae.config import (MODEL_FIELDS, TRAJECTORY_FIELDS, RunConfig, TrainingError,
                             model_flags)
from tfp_iwae.runlock import LOCK_FILE, RunDirError, RunLock

__all__ = ["RunDirError", "LOCK_FILE", "CONFIG_FILE", "RunLock", "make_logdir",
           "read_config", "write_config", "config_differences", "load_config", "HISTORY_KEY",
           "trajectory_changes",
           "check_logdir", "checkpoint_dir", "build_model", "RESTORE_ERRORS",
           "checkpoint_flags", "restore_newest_readable", "init_model_from", "restore_run",
           "RestoredRun", "remove_stale_temp_checkpoints", "checkpoint_value"]

CONFIG_FILE = "run_config.json"
# run_config.json's list of allowed flag changes on resume: {"step", "time", "changed":
# {flag: [before, after]}}, oldest first (absent until a change is made).
HISTORY_KEY = "history"
# What reading a corrupt, truncated or mismatched checkpoint raises.
RESTORE_ERRORS = (tf.errors.OpError, AssertionError, ValueError, IndexError, KeyError)
# Where a checkpoint keeps the JSON of its run's MODEL_FIELDS.
RUN_FLAGS_KEY = "run_flags/.ATTRIBUTES/VARIABLE_VALUE"


def make_logdir(logdir):
    """Creates `logdir` (and parents) if needed; RunDirError naming `logdir=` if it cannot."""
    try:
        os.makedirs(logdir, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"`logdir=`: cannot create {logdir!r}: {e}") from None


def checkpoint_dir(logdir):
    """Where a run keeps its checkpoints: `<logdir>/checkpoints`."""
    return os.path.join(logdir, "checkpoints")


def remove_stale_temp_checkpoints(logdir, log):
    """Removes `<logdir>/checkpoints/ckpt-N_temp/` directories: what TensorFlow leaves of a
    checkpoint whose write was killed (it writes there, then renames). Only those, and
    only by the process holding the logdir's lock (`RunLock`), when no write is running.
    Calls `log` with a line per directory removed."""
    ckpt_dir = checkpoint_dir(logdir)
    try:
        names = os.listdir(ckpt_dir)
    except OSError:
        return
    for name in sorted(names):
        path = os.path.join(ckpt_dir, name)
        if re.fullmatch(r"ckpt-\d+_temp", name) and os.path.isdir(path) and (
                not os.path.islink(path)):
            shutil.rmtree(path)
            log(f"note: removed {path}, the remains of a checkpoint write that was killed")


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
        raise RunDirError(f"`logdir=`: cannot read {path!r}: {e.strerror or e}.") from None
    try:
        flags = json.loads(text)
    except ValueError as e:
        what = "is empty" if not text.strip() else f"is not valid JSON ({e})"
        raise RunDirError(f"`logdir=`: {path!r} {what}. It records the flags of the run in "
                          f"this logdir: restore it, or use another logdir=.") from None
    if not isinstance(flags, dict):
        raise RunDirError(f"`logdir=`: {path!r} holds a JSON {type(flags).__name__}, "
                          f"expected an object of flag values.")
    return flags


def write_config(logdir, flags, changes=None, step=None):
    """Writes `flags` (a JSON-able dict) to `<logdir>/run_config.json` atomically, keeping
    the file's `history` of allowed flag changes and appending `changes` ({flag: (before,
    after)}, made when resuming at `step`) to it."""
    path = os.path.join(logdir, CONFIG_FILE)
    tmp = path + ".tmp"
    old = read_config(logdir) or {}
    history = list(old.get(HISTORY_KEY, []))
    if changes:
        history.append({"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "changed": {f: list(v) for f, v in changes.items()}})
    flags = dict(flags, **({HISTORY_KEY: history} if history else {}))
    try:
        with open(tmp, "w") as f:
            json.dump(flags, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as e:
        raise RunDirError(f"`logdir=`: cannot write {path!r}: {e.strerror or e}.") from None


def config_differences(theirs, mine, fields):
    """`flag=theirs there vs mine now` for each of `fields` whose values differ."""
    defaults = model_flags(RunConfig())  # a flag added later: older runs had its default
    theirs = {f: theirs.get(f, defaults.get(f)) for f in fields}
    return [f"{f}={theirs[f]!r} there vs {mine.get(f)!r} now" for f in fields
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
        raise TrainingError(f"logdir={logdir!r}: no {CONFIG_FILE} (not the logdir of a "
                            f"training run?).")
    flags = {k: v for k, v in flags.items() if k != HISTORY_KEY}
    return RunConfig.from_flags(flags, os.path.join(logdir, CONFIG_FILE))


def trajectory_changes(theirs, config):
    """{flag: (recorded, now)} for the TRAJECTORY_FIELDS whose value in `config` differs
    from the recorded flags `theirs` (a flag missing there had its default)."""
    default = RunConfig()
    return {f: (theirs.get(f, getattr(default, f)), getattr(config, f))
            for f in TRAJECTORY_FIELDS
            if theirs.get(f, getattr(default, f)) != getattr(config, f)}


def check_logdir(config):
    """Creates the logdir; refuses one whose run_config.json holds other model flags, or
    other training flags (TRAJECTORY_FIELDS) that `config.allow_changed_flags` does not
    name. Returns the allowed changes {flag: (recorded, now)} ({} for a new run). Writes
    nothing: run_config.json is written once the run starts (`trainer.train`)."""
    make_logdir(config.logdir)
    theirs = read_config(config.logdir)
    if theirs is None:
        return {}
    diff = config_differences(theirs, model_flags(config), MODEL_FIELDS)
    if diff:
        raise TrainingError(f"logdir={config.logdir!r} holds a run with different "
                            f"flags ({', '.join(diff)}); use another logdir=. Nothing was "
                            f"overwritten.")
    changes = trajectory_changes(theirs, config)
    refused = [f for f in changes if f not in config.changeable_flags()]
    if refused:
        said = ", ".join(f"{f}={changes[f][0]!r} there vs {changes[f][1]!r} now"
                         for f in refused)
        raise TrainingError(
            f"logdir={config.logdir!r} holds a run trained with other values of flags "
            f"that change the steps still to come ({said}). Resume with the run's values "
            f"(run_config.json), or pass allow_changed_flags={','.join(refused)} to "
            f"continue with the new ones (the change is logged and recorded in "
            f"run_config.json's history and in HParams). Nothing was changed.")
    return changes


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
    one from before checkpoints recorded their flags is restored through `legacy`. Values
    the checkpoint holds beyond `ckpt`'s objects (e.g. the training bound at the save,
    read with `checkpoint_value`) are left unread. Returns the path restored."""
    failures = []
    for path in reversed(manager.checkpoints):
        try:
            theirs = checkpoint_flags(path)
            if theirs is not None:
                diff = config_differences(theirs, model_flags(config), MODEL_FIELDS)
                if diff:
                    raise TrainingError(
                        f"logdir={config.logdir!r}: checkpoint {path} was written by a run "
                        f"with different flags ({', '.join(diff)}); use another logdir=. "
                        f"Nothing was overwritten.")
                ckpt.restore(path).assert_existing_objects_matched().expect_partial()
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
        return path
    raise TrainingError("Could not restore any checkpoint in the logdir (corrupt, or from "
                        "another architecture?): " + "; ".join(failures))


def checkpoint_value(path, name):
    """The value of the checkpoint's top-level variable `name` (a NumPy value), or None
    if the checkpoint does not hold it (one written by an older version)."""
    reader = tf.train.load_checkpoint(path)
    key = f"{name}/.ATTRIBUTES/VARIABLE_VALUE"
    return reader.get_tensor(key) if reader.has_tensor(key) else None


def init_model_from(model, init_from, log):
    """Loads only the model's weights from another run's checkpoint (`init_from`: its
    logdir/checkpoints or a checkpoint prefix)."""
    src = tf.train.latest_checkpoint(init_from) or init_from
    node = model.checkpointable()
    try:
        # The source also holds an optimizer, a step and a data position: not wanted here.
        tf.train.Checkpoint(model=node).read(src).assert_existing_objects_matched(
        ).expect_partial()
    except RESTORE_ERRORS as e:
        raise TrainingError(f"init_from={init_from!r}: incompatible checkpoint "
                            f"({type(e).__name__}: {str(e)[:300]})") from None
    log(f"initialised model weights from {src} ({len(model.variables)} variables; "
        f"optimizer, step and data position start fresh)")


class RestoredRun(typing.NamedTuple):
    """What `restore_run` read: the run's RunConfig, its model with the checkpoint's
    weights, the checkpoint prefix actually read, and that checkpoint's training step."""
    config: RunConfig
    model: model_lib.IWAE
    checkpoint: str
    step: int


def _checkpoint_list(ckpt_dir):
    """The checkpoint prefixes the run's `checkpoint` state file lists, oldest first."""
    state = tf.train.get_checkpoint_state(ckpt_dir)
    return list(state.all_model_checkpoint_paths) if state else []


def _read_weights(model, path):
    """Reads the model weights and the step of checkpoint `path`; returns the step."""
    step = tf.Variable(0, dtype=tf.int64, name="step")
    tf.train.Checkpoint(model=model.checkpointable(), step=step).read(
        path).expect_partial().assert_existing_objects_matched()
    return int(step)


def restore_run(logdir, checkpoint=None):
    """The training run in `logdir` as a `RestoredRun` (config, model, checkpoint, step):
    the model its run_config.json describes with the weights of `checkpoint` (default:
    the newest; if a running training rotates it away while it is being read, the then
    newest). Needs no data: the model's weights all come from the checkpoint.

    Raises TrainingError (no or bad run_config.json, no checkpoint, a model that cannot be
    built or a checkpoint that cannot be read, with the run's other checkpoints named).
    """
    config = load_config(logdir)
    ckpt_dir = checkpoint_dir(logdir)
    try:
        model = build_model(config)  # the output bias' data-mean init is overwritten below
    except ValueError as e:
        raise TrainingError(f"logdir={logdir!r}: cannot build the model its "
                            f"run_config.json describes ({e}).") from None
    for attempt in range(3):
        path = checkpoint or tf.train.latest_checkpoint(ckpt_dir)
        if not path:
            raise TrainingError(f"logdir={logdir!r}: no checkpoint found in {ckpt_dir}.")
        try:
            step = _read_weights(model, path)
        except RESTORE_ERRORS as e:
            if checkpoint is None and attempt < 2 and not tf.io.gfile.exists(path + ".index"):
                continue  # rotated away by a training run while we read it: the newest now
            others = [p for p in _checkpoint_list(ckpt_dir) if p != path]
            hint = (f" The run's other checkpoints: {', '.join(others)}; read one with "
                    f"checkpoint=." if others else "")
            raise TrainingError(f"checkpoint {path!r} could not be read (corrupt or "
                                f"incompatible): {type(e).__name__}: "
                                f"{str(e).strip().splitlines()[0][:300]}.{hint}") from None
        return RestoredRun(config, model, path, step)
