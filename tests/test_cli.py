"""The command-line tools as a package: console-script entry points, flag definitions,
a start-up that comes before TensorFlow, and the commands' helpers (fast, in process)."""

import configparser
import importlib
import os
import subprocess
import sys

from absl import flags
import pytest

from helpers import ROOT, default_signals, launcher_env

COMMANDS = ("train", "evaluate", "sample", "export")


def entry_points():
    """{script name: "module:function"} of setup.cfg's console_scripts."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict((part.strip() for part in line.split("=", 1)) for line in lines)


def test_console_scripts_name_importable_callables():
    # pip writes a `tfp-iwae-<command>` script that imports the module and calls the
    # function: both must exist, one per command, each running its own command.
    scripts = entry_points()
    assert sorted(scripts) == sorted(f"tfp-iwae-{c}" for c in COMMANDS)
    for command in COMMANDS:
        module_name, function = scripts[f"tfp-iwae-{command}"].split(":")
        target = getattr(importlib.import_module(module_name), function)
        assert callable(target), (command, target)
        assert f"tfp-iwae-{command}" in target.__doc__, target.__doc__


def test_importing_the_package_and_its_cli_loads_no_tensorflow():
    # The entry points quiet TensorFlow's start-up (stderr filter, TF_CPP_MIN_LOG_LEVEL,
    # SIGINT) before TensorFlow is imported: importing tfp_iwae, tfp_iwae.cli and its
    # common module must not import it, nor change stderr or the SIGINT handler.
    code = ("import os, signal, sys\n"
            "stderr = os.fstat(2)\n"
            "import tfp_iwae, tfp_iwae.cli, tfp_iwae.cli.common\n"
            "assert 'tensorflow' not in sys.modules, sorted(sys.modules)\n"
            "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
            "assert os.fstat(2).st_ino == stderr.st_ino\n"
            "assert 'TF_CPP_MIN_LOG_LEVEL' not in os.environ\n"
            "print(tfp_iwae.__version__)\n")
    env = launcher_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60, preexec_fn=default_signals)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("0.1.0"), proc.stdout


def test_lazy_package_gives_every_public_name_and_submodule():
    import tfp_iwae
    for name in tfp_iwae.__all__:
        assert getattr(tfp_iwae, name) is not None, name
    assert tfp_iwae.Error is importlib.import_module("tfp_iwae.errors").Error
    assert tfp_iwae.trainer is importlib.import_module("tfp_iwae.trainer")  # a submodule
    assert "IWAE" in dir(tfp_iwae)
    with pytest.raises(AttributeError, match="no attribute 'iwea'"):
        tfp_iwae.iwea


def test_each_command_defines_only_its_own_flags():
    # Importing the four command modules in one process defines no flag (no clash
    # between the commands' --logdir, --num_samples, ...); each command's define_flags
    # defines its own set, which --helpfull documents.
    modules = {c: importlib.import_module(f"tfp_iwae.cli.{c}") for c in COMMANDS}
    for name in ("logdir", "decoder_matmuls", "overwrite", "rows", "cpu_devices"):
        assert name not in flags.FLAGS, name
    defined = {}
    for command, module in modules.items():
        fv = flags.FlagValues()
        module.define_flags(fv)
        defined[command] = set(fv)
    assert {"logdir", "objective", "num_samples", "M", "K", "beta", "cpu_devices"} <= \
        defined["train"]
    assert {"logdir", "checkpoint", "decoder_matmuls", "curve_ks"} <= defined["evaluate"]
    assert defined["sample"] == {"logdir", "checkpoint", "out", "rows", "mean", "seed"}
    assert defined["export"] == {"logdir", "checkpoint", "out", "num_samples", "seed",
                                 "overwrite"}
    assert "decoder_matmuls" not in defined["train"] | defined["sample"]


def test_objective_name_folds_the_parameter_flags():
    from tfp_iwae.cli import train
    none = dict.fromkeys(train.PARAM_FLAGS)
    assert train.objective_name("miwae", **dict(none, M=8, K=8)) == "miwae(8,8)"
    assert train.objective_name("piwae(2,3)", **none) == "piwae(2,3)"
    assert train.objective_name("iwae", **none) == "iwae"
    for objective, values in (("miwae", dict(M=8)), ("iwae", dict(K=3)),
                              ("miwae", dict(M=2, K=2, beta=0.5))):
        with pytest.raises(SystemExit) as e:
            train.objective_name(objective, **dict(none, **values))
        assert e.value.code == 2


def test_sample_pairs_and_export_out_checks(tmp_path):
    from tfp_iwae.cli import export, sample
    assert [sample.pairs_per_row(r) for r in (1, 2, 3, 8)] == [1, 1, 2, 4]
    export.check_out(str(tmp_path / "new"), str(tmp_path / "run"), False)  # absent: fine
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        export.check_out(str(tmp_path / "full"), str(tmp_path / "run"), False)
    export.check_out(str(tmp_path / "full"), str(tmp_path / "run"), True)
    (tmp_path / "full" / "run_config.json").write_text("{}")
    with pytest.raises(SystemExit):  # a training run is never replaced
        export.check_out(str(tmp_path / "full"), str(tmp_path / "run"), True)


def test_estimator_is_the_objective_flag_under_the_name_of_what_it_holds():
    from tfp_iwae.cli import train
    fv = flags.FlagValues()
    train.define_flags(fv)
    fv(["tfp-iwae-train", "--estimator=dreg"])
    assert fv.objective == "dreg"
    fv = flags.FlagValues()
    train.define_flags(fv)
    fv(["tfp-iwae-train", "--objective=stl"])  # the name runs and checkpoints record
    assert fv.objective == "stl"


def test_library_messages_are_said_in_the_running_commands_flags():
    # The library names an argument `name=`; a command says each one that is also one of
    # its flags as that flag, and leaves every other name as it is.
    from tfp_iwae.cli import common
    command = {"data_dir", "dataset", "download", "allow_nonstandard_data", "num_samples",
               "batch_size", "eval_every", "logdir", "checkpoint", "xla"}

    def said(message):
        return common.to_flags(message, command)

    # `name=` in backticks, name= before no value, name=value (True/False included):
    assert said("`num_samples=` must be >= 1, got 0.") == "--num_samples must be >= 1, got 0."
    assert said("`logdir=`: cannot create '/r'") == "--logdir: cannot create '/r'"
    assert said("lower num_samples= or batch_size=.") == "lower --num_samples or --batch_size."
    assert said("(num_samples=5 there vs 7 now); set eval_every=0, xla=False") == \
        "(--num_samples=5 there vs 7 now); set --eval_every=0, --xla=False"
    assert said("data_dir='/x' is not a directory") == "--data_dir='/x' is not a directory"
    assert said("read one with checkpoint=.") == "read one with --checkpoint."
    assert said("`logdir='/r'` is locked") == "`--logdir='/r'` is locked"
    # Arguments whose flag has another name or form (ARGUMENT_FLAGS):
    # The trainer's errors and notes (tfp-iwae-train says them through common.say):
    command |= {"learning_rate", "allow_changed_flags", "strategy", "num_shards"}
    assert said("note: learning_rate= changed from 0.001 to 0.0005 at step 20 "
                "(allow_changed_flags=): recorded") == (
        "note: --learning_rate changed from 0.001 to 0.0005 at step 20 "
        "(--allow_changed_flags): recorded")
    assert said("batch_size=20 must be divisible by the 3 replicas/shards (strategy=mirrored, "
                "num_shards=3).") == ("--batch_size=20 must be divisible by the 3 "
                                      "replicas/shards (--strategy=mirrored, --num_shards=3).")
    assert said("Lower learning_rate= (now 0.1); this run was resumed with "
                "allow_changed_flags=learning_rate.") == (
        "Lower --learning_rate (now 0.1); this run was resumed with "
        "--allow_changed_flags=learning_rate.")
    # Paths and other values are no arguments, quoted (a repr) or not (a `/` in the value):
    for text in ("logdir='seed=1,num_samples=5' holds a run",
                 "(lock file 'sweep/k5,seed=1/train.lock')",
                 "saved checkpoint seed=1/checkpoints/ckpt-5; stopping",
                 "resumed from runs/k5,seed=1/checkpoints/ckpt-5 at step 5",
                 "the run's data_dir='/x' isn't there"):
        assert common.to_flags(text, command | {"seed"}) == text.replace(
            "logdir=", "--logdir=").replace(
            " data_dir=", " --data_dir="), text
    assert said("pass allow_nonstandard=True to use") == "pass --allow_nonstandard_data to use"
    assert said("downloading is off (download=False)") == "downloading is off (--nodownload)"
    assert said("images of dataset name='kmnist'.") == "images of --dataset='kmnist'."
    # Names that are no flag of this command stay; so do flags, paths and attributes that
    # hold `name=`:
    assert said("source='files' needs x=3, `split=`, seed=2") == \
        "source='files' needs x=3, `split=`, seed=2"
    assert common.to_flags("data_dir='/x' and download=False", {"logdir"}) == \
        "data_dir='/x' and download=False"
    assert said("--data_dir='/x', /r/num_samples=3, config.num_samples=3") == \
        "--data_dir='/x', /r/num_samples=3, config.num_samples=3"


def test_a_commands_errors_name_its_own_flags(monkeypatch):
    # run() reports a library error in the flags its define_flags defined: evaluate's
    # message on --curve_ks is the text it printed before the check moved to the library.
    from tfp_iwae import errors
    from tfp_iwae.cli import common, evaluate
    monkeypatch.setattr(common, "_command_flags", frozenset())
    fv = flags.FlagValues()
    common.define_for_main(evaluate.define_flags, fv)
    assert common.command_flags() == set(fv)
    error = errors.ArgumentError("`curve_ks=`: each k must be in [1, num_samples=20], got "
                                 "[1, 50].")
    assert common.error_message(error) == ("--curve_ks: each k must be in [1, "
                                           "--num_samples=20], got [1, 50].")
    # evaluate's --data_dir (the run's own, overridden) is a flag; download= is none.
    assert common.error_message(errors.Error("data_dir='/x' is not a directory")) == \
        "--data_dir='/x' is not a directory"
    assert common.error_message(errors.Error("downloading is off (download=False)")) == \
        "downloading is off (download=False)"
