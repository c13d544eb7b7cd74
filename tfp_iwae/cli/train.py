r"""Train an IWAE or VAE (Burda et al., 2015) from the command line.

    tfp-iwae-train                                           # embedded MNIST subset
    tfp-iwae-train --dataset=fashion_mnist --data_dir=/usr/share/datasets/fashion-mnist \
        --stochastic_layers=2 --num_samples=50 --objective=iwae --logdir=runs/fm_iwae50

(`python launch/train.py` in a checkout is the same command.) Re-running the same command
resumes from the last checkpoint in --logdir (a changed --learning_rate or other training
flag is refused unless --allow_changed_flags names it). SIGTERM, SIGINT (Ctrl-C) or
SIGHUP (a closed terminal) finish the current step, write a checkpoint and exit with
status 143 / 130 / 129 (--strategy=multi_worker: a signal to any worker stops every
worker at one agreed step, the chief checkpoints, all exit with the same status); a
second process on the same --logdir is refused while the first runs. Every flag:
docs/cli.md, or --helpfull.
"""

import dataclasses

from absl import flags

from tfp_iwae import config, estimators, trainer
from tfp_iwae.cli import common

F = flags.FLAGS
_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           bool: flags.DEFINE_bool}

# Flags of this command only, beside RunConfig's: one per estimator parameter (--M, --K,
# --beta), folded into --objective; and the CPU split.
PARAM_FLAGS = tuple(estimators.PARAMETERS)


def define_run_flags(flag_values=F):
    """One flag per RunConfig field: its name, type, default and help (an enum where the
    field lists its choices)."""
    for field in dataclasses.fields(config.RunConfig):
        values = config.choices(field)
        if values is not None:
            flags.DEFINE_enum(field.name, field.default, list(values), config.help_text(field),
                              flag_values=flag_values)
        else:
            _DEFINE[field.type](field.name, field.default, config.help_text(field),
                                flag_values=flag_values)


def _users(param):
    return [key for key, spec in estimators.ESTIMATORS.items() if param in spec.params]


def define_flags(flag_values=F):
    """This command's flags: RunConfig's, the estimator parameters', --cpu_devices."""
    define_run_flags(flag_values)
    for name, param in estimators.PARAMETERS.items():
        (flags.DEFINE_integer if param.type is int else flags.DEFINE_float)(
            name, None, f"{param.doc[0].upper()}{param.doc[1:]}, for --objective="
            f"{' or '.join(_users(name))} (or write it in the name: "
            f"{', '.join(estimators.estimator_signature(k) for k in _users(name))}).",
            flag_values=flag_values)
    # --estimator says what the value is (a gradient estimator); --objective, the name
    # run_config.json and the checkpoints record, stays the flag it sets.
    flags.DEFINE_alias("estimator", "objective", flag_values=flag_values)
    flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into this many logical devices (to "
                         "run --strategy=mirrored on a CPU-only machine; 0: no split).",
                         flag_values=flag_values)


def objective_name(objective, **values):
    """Folds the parameter flags (--M, --K, --beta) into the estimator name: miwae with M=8,
    K=8 -> miwae(8,8). A name that already holds its parameters is returned as it is."""
    base = objective.strip().lower()
    spec = estimators.ESTIMATORS.get(base)
    given = [p for p in PARAM_FLAGS if values.get(p) is not None]
    if spec is not None and spec.params:
        missing = [p for p in spec.params if values.get(p) is None]
        if missing:
            common.fail(f"--objective={base} needs {' and '.join('--' + p for p in spec.params)}"
                        f" (or write {base}({','.join(spec.params)})).")
        extra = [p for p in given if p not in spec.params]
        if extra:
            common.fail(f"{'/'.join('--' + p for p in extra)} "
                        f"{'does' if len(extra) == 1 else 'do'} not apply to "
                        f"--objective={base} (it takes {', '.join(spec.params)}).")
        return f"{base}({','.join(str(values[p]) for p in spec.params)})"
    if given:
        users = sorted((key for key, s in estimators.ESTIMATORS.items() if s.params),
                       key=lambda key: -len(estimators.ESTIMATORS[key].params))
        common.fail(f"{'/'.join('--' + p for p in PARAM_FLAGS)} apply to "
                    f"{', '.join(users[:-1])} and {users[-1]}, not --objective={objective}.")
    return objective


def main(argv):
    common.quiet_absl()
    if len(argv) > 1:
        common.fail(f"unexpected arguments {argv[1:]}")
    if F.cpu_devices < 0:
        common.fail(f"--cpu_devices: expected an integer >= 0, got {F.cpu_devices}.")
    if F.cpu_devices:
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * F.cpu_devices)
    values = {f.name: getattr(F, f.name) for f in dataclasses.fields(config.RunConfig)}
    params = {p: getattr(F, p) for p in PARAM_FLAGS}
    values["objective"] = objective_name(values["objective"], **params)
    result = trainer.train(config.RunConfig(**values), log=common.say)
    print(f"done: step {result['step']}, checkpoint {result['checkpoint']}")
