"""The command-line tools: `tfp-iwae-train`, `tfp-iwae-evaluate`, `tfp-iwae-sample` and
`tfp-iwae-export` (console scripts of `pip install .`; `python launch/<command>.py` in a
checkout runs the same code). docs/cli.md describes their flags.

Each entry point below quiets TensorFlow's start-up (`common.start`) before it imports
its command's module, which loads TensorFlow; then it defines that command's flags (only
its own: importing a command's module defines none) and runs its `main` under absl.
"""

import importlib

COMMANDS = ("train", "evaluate", "sample", "export")


def run_command(name):
    """Runs command `name` (one of `COMMANDS`) with the process's argv."""
    from tfp_iwae.cli import common
    common.start()  # first: before TensorFlow is imported
    module = importlib.import_module(f"{__name__}.{name}")
    common.run(module.main, module.define_flags, module.__doc__)


def train_main():
    """`tfp-iwae-train`: train an IWAE or VAE (`tfp_iwae.cli.train`)."""
    run_command("train")


def evaluate_main():
    """`tfp-iwae-evaluate`: test L_5000, bits/dim and active units of a trained run."""
    run_command("evaluate")


def sample_main():
    """`tfp-iwae-sample`: PNG grids of samples and reconstructions of a trained run."""
    run_command("sample")


def export_main():
    """`tfp-iwae-export`: a trained run as a SavedModel."""
    run_command("export")
