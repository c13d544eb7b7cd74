"""The command-line tools as a package: console-script entry points, flag definitions,
a start-up that comes before TensorFlow, and the commands' helpers (fast, in process)."""

import configparser
import importlib
import os
import subprocess
import sys

from absl import flags
import pytest

from helpers import ROOT, launcher_env

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
                          env=env, timeout=60)
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
