"""Evaluate a trained run: test L_5000 (streamed over samples), bits/dim, active units.

    tfp-iwae-evaluate --logdir=runs/default [--num_samples=5000] [--split=test]

Writes `<logdir>/eval_<split>_k<k>.json` (`..._k<k>_first<n>.json` when --max_images
scores only the first n images of the split; per-example log-likelihoods beside it as
.npy), and the same numbers as TensorBoard summaries into `<logdir>/eval_<split>/`, tagged
by k and n in the same way (e.g. `bound/nll_k5000`): an evaluation never overwrites one
of another k or of more images. (`python launch/evaluate.py` in a checkout is the same
command; every flag: docs/cli.md. In Python: `tfp_iwae.evaluate_run`, which this command
calls.)
"""

import sys

from absl import flags
import numpy as np

from tfp_iwae import run_evaluation
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
    flags.DEFINE_string("data_dir", None, "Where the run's dataset is read from (default: "
                        "the run's own --data_dir, from its run_config.json; e.g. a run "
                        "copied to a machine that keeps the data elsewhere).", flag_values=fv)
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


def _progress_printer():
    """`evaluate_run`'s progress callback: a line every --progress_secs (not after the
    last batch: the result line follows), with the running mean of L_k over the images
    done; batches are read only when a line is printed."""
    unread, state = [], {"sum": 0., "last": 0.}

    def progress(done, total, seconds, batch_estimates):
        unread.append(batch_estimates)
        if done >= total or seconds - state["last"] < F.progress_secs:
            return
        state["sum"] += sum(float(np.sum(b.numpy())) for b in unread)  # all `done` images
        unread.clear()
        state["last"] = seconds
        left = seconds * (total - done) / done
        print(f"L_{F.num_samples}: {done:,}/{total:,} images, mean "
              f"{state['sum'] / done:.2f} nats so far, {seconds:.0f} s, "
              f"~{left:.0f} s left", flush=True)

    return progress


def main(argv):
    common.quiet_absl()
    common.check_flags([
        ("num_samples", F.num_samples, common.COUNT, "an integer >= 1"),
        ("chunk_size", F.chunk_size, common.COUNT_OR_ZERO, "an integer >= 0 (0: automatic)"),
        ("batch_size", F.batch_size, common.COUNT, "an integer >= 1"),
        ("max_images", F.max_images, common.COUNT_OR_ZERO, "an integer >= 0 (0: all images)"),
        ("progress_secs", F.progress_secs, common.NON_NEGATIVE,
         "a finite number of seconds >= 0 (0: no progress lines)"),
        ("seed", F.seed, common.COUNT_OR_ZERO, "an integer >= 0"),
        ("fixed_binarization_seed", F.fixed_binarization_seed, common.COUNT_OR_ZERO,
         "an integer >= 0")])
    try:
        curve_ks = [int(k) for k in F.curve_ks]
    except ValueError:
        common.fail(f"--curve_ks: expected integers, got {F.curve_ks}.")
    result = run_evaluation.evaluate_run(
        F.logdir, split=F.split, num_samples=F.num_samples, max_images=F.max_images,
        checkpoint=F.checkpoint, batch_size=F.batch_size, chunk_size=F.chunk_size or None,
        seed=F.seed, fixed_binarization_seed=F.fixed_binarization_seed, curve_ks=curve_ks,
        decoder_matmuls=F.decoder_matmuls, output=F.output, data_dir=F.data_dir,
        progress=_progress_printer() if F.progress_secs else None)
    if result.summaries_error is not None:
        print(f"warning: no TensorBoard summaries written to --logdir {F.logdir!r}: "
              f"{result.summaries_error}", file=sys.stderr)
    if result.bound_curve is not None:
        print("bound against k: " + ", ".join(f"L_{k} {b:.2f}" for k, b in zip(
            result.bound_curve["k"], result.bound_curve["bound_nats"])))
    print(f"{result.record['protocol']} {F.split} ({result.num_images} images): "
          f"L_{F.num_samples} = {result.log_likelihood:.2f} nats, NLL {result.nll:.2f} nats "
          f"= {result.bits_per_dim:.4f} bits/dim; active units {result.active_units}; "
          f"{result.seconds:.1f}s; checkpoint {result.checkpoint} (step {result.step}). "
          f"Results: {result.output}")
