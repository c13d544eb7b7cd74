"""Helpers for the launcher tests: run a launcher as a subprocess, read checkpoints."""

import os
import subprocess
import sys

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAST = ["--batch_size=20", "--num_samples=5", "--log_every=50", "--eval_images=50",
        "--eval_samples=100"]


def launcher_env(**extra):
    """Environment of a launcher subprocess: this checkout's tfp_iwae first on the path.

    The launchers import the installed package (as a user's script does); putting the
    checkout under test first makes them import the same code as the tests themselves,
    whichever checkout an editable install points at.
    """
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=path, **extra)


def run(script, *args, timeout=300):
    return subprocess.run([sys.executable, os.path.join(ROOT, "launch", script), *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=launcher_env(), cwd=ROOT)


def checkpoint_values(path):
    reader = tf.train.load_checkpoint(path)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k.startswith("model/")}
