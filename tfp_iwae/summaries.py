"""Everything a run writes for TensorBoard: tag names, HParams, image grids.

A run's logdir holds one TensorBoard run per subdirectory, and the HParams session in the
logdir itself:

    <logdir>/               HParams: the run's flags and the experiment config (once)
    <logdir>/train/         training scalars every `log_every` steps, gradient diagnostics
    <logdir>/validation/    validation scalars, log-weight histogram, image grids
    <logdir>/eval_<split>/  `evaluate_run` results, at the evaluated checkpoint's step

so TensorBoard pointed at a directory holding several runs compares them: the scalar
cards overlay the runs and the HParams dashboard has one row per run. Tags are grouped by
their prefix (`bound/`, `posterior/`, `optimizer/`, `speed/`, `estimator/`, `images/`),
which TensorBoard folds into one section each; `TAGS` lists them all (docs/tensorboard.md).
All bounds and log-likelihoods are in nats, averaged over images.
"""

import glob
import math
import os
import time

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.plugins.hparams import plugin_data_pb2

from tfp_iwae import data
from tfp_iwae import errors
from tfp_iwae import model as model_lib
from tfp_iwae import networks
from tfp_iwae import schedule

__all__ = ["TRAIN", "VALIDATION", "eval_run", "TAGS", "HPARAMS", "METRICS", "image_grid",
           "reconstruction_grid", "write_training", "write_gradient_diagnostics",
           "write_validation", "write_images", "write_hparams", "has_hparams",
           "write_evaluation", "checkpoint_step", "evaluation_tag", "HPARAMS_FIRST",
           "PAPER_EVAL_SAMPLES"]

TRAIN = "train"
VALIDATION = "validation"


def eval_run(split):
    """The subdirectory (TensorBoard run) of an evaluation of split `split`
    (`evaluate_run`, the evaluate command)."""
    return f"eval_{split}"


# Tag names. Stable: docs/tensorboard.md's table, the HParams metrics and scripts reading
# event files depend on them.
OBJECTIVE = "bound/objective"
L_K = "bound/L_k"
ELBO = "bound/elbo"
LOG_LIKELIHOOD = "bound/log_likelihood"
NLL = "bound/nll"
BITS_PER_DIM = "bound/bits_per_dim"
ESS = "posterior/ess"
ACTIVE_UNITS = "posterior/active_units/layer{}"
LOG_WEIGHTS = "posterior/log_weights"
LEARNING_RATE = "optimizer/learning_rate"
GRAD_NORM = "optimizer/grad_norm"
EXAMPLES_PER_SECOND = "speed/examples_per_second"
ENCODER_SNR = "estimator/encoder_snr/{}"
ENCODER_VARIANCE = "estimator/encoder_variance/{}"
SAMPLES = "images/samples"
RECONSTRUCTIONS = "images/reconstructions"

# (run, tag, meaning): every tag a run writes. `{}` in a tag: the layer (1, 2) or the
# estimator name (one of a run's `diagnostics_estimators`).
TAGS = (
    (TRAIN, OBJECTIVE, "the training objective's bound (objective=), batch mean, nats"),
    (TRAIN, L_K, "IWAE bound L_k at the training k (num_samples=), batch mean, nats"),
    (TRAIN, ELBO, "ELBO (mean log weight), batch mean, nats"),
    (TRAIN, BITS_PER_DIM, "-bound/objective / (D ln 2), D = pixels per image"),
    (TRAIN, ESS, "effective sample size of the k importance weights (1 to k), batch mean"),
    (TRAIN, LEARNING_RATE, "Adam learning rate (schedule stage)"),
    (TRAIN, GRAD_NORM, "global norm of the applied gradient"),
    (TRAIN, EXAMPLES_PER_SECOND, "training examples per second since the (re)start"),
    (TRAIN, ENCODER_SNR, "encoder-gradient signal-to-noise ratio of an estimator "
                         "(diagnostics_every=)"),
    (TRAIN, ENCODER_VARIANCE, "encoder-gradient variance of an estimator "
                              "(diagnostics_every=)"),
    (VALIDATION, L_K, "L_k at the training k, nats"),
    (VALIDATION, LOG_LIKELIHOOD, "L_k at k = eval_samples= (L_5000 by default): the "
                                 "log-likelihood estimate, nats"),
    (VALIDATION, BITS_PER_DIM, "-bound/log_likelihood / (D ln 2)"),
    (VALIDATION, ELBO, "ELBO, nats"),
    (VALIDATION, ESS, "effective sample size of the k importance weights"),
    (VALIDATION, ACTIVE_UNITS, "active units of a stochastic layer (Cov_x E_q[z] > 0.01)"),
    (VALIDATION, LOG_WEIGHTS, "histogram of the log weights log p(x,z) - log q(z|x) "
                              "[k, 100 images], nats"),
    (VALIDATION, SAMPLES, "grid of model samples E[x|z], z ~ p(z)"),
    (VALIDATION, RECONSTRUCTIONS, "grid: rows of validation inputs over rows of their "
                                  "reconstructions"),
    ("eval_<split>", LOG_LIKELIHOOD + "_k<k>[_first<n>]",
     "L_k of an evaluation (evaluate_run, the evaluate command; k = its num_samples=, "
     "5000 by default; _first<n> when it scored only the first n images of the split), "
     "nats"),
    ("eval_<split>", NLL + "_k<k>[_first<n>]", "its -L_k, nats"),
    ("eval_<split>", BITS_PER_DIM + "_k<k>[_first<n>]", "its -L_k / (D ln 2)"),
    ("eval_<split>", ACTIVE_UNITS, "active units on 500 training images"),
)


class _Unbounded(hp.Domain):
    """Any value of one type. Declares the type only (no interval or value list), so
    every run's value passes TensorBoard's default filters and the config written by
    different runs is the same whatever values they hold."""

    _TYPES = {float: api_pb2.DATA_TYPE_FLOAT64, str: api_pb2.DATA_TYPE_STRING}

    def __init__(self, dtype):
        self._dtype = dtype

    @property
    def dtype(self):
        return self._dtype

    def sample_uniform(self, rng=None):
        raise NotImplementedError("an unbounded domain cannot be sampled uniformly")

    def update_hparam_info(self, hparam_info):
        hparam_info.type = self._TYPES[self._dtype]


_NUMBER, _STRING = _Unbounded(float), _Unbounded(str)

# k of the paper's test log-likelihood (Burda et al.: L_5000), the HParams table's first
# metric.
PAPER_EVAL_SAMPLES = 5000


def evaluation_tag(tag, num_samples, first=None):
    """The tag of an evaluation's result: `tag` keyed by k and, when it scored only the
    first `first` images of its split, by that count (`bound/nll_k5000`,
    `bound/nll_k1_first20`), so that evaluations of different k or image counts never
    overwrite each other."""
    return f"{tag}_k{int(num_samples)}" + (f"_first{int(first)}" if first else "")


# The flags shown as HParams columns (names are `launch/train.py` flags). Closed sets get
# their full value list (checkbox filters); open ones a type only. TensorBoard sorts the
# columns by whether they are marked as differing between runs, then by name, and shows
# the first ones: HPARAMS_FIRST are marked so, the flags that tell runs apart.
HPARAMS_FIRST = ("objective", "num_samples", "stochastic_layers", "dataset",
                 "binarization")
HPARAMS = (
    hp.HParam("objective", _STRING, description="the estimator trained "
              "(iwae, vae, stl, dreg, rws, miwae(M,K), ciwae(beta), piwae(M,K))"),
    hp.HParam("num_samples", _NUMBER, display_name="k (num_samples)",
              description="importance samples per example"),
    hp.HParam("stochastic_layers", hp.Discrete([1, 2]), display_name="layers "
              "(stochastic_layers)"),
    hp.HParam("dataset", hp.Discrete(sorted(data.DATASETS))),
    hp.HParam("binarization", hp.Discrete(list(data.BINARIZATIONS))),
    hp.HParam("likelihood", hp.Discrete(list(model_lib.LIKELIHOODS))),
    hp.HParam("std_parameterization", hp.Discrete(list(networks.STD_PARAMETERIZATIONS))),
    hp.HParam("batch_size", _NUMBER),
    hp.HParam("schedule", hp.Discrete(list(schedule.SCHEDULES))),
    hp.HParam("schedule_passes", _NUMBER, description="the paper schedule compressed to "
              "this many passes (0: 3,280)"),
    hp.HParam("epochs", _NUMBER, description="passes over the training split (constant "
              "schedule)"),
    hp.HParam("max_steps", _NUMBER, description="steps to stop after (0: the whole "
              "schedule)"),
    hp.HParam("learning_rate", _NUMBER),
    hp.HParam("seed", _NUMBER),
    hp.HParam("init_from", _STRING, description="the run whose weights it started from "
              "('' when not set)"),
    hp.HParam("eval_samples", _NUMBER, description="k of the validation "
              "bound/log_likelihood"),
    hp.HParam("mixed_precision", hp.Discrete([False, True])),
    hp.HParam("strategy", _STRING),
    hp.HParam("num_shards", _NUMBER),
    hp.HParam("flag_changes", _STRING, description="training flags changed on resume "
              "(allowed by allow_changed_flags=), with the step of each change ('' if "
              "none)"),
)

# The HParams table's metric columns (the first five are shown by default).
METRICS = (
    hp.Metric(evaluation_tag(NLL, PAPER_EVAL_SAMPLES), group=eval_run("test"),
              display_name=f"test NLL, k={PAPER_EVAL_SAMPLES} (nats)"),
    hp.Metric(evaluation_tag(BITS_PER_DIM, PAPER_EVAL_SAMPLES), group=eval_run("test"),
              display_name=f"test bits/dim, k={PAPER_EVAL_SAMPLES}"),
    hp.Metric(LOG_LIKELIHOOD, group=VALIDATION,
              display_name="validation L_eval (nats)", dataset_type=hp.Metric.VALIDATION),
    hp.Metric(L_K, group=VALIDATION, display_name="validation L_k (nats)",
              dataset_type=hp.Metric.VALIDATION),
    hp.Metric(ACTIVE_UNITS.format(1), group=VALIDATION,
              display_name="validation active units, layer 1",
              dataset_type=hp.Metric.VALIDATION),
    hp.Metric(ACTIVE_UNITS.format(2), group=VALIDATION,
              display_name="validation active units, layer 2",
              dataset_type=hp.Metric.VALIDATION),
    hp.Metric(ACTIVE_UNITS.format(1), group=eval_run("test"),
              display_name="active units, layer 1 (evaluate.py)"),
    hp.Metric(ACTIVE_UNITS.format(2), group=eval_run("test"),
              display_name="active units, layer 2 (evaluate.py)"),
    hp.Metric(evaluation_tag(NLL, PAPER_EVAL_SAMPLES, 1000), group=eval_run("train"),
              display_name=f"train NLL, k={PAPER_EVAL_SAMPLES}, first 1,000 images (nats)"),
    hp.Metric(ELBO, group=VALIDATION, display_name="validation ELBO (nats)",
              dataset_type=hp.Metric.VALIDATION),
    hp.Metric(OBJECTIVE, group=TRAIN, display_name="train objective (nats, batch)",
              dataset_type=hp.Metric.TRAINING),
    hp.Metric(EXAMPLES_PER_SECOND, group=TRAIN, display_name="examples/s",
              dataset_type=hp.Metric.TRAINING),
)


def image_side(input_dim):
    """The side of a square image of `input_dim` pixels, or None if there is none."""
    side = math.isqrt(int(input_dim))
    return side if side * side == int(input_dim) else None


def image_grid(images, rows, cols):
    """Tiles `rows * cols` square images row by row into one image.

    Args:
      images: array `[rows * cols, side * side]` (flattened) or `[rows * cols, side,
        side]`; image i goes to row i // cols, column i % cols.
      rows, cols: grid shape.

    Returns:
      NumPy array `[rows * side, cols * side]`, same dtype as `images`.
    """
    images = np.asarray(images)
    if images.ndim == 2:
        side = image_side(images.shape[1])
        if side is None:
            raise errors.ArgumentError(f"`images=`: expected flattened square images, got "
                                       f"{images.shape[1]} pixels each.")
    elif images.ndim == 3 and images.shape[1] == images.shape[2]:
        side = images.shape[1]
    else:
        raise errors.ArgumentError(f"`images=`: expected shape [n, side * side] or [n, side, "
                                   f"side], got {images.shape}.")
    if images.shape[0] != rows * cols:
        raise errors.ArgumentError(f"`images=`: a {rows} x {cols} grid needs {rows * cols} "
                                   f"images, got {images.shape[0]}.")
    tiles = images.reshape(rows, cols, side, side)
    return tiles.transpose(0, 2, 1, 3).reshape(rows * side, cols * side)


def reconstruction_grid(inputs, reconstructions, cols=8):
    """A row of `cols` inputs over a row of their reconstructions, for each `cols` inputs.

    Args:
      inputs, reconstructions: arrays `[n, side * side]`, n a multiple of `cols`.

    Returns:
      NumPy array `[2 * (n // cols) * side, cols * side]`: input row 0, reconstruction
      row 0, input row 1, ...
    """
    inputs, reconstructions = np.asarray(inputs), np.asarray(reconstructions)
    if inputs.shape != reconstructions.shape or inputs.shape[0] % cols:
        raise errors.ArgumentError(f"`inputs=` and `reconstructions=`: expected equal shapes "
                                   f"[n, pixels] with n a multiple of {cols}, got "
                                   f"{inputs.shape} and {reconstructions.shape}.")
    rows = inputs.shape[0] // cols
    pairs = np.stack([inputs.reshape(rows, cols, -1), reconstructions.reshape(rows, cols, -1)],
                     axis=1)  # [rows, 2, cols, pixels]
    return image_grid(pairs.reshape(rows * 2 * cols, -1), 2 * rows, cols)


def write_training(writer, step, metrics, *, bits_per_dim, learning_rate,
                   examples_per_second, num_samples, objective):
    """Training scalars of one logged step into `writer` (the run's `train/`).

    Args:
      metrics: dict of floats from the training step: `bound`, `iwae_bound`, `elbo`
        (nats, batch means), `ess`, `grad_norm`.
      bits_per_dim: of -metrics['bound'].
      learning_rate, examples_per_second: floats.
      num_samples, objective: k and the objective's name (in the tags' descriptions).
    """
    with writer.as_default(step=step):
        tf.summary.scalar(OBJECTIVE, metrics["bound"],
                          description=f"{objective} bound (training objective), nats")
        tf.summary.scalar(L_K, metrics["iwae_bound"], description=f"L_{num_samples}, nats")
        tf.summary.scalar(ELBO, metrics["elbo"], description="ELBO, nats")
        tf.summary.scalar(BITS_PER_DIM, bits_per_dim,
                          description=f"{objective} bound in bits per dimension")
        tf.summary.scalar(ESS, metrics["ess"], description=f"out of k={num_samples}")
        tf.summary.scalar(LEARNING_RATE, learning_rate)
        tf.summary.scalar(GRAD_NORM, metrics["grad_norm"])
        tf.summary.scalar(EXAMPLES_PER_SECOND, examples_per_second)


def write_gradient_diagnostics(writer, step, statistics):
    """Encoder-gradient SNR and variance per estimator: `statistics[name]` is a dict with
    floats `snr` and `variance` (from `diagnostics.gradient_statistics`)."""
    with writer.as_default(step=step):
        for name, st in statistics.items():
            tf.summary.scalar(ENCODER_SNR.format(name), st["snr"])
            tf.summary.scalar(ENCODER_VARIANCE.format(name), st["variance"])


def write_validation(writer, step, *, l_k, log_likelihood, bits_per_dim, elbo, ess,
                     active_units, log_weights, num_samples, eval_samples, num_images):
    """Validation scalars and the log-weight histogram into `writer` (`validation/`).

    Args:
      l_k, log_likelihood: mean L_k (training k) and L_{eval_samples}, nats.
      bits_per_dim: of -log_likelihood.
      elbo, ess: means over images.
      active_units: counts per stochastic layer.
      log_weights: `[k, batch]` log weights, nats.
      num_samples, eval_samples, num_images: k, the estimate's k and the number of
        images (named in the tags' descriptions).
    """
    on = f"on {num_images} validation images"
    with writer.as_default(step=step):
        tf.summary.scalar(L_K, l_k, description=f"L_{num_samples} {on}, nats")
        tf.summary.scalar(LOG_LIKELIHOOD, log_likelihood,
                          description=f"L_{eval_samples} {on}, nats")
        tf.summary.scalar(BITS_PER_DIM, bits_per_dim,
                          description=f"-L_{eval_samples} in bits per dimension")
        tf.summary.scalar(ELBO, elbo, description=f"ELBO {on}, nats")
        tf.summary.scalar(ESS, ess, description=f"out of k={num_samples}")
        for i, count in enumerate(active_units):
            tf.summary.scalar(ACTIVE_UNITS.format(i + 1), count)
        tf.summary.histogram(LOG_WEIGHTS, log_weights)


def write_images(writer, step, *, inputs, reconstructions, samples, cols=8):
    """One reconstruction grid and one sample grid (`reconstruction_grid`, `image_grid`).

    Args:
      inputs, reconstructions: `[n, side * side]` in [0, 1], n a multiple of `cols`.
      samples: `[m, side * side]` in [0, 1], m a multiple of `cols`.
    """
    samples = np.asarray(samples)
    pictures = {RECONSTRUCTIONS: reconstruction_grid(inputs, reconstructions, cols),
                SAMPLES: image_grid(samples, len(samples) // cols, cols)}
    with writer.as_default(step=step):
        for tag, picture in pictures.items():
            tf.summary.image(tag, picture[None, :, :, None].astype(np.float32),
                             max_outputs=1)


def has_hparams(logdir):
    """Whether an events file directly in `logdir` holds the run's HParams."""
    return bool(_hparams_files(logdir))


def _hparams_files(logdir):
    """The events files directly in `logdir` that hold the run's HParams."""
    found = []
    for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        try:
            for record in tf.data.TFRecordDataset(path):
                event = tf.compat.v1.Event.FromString(record.numpy())
                if any(v.tag == hp_metadata.SESSION_START_INFO_TAG
                       for v in event.summary.value):
                    found.append(path)
                    break
        except tf.errors.DataLossError:  # truncated by a kill: what came before counts
            continue
    return found


def _experiment_summary():
    """The experiment config (`HPARAMS`, `METRICS`) as a serialized Summary, with
    HPARAMS_FIRST marked as differing so that TensorBoard shows them first."""
    pb = hp.hparams_config_pb(hparams=list(HPARAMS), metrics=list(METRICS),
                              time_created_secs=time.time())
    for value in pb.value:
        plugin = plugin_data_pb2.HParamsPluginData.FromString(
            value.metadata.plugin_data.content)
        for info in plugin.experiment.hparam_infos:
            info.differs = info.name in HPARAMS_FIRST
        value.metadata.plugin_data.content = plugin.SerializeToString()
    return pb.SerializeToString()


def write_hparams(logdir, config, replace=False, flag_changes=""):
    """Writes the run's HParams into `logdir`, unless they are there already.

    Written once per run (a resumed run keeps the flags it started with), into an events
    file of its own in the logdir itself: the HParams session is the logdir and its
    metrics are read from `train/`, `validation/` and `eval_<split>/` (`METRICS`). Every
    run writes the same experiment config (`HPARAMS`, `METRICS`), so a parent logdir over
    many runs has one consistent table. The row's name (trial id) is the logdir's last
    component.

    Args:
      logdir: the run's logdir.
      config: dict of the run's flags (`dataclasses.asdict(RunConfig)`).
      replace: rewrite them even if present (a resumed run whose training flags changed:
        the row then shows the new values and `flag_changes`).
      flag_changes: the run's flag changes on resume, one line ('' if none).

    Returns:
      True if written, False if the logdir already had them.
    """
    existing = _hparams_files(logdir)
    if existing and not replace:
        return False
    values = {}
    for h in HPARAMS:
        v = flag_changes if h.name == "flag_changes" else config[h.name]
        values[h.name] = "" if v is None else (float(v) if h.domain is _NUMBER else v)
    for path in existing:  # TensorBoard reads a tag's first value: the old file must go
        os.remove(path)
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        with tf.summary.experimental.summary_scope("hparams_config"):
            tf.summary.experimental.write_raw_pb(_experiment_summary(), step=0)
        # The trial id names the HParams row: runs with equal flags stay separate rows.
        hp.hparams(values, trial_id=os.path.basename(os.path.normpath(
            os.path.abspath(logdir))))
    writer.close()
    return True


def checkpoint_step(checkpoint):
    """The training step stored in a run's checkpoint (0 if it holds none)."""
    reader = tf.train.load_checkpoint(checkpoint)
    key = "step/.ATTRIBUTES/VARIABLE_VALUE"
    return int(reader.get_tensor(key)) if reader.has_tensor(key) else 0


def write_evaluation(logdir, split, step, *, log_likelihood, nll, bits_per_dim,
                     active_units, num_samples, num_images, first=None):
    """Writes an evaluation's results (`evaluate_run`) into `<logdir>/eval_<split>/` at
    `step` (the evaluated checkpoint's), where the HParams table and the scalar cards find
    them.

    The bounds' tags name k and, for an evaluation of only the first `first` images of
    the split, that count (`evaluation_tag`): an evaluation never overwrites one of
    another k or another number of images.

    Args:
      step: the training step of the evaluated checkpoint (`rundir.restore_run`).
      log_likelihood, nll: mean L_k and -L_k over the evaluated images, nats.
      bits_per_dim: of nll.
      active_units: counts per stochastic layer.
      num_samples, num_images: k and the number of images (in the tags' descriptions).
      first: None if the whole split was evaluated, else the number of its first images
        that were (`num_images`).

    Returns:
      The directory written.
    """
    on = f"on {num_images} {split} images" + (" (the first ones)" if first else "")
    out = os.path.join(logdir, eval_run(split))
    writer = tf.summary.create_file_writer(out)
    with writer.as_default(step=int(step)):
        tf.summary.scalar(evaluation_tag(LOG_LIKELIHOOD, num_samples, first), log_likelihood,
                          description=f"L_{num_samples} {on}, nats")
        tf.summary.scalar(evaluation_tag(NLL, num_samples, first), nll,
                          description=f"-L_{num_samples} {on}, nats")
        tf.summary.scalar(evaluation_tag(BITS_PER_DIM, num_samples, first), bits_per_dim,
                          description=f"-L_{num_samples} {on} in bits per dimension")
        for i, count in enumerate(active_units):
            tf.summary.scalar(ACTIVE_UNITS.format(i + 1), count)
    writer.close()
    return out
