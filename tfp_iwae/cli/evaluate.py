"""Evaluate a trained run: test L_5000 (streamed over samples), bits/dim, active units.

    tfp-iwae-evaluate --logdir=runs/default [--num_samples=5000] [--split=test]

Writes `<logdir>/eval_<split>_k<k>.json` (`..._k<k>_first<n>.json` when --max_images
scores only the first n images of the split; per-example log-likelihoods beside it as
.npy), and the same numbers as TensorBoard summaries into `<logdir>/eval_<split>/`, tagged
by k and n in the same way (e.g. `bound/nll_k5000`): an evaluation never overwrites one
of another k or of more images. (`python launch/evaluate.py` in a checkout is the same
command; every flag: docs/cli.md.)
"""

import json
import os
import sys
import time

from absl import flags
import numpy as np
import tensorflow as tf

from tfp_iwae import data, evaluation, summaries
from tfp_iwae.cli import common

F = flags.FLAGS


def define_flags(flag_values=F):
    """This command's flags."""
    fv = flag_values
    common.define_run_flags(fv)
    flags.DEFINE_enum("split", "test", ["test", "validation", "train"], "Split to evaluate.",
                      flag_values=fv)
    flags.DEFINE_integer("num_samples", 5000, "k of the L_k estimate (paper: 5000).",
                         flag_values=fv)
    flags.DEFINE_integer("chunk_size", 0, "Samples per compiled chunk (0: automatic, "
                         "~50,000 rows per matmul); peak memory scales with it, not with k.",
                         flag_values=fv)
    flags.DEFINE_integer("batch_size", 100, "Images per evaluation batch.", flag_values=fv)
    flags.DEFINE_integer("max_images", 0, "Evaluate only the first N images (0: all).",
                         flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed of the importance samples.", flag_values=fv)
    flags.DEFINE_integer("fixed_binarization_seed", 0,
                         "Seed of the one fixed binarisation of the evaluation images.",
                         flag_values=fv)
    flags.DEFINE_string("output", None, "Results JSON path (default: <logdir>/eval_<split>_k"
                        "<k>.json, or ..._first<n>.json with --max_images=n below the "
                        "split's size).", flag_values=fv)
    flags.DEFINE_enum("decoder_matmuls", "auto", ["auto", "xla", "tensorflow"],
                      "Where the decoder's matmuls run: `tensorflow` (TensorFlow ops: oneDNN's "
                      "GEMM on x86 CPUs, faster there than XLA's; the draws and log-probs in "
                      "XLA), `xla` (one XLA program per batch) or `auto` (tensorflow on a CPU "
                      "with a Bernoulli decoder, else xla). Same draws either way; timings: "
                      "docs/benchmarks.md.", flag_values=fv)
    flags.DEFINE_float("progress_secs", 30., "Print a progress line (images done, running "
                       "mean L_k, time left) at most this often, in seconds (0: none).",
                       flag_values=fv)
    flags.DEFINE_list("curve_ks", [], "Also report the bound against k for these k (each <= "
                      "--num_samples), averaged over disjoint blocks of the same draws, e.g. "
                      "1,5,50,500,5000. Keeps all log weights on the host: 8 * N * "
                      "--num_samples bytes.", flag_values=fv)


def _progress_printer(total, t0):
    """`estimate_log_likelihood`'s progress callback: a line every --progress_secs (not
    after the last batch: the result line follows), with the running mean of L_k over
    the images done; batches are read only when a line is printed."""
    unread, state = [], {"sum": 0., "last": t0}

    def progress(done, batch_estimates):
        unread.append(batch_estimates)
        now = time.perf_counter()
        if done >= total or now - state["last"] < F.progress_secs:
            return
        state["sum"] += sum(float(np.sum(b.numpy())) for b in unread)  # all `done` images
        unread.clear()
        state["last"] = now
        left = (now - t0) * (total - done) / done
        print(f"L_{F.num_samples}: {done:,}/{total:,} images, mean "
              f"{state['sum'] / done:.2f} nats so far, {now - t0:.0f} s, "
              f"~{left:.0f} s left", flush=True)

    return progress


def main(argv):
    common.quiet_absl()
    common.check_flags([
        ("num_samples", F.num_samples, F.num_samples >= 1, "an integer >= 1"),
        ("chunk_size", F.chunk_size, F.chunk_size >= 0, "an integer >= 0 (0: automatic)"),
        ("batch_size", F.batch_size, F.batch_size >= 1, "an integer >= 1"),
        ("max_images", F.max_images, F.max_images >= 0, "an integer >= 0 (0: all images)"),
        ("progress_secs", F.progress_secs,
         F.progress_secs >= 0 and np.isfinite(F.progress_secs),
         "a finite number of seconds >= 0 (0: no progress lines)"),
        ("seed", F.seed, F.seed >= 0, "an integer >= 0"),
        ("fixed_binarization_seed", F.fixed_binarization_seed,
         F.fixed_binarization_seed >= 0, "an integer >= 0")])
    try:
        curve_ks = sorted({int(k) for k in F.curve_ks})
    except ValueError:
        common.fail(f"--curve_ks: expected integers, got {F.curve_ks}.")
    if curve_ks and not 1 <= curve_ks[0] <= curve_ks[-1] <= F.num_samples:
        common.fail(f"--curve_ks: each k must be in [1, --num_samples={F.num_samples}], "
                    f"got {curve_ks}.")
    config, model, path, step = common.restore_run(F.logdir, F.checkpoint)
    try:
        matmuls = evaluation.decoder_matmuls_for(model, F.decoder_matmuls)
    except ValueError as e:
        common.fail(f"--decoder_matmuls: {e}")
    try:
        x = data.load_array(config.dataset, F.split, data_dir=config.data_dir,
                            download=config.download,
                            allow_nonstandard=config.allow_nonstandard_data)
    except data.DataError as e:
        common.fail(common.error_message(e))
    if F.max_images > len(x):
        common.fail(f"--max_images: expected at most the {len(x)} images of the "
                    f"{config.dataset} {F.split} split (0: all), got {F.max_images}.")
    first = F.max_images if 0 < F.max_images < len(x) else None  # a subset of the split
    if first:
        x = x[:first]
    protocol = data.describe(config.dataset, config.binarization)
    xb = x if config.binarization == "none" else data.fixed_binarization(
        x, F.fixed_binarization_seed)
    t0 = time.perf_counter()
    ll = evaluation.estimate_log_likelihood(model, xb, F.num_samples,
                                            chunk_size=F.chunk_size or None,
                                            batch_size=F.batch_size, seed=F.seed,
                                            return_log_weights=bool(curve_ks),
                                            decoder_matmuls=matmuls,
                                            progress=_progress_printer(len(xb), t0)
                                            if F.progress_secs else None)
    curve = None
    if curve_ks:
        ll, lw = ll
        bounds = evaluation.bound_curve(lw, curve_ks)
        curve = {"k": curve_ks, "bound_nats": bounds.mean(axis=1).tolist(),
                 "standard_error_nats": (bounds.std(axis=1, ddof=1) / np.sqrt(len(ll))
                                         ).tolist() if len(ll) > 1 else None}
    seconds = time.perf_counter() - t0
    au = evaluation.active_units(model, data.active_units_images(
        config.dataset, config.binarization, seed=F.fixed_binarization_seed,
        data_dir=config.data_dir, download=config.download,
        allow_nonstandard=config.allow_nonstandard_data))
    nll = -float(np.mean(ll))
    out = F.output or os.path.join(F.logdir, evaluation.result_name(F.split, F.num_samples,
                                                                    first) + ".json")
    result = {
        "dataset": config.dataset, "binarization": config.binarization, "protocol": protocol,
        "protocol_note": data.protocol_note(config.dataset),
        "evaluation_binarization": f"fixed once (seed {F.fixed_binarization_seed})"
        if config.binarization != "none" else "none",
        "split": F.split, "images": int(len(x)), "first_images_only": bool(first),
        "checkpoint": path, "checkpoint_step": step,
        "stochastic_layers": config.stochastic_layers, "objective": config.objective,
        "train_num_samples": config.num_samples, "num_samples": F.num_samples,
        "log_likelihood_nats": -nll, "nll_nats": nll,
        "nll_standard_error_nats": float(np.std(ll, ddof=1) / np.sqrt(len(ll)))
        if len(ll) > 1 else None,
        "bits_per_dim": evaluation.bits_per_dim(nll), "active_units": au["counts"],
        "active_units_images": f"the first {data.ACTIVE_UNITS_IMAGES} training images, " + (
            f"binarised once (seed {F.fixed_binarization_seed})"
            if config.binarization != "none" else "intensities"),
        "active_units_binarization_seed": F.fixed_binarization_seed
        if config.binarization != "none" else None,
        "seconds": seconds,
        "decoder_matmuls": matmuls,
    }
    if curve is not None:
        result["bound_curve"] = curve
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        np.save(os.path.splitext(out)[0] + "_per_example.npy", ll)
        with open(out + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(out + ".tmp", out)
    except OSError as e:
        common.fail(f"--output: cannot write results to {out!r}: {e}")
    try:  # into the run's logdir, beside its training curves (HParams table, scalars)
        summaries.write_evaluation(F.logdir, F.split, step, log_likelihood=-nll, nll=nll,
                                   bits_per_dim=result["bits_per_dim"],
                                   active_units=au["counts"], num_samples=F.num_samples,
                                   num_images=len(x), first=first)
    except (OSError, tf.errors.OpError) as e:  # e.g. a read-only logdir: results stand
        print(f"warning: no TensorBoard summaries written to --logdir {F.logdir!r}: {e}",
              file=sys.stderr)
    if curve is not None:
        print("bound against k: " + ", ".join(
            f"L_{k} {b:.2f}" for k, b in zip(curve["k"], curve["bound_nats"])))
    print(f"{protocol} {F.split} ({len(x)} images): L_{F.num_samples} = {-nll:.2f} nats, "
          f"NLL {nll:.2f} nats = {result['bits_per_dim']:.4f} bits/dim; active units "
          f"{au['counts']}; {seconds:.1f}s; checkpoint {path} (step {step}). Results: {out}")

