"""Evaluation of a trained run (`evaluate_run`): L_k (L_5000 in the paper), bits/dim and
active units of a checkpoint, written beside the run.

`evaluate_run(logdir)` restores the run in `logdir` (`rundir.restore_run`), reads a split
of its dataset as the run's data protocol presents it to the model
(`data.evaluation_pixels`: binarised once with a recorded seed unless the run trained on
intensities), estimates L_k per image (`evaluation.estimate_log_likelihood`), counts the
active units on the first training images, and writes

    <logdir>/eval_<split>_k<k>.json                 the numbers and the data protocol
    <logdir>/eval_<split>_k<k>_per_example.npy      L_k per image, float64 [N], nats
    <logdir>/eval_<split>/                          TensorBoard scalars (`summaries`)

(`..._k<k>_first<n>...` when only the first n images of the split are scored, so that a
quick evaluation never replaces one of the whole split). The `tfp-iwae-evaluate` command
is this function behind flags.
"""

import json
import os
import time
import typing

import numpy as np
import tensorflow as tf

from tfp_iwae import data
from tfp_iwae import errors
from tfp_iwae import evaluation
from tfp_iwae import objectives
from tfp_iwae import rundir
from tfp_iwae import summaries

__all__ = ["evaluate_run", "RunEvaluation"]


class RunEvaluation(typing.NamedTuple):
    """What `evaluate_run` computed and wrote.

    log_likelihood, nll: mean L_k over the images and its negative, nats.
    bits_per_dim: nll / (784 ln 2). active_units: counts per stochastic layer.
    per_example: float64 `[num_images]` L_k of each image, nats.
    bound_curve: None, or {"k", "bound_nats", "standard_error_nats"} (lists, one entry
      per k of `curve_ks`; the standard errors None for a single image).
    checkpoint, step: the checkpoint prefix read and its training step.
    num_images: images scored. seconds: time of the L_k estimate (and bound curve).
    record: the results JSON's content (a dict). output: the JSON's path.
    summaries_dir: where the TensorBoard scalars went, None if they could not be written
      (then `summaries_error` says why; the results files stand).
    """
    log_likelihood: float
    nll: float
    bits_per_dim: float
    active_units: list
    per_example: np.ndarray
    bound_curve: typing.Optional[dict]
    checkpoint: str
    step: int
    num_images: int
    seconds: float
    record: dict
    output: str
    summaries_dir: typing.Optional[str]
    summaries_error: typing.Optional[str]


def evaluate_run(logdir, *, split="test", num_samples=5000, max_images=0, checkpoint=None,
                 batch_size=100, chunk_size=None, seed=0, fixed_binarization_seed=0,
                 curve_ks=(), decoder_matmuls="auto", output=None, data_dir=None,
                 progress=None):
    """Evaluates the training run in `logdir` and writes the results beside it.

    Args:
      logdir: the run's logdir (run_config.json and checkpoints/).
      split: `test`, `validation` or `train` of the run's dataset.
      num_samples: k of the L_k estimate (paper: 5000).
      max_images: score only the first `max_images` images of the split (0: all).
      checkpoint: a checkpoint prefix of the run (default: the newest).
      batch_size: images per evaluation batch.
      chunk_size: samples per compiled chunk (None: about 50,000 rows per matmul); peak
        memory scales with it, not with k.
      seed: seed of the importance samples.
      fixed_binarization_seed: seed of the one binarisation of the evaluation images
        (and of the active-unit images).
      curve_ks: also the bound against k for these k (each in [1, num_samples]),
        averaged over disjoint blocks of the same draws; keeps all log weights on the
        host (8 * N * num_samples bytes).
      decoder_matmuls: `auto`, `xla` or `tensorflow` (see
        `evaluation.decoder_matmuls_for`); recorded in the results.
      output: the results JSON's path (default: `<logdir>/eval_<split>_k<k>.json`, or
        `..._first<n>.json` when `max_images` = n is below the split's size).
      data_dir: where the dataset's files are (default: the run's recorded `data_dir`),
        e.g. for a run copied to another machine.
      progress: None, or a callable `progress(images_done, images_total, seconds,
        batch_estimates)` called after each batch is dispatched (`seconds` since the
        estimate began; `batch_estimates` that batch's L_k `[b]` float64 Tensor).

    Returns:
      A `RunEvaluation`.

    Raises:
      ArgumentError: a bad argument (named as `name=`), also `max_images` above the
        split's size and an `output` that cannot be written.
      TrainingError: no run, or a checkpoint that cannot be read (`rundir.restore_run`).
      DataError: the run's data cannot be read.
    """
    num_samples, max_images, batch_size, chunk_size, fixed_binarization_seed, ks = \
        _checked_arguments(num_samples, max_images, batch_size, chunk_size,
                           fixed_binarization_seed, curve_ks, progress)
    config, model, path, step = rundir.restore_run(logdir, checkpoint)
    matmuls = evaluation.decoder_matmuls_for(model, decoder_matmuls)
    data_dir = config.data_dir if data_dir is None else data_dir
    xb, first = _images(config, split, max_images, fixed_binarization_seed, data_dir)
    ll, curve, seconds = _estimate(model, xb, num_samples, ks, progress, matmuls=matmuls,
                                   chunk_size=chunk_size, batch_size=batch_size, seed=seed)
    au = _active_units(model, config, fixed_binarization_seed, data_dir)
    record = _record(config, split, ll, first, path, step, num_samples, au,
                     fixed_binarization_seed, seconds, matmuls, curve)
    out = output or os.path.join(logdir, evaluation.result_name(split, num_samples, first)
                                 + ".json")
    _write_results(out, ll, record)
    written, problem = _write_summaries(logdir, split, step, record, first)
    return RunEvaluation(record["log_likelihood_nats"], record["nll_nats"],
                         record["bits_per_dim"], au, ll, curve, path, step, len(ll), seconds,
                         record, out, written, problem)


def _checked_arguments(num_samples, max_images, batch_size, chunk_size,
                       fixed_binarization_seed, curve_ks, progress):
    """Checks `evaluate_run`'s arguments before anything is read; returns them as
    Python ints (num_samples, max_images, batch_size, chunk_size, fixed_binarization_seed)
    and the bound curve's k, sorted without repeats."""
    k = objectives.check_num_samples(num_samples)
    max_images = objectives.check_num_samples(max_images, "max_images", minimum=0)
    batch_size = objectives.check_num_samples(batch_size, "batch_size")
    if chunk_size is not None:
        chunk_size = objectives.check_num_samples(chunk_size, "chunk_size")
    fixed_binarization_seed = objectives.check_num_samples(
        fixed_binarization_seed, "fixed_binarization_seed", minimum=0)
    try:
        ks = sorted({int(c) for c in curve_ks})
    except (TypeError, ValueError):
        raise errors.ArgumentError(f"`curve_ks=`: expected integers, got {curve_ks!r}.") \
            from None
    if ks and not 1 <= ks[0] <= ks[-1] <= k:
        raise errors.ArgumentError(f"`curve_ks=`: each k must be in [1, num_samples={k}], "
                                   f"got {ks}.")
    if progress is not None and not callable(progress):
        raise errors.ArgumentError(f"`progress=` must be None or a callable progress("
                                   f"images_done, images_total, seconds, batch_estimates), "
                                   f"got {progress!r}.")
    return k, max_images, batch_size, chunk_size, fixed_binarization_seed, ks


def _images(config, split, max_images, fixed_binarization_seed, data_dir):
    """The images scored, float32 `[N, 784]` as the model sees them, and `first`: N when
    they are only the first N of the split, else None."""
    x = data.load_array(config.dataset, split, data_dir=data_dir, download=config.download,
                        allow_nonstandard=config.allow_nonstandard_data)
    if max_images > len(x):
        raise errors.ArgumentError(f"`max_images=`: expected at most the {len(x)} images of "
                                   f"the {config.dataset} {split} split (0: all), got "
                                   f"{max_images}.")
    first = max_images if 0 < max_images < len(x) else None  # a subset of the split
    if first:
        x = x[:first]
    return data.evaluation_pixels(x, config.binarization, fixed_binarization_seed), first


def _estimate(model, xb, num_samples, ks, progress, **options):
    """(L_k per image float64 `[N]`, the bound curve or None, seconds taken): one
    streamed `estimate_log_likelihood` (keeping the log weights when `ks` asks for a
    curve); `options`: its matmuls, chunk_size, batch_size and seed."""
    t0 = time.perf_counter()
    report = None if progress is None else (
        lambda done, est: progress(done, len(xb), time.perf_counter() - t0, est))
    ll = evaluation.estimate_log_likelihood(
        model, xb, num_samples, chunk_size=options["chunk_size"],
        batch_size=options["batch_size"], seed=options["seed"], return_log_weights=bool(ks),
        decoder_matmuls=options["matmuls"], progress=report)
    curve = None
    if ks:
        ll, lw = ll
        bounds = evaluation.bound_curve(lw, ks)
        curve = {"k": ks, "bound_nats": bounds.mean(axis=1).tolist(),
                 "standard_error_nats": (bounds.std(axis=1, ddof=1) / np.sqrt(len(ll))
                                         ).tolist() if len(ll) > 1 else None}
    return ll, curve, time.perf_counter() - t0


def _active_units(model, config, fixed_binarization_seed, data_dir):
    """Active units per stochastic layer on the run's active-unit images (the first
    training images, as the model sees them: `data.active_units_images`)."""
    return evaluation.active_units(model, data.active_units_images(
        config.dataset, config.binarization, seed=fixed_binarization_seed,
        data_dir=data_dir, download=config.download,
        allow_nonstandard=config.allow_nonstandard_data))["counts"]


def _record(config, split, ll, first, path, step, num_samples, active_units,
            fixed_binarization_seed, seconds, matmuls, curve):
    """The results JSON's content: the numbers, the run and the data protocol."""
    nll = -float(np.mean(ll))
    binarised = config.binarization != "none"
    record = {
        "dataset": config.dataset, "binarization": config.binarization,
        "protocol": data.describe(config.dataset, config.binarization),
        "protocol_note": data.protocol_note(config.dataset),
        "evaluation_binarization": f"fixed once (seed {fixed_binarization_seed})"
        if binarised else "none",
        "split": split, "images": int(len(ll)), "first_images_only": bool(first),
        "checkpoint": path, "checkpoint_step": step,
        "stochastic_layers": config.stochastic_layers, "objective": config.objective,
        "train_num_samples": config.num_samples, "num_samples": num_samples,
        "log_likelihood_nats": -nll, "nll_nats": nll,
        "nll_standard_error_nats": float(np.std(ll, ddof=1) / np.sqrt(len(ll)))
        if len(ll) > 1 else None,
        "bits_per_dim": evaluation.bits_per_dim(nll), "active_units": active_units,
        "active_units_images": f"the first {data.ACTIVE_UNITS_IMAGES} training images, " + (
            f"binarised once (seed {fixed_binarization_seed})" if binarised
            else "intensities"),
        "active_units_binarization_seed": fixed_binarization_seed if binarised else None,
        "seconds": seconds,
        "decoder_matmuls": matmuls,
    }
    if curve is not None:
        record["bound_curve"] = curve
    return record


def _write_results(out, ll, record):
    """Writes `record` to the JSON `out` (atomically) and `ll` beside it
    (`..._per_example.npy`); ArgumentError naming `output=` if they cannot be written."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        np.save(os.path.splitext(out)[0] + "_per_example.npy", ll)
        with open(out + ".tmp", "w") as f:
            json.dump(record, f, indent=1)
        os.replace(out + ".tmp", out)
    except OSError as e:
        raise errors.ArgumentError(f"`output=`: cannot write results to {out!r}: {e}") \
            from None


def _write_summaries(logdir, split, step, record, first):
    """The record's numbers as TensorBoard scalars in `<logdir>/eval_<split>/`, beside the
    run's training curves (HParams table, scalar cards): (the directory, None), or
    (None, why not) when they cannot be written (e.g. a read-only logdir; the results
    files stand)."""
    try:
        return summaries.write_evaluation(
            logdir, split, step, log_likelihood=record["log_likelihood_nats"],
            nll=record["nll_nats"], bits_per_dim=record["bits_per_dim"],
            active_units=record["active_units"], num_samples=record["num_samples"],
            num_images=record["images"], first=first), None
    except (OSError, tf.errors.OpError) as e:
        return None, str(e)
