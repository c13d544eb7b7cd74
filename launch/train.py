"""Train an IWAE or VAE (Burda et al., 2015) from the command line.

    python launch/train.py                                   # embedded MNIST subset
    python launch/train.py --dataset=fashion_mnist --data_dir=/usr/share/datasets/fashion-mnist \
        --stochastic_layers=2 --num_samples=50 --objective=iwae --logdir=runs/fm_iwae50

Re-running the same command resumes from the last checkpoint in --logdir (a changed
--learning_rate or other training flag is refused unless --allow_changed_flags names it).
SIGTERM, SIGINT (Ctrl-C) or SIGHUP (a closed terminal) finish the current step, write a
checkpoint and exit with status 143 / 130 / 129 (--strategy=multi_worker: a signal to any
worker stops every worker at one agreed step, the chief checkpoints, all exit with the
same status); a second process on the same --logdir is refused while the first runs.
"""

import dataclasses

import _common  # first: quiet start-up, error reporting
from absl import flags

from tfp_iwae import config, estimators, loop

F = flags.FLAGS
_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           bool: flags.DEFINE_bool}


def define_run_flags():
    """One flag per RunConfig field: its name, type, default and help (an enum where the
    field lists its choices)."""
    for field in dataclasses.fields(config.RunConfig):
        values = config.choices(field)
        if values is not None:
            flags.DEFINE_enum(field.name, field.default, list(values), config.help_text(field))
        else:
            _DEFINE[field.type](field.name, field.default, config.help_text(field))


def _users(param):
    return [key for key, spec in estimators.ESTIMATORS.items() if param in spec.params]


define_run_flags()
# Launcher-only flags: one per estimator parameter (--M, --K, --beta), from the estimator
# table, folded into --objective; and the CPU split.
PARAM_FLAGS = tuple(estimators.PARAMETERS)
for _name, _param in estimators.PARAMETERS.items():
    (flags.DEFINE_integer if _param.type is int else flags.DEFINE_float)(
        _name, None, f"{_param.doc[0].upper()}{_param.doc[1:]}, for --objective="
        f"{' or '.join(_users(_name))} (or write it in the name: "
        f"{', '.join(estimators.estimator_signature(k) for k in _users(_name))}).")
flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into this many logical devices (to "
                     "run --strategy=mirrored on a CPU-only machine; 0: no split).")


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
    result = loop.train(config.RunConfig(**values))
    print(f"done: step {result['step']}, checkpoint {result['checkpoint']}")


if __name__ == "__main__":
    _common.run(main)
