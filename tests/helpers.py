"""Helpers for the launcher tests: run a launcher as a subprocess, read checkpoints."""

import os
import subprocess
import sys

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAST = ["--batch_size=20", "--num_samples=5", "--log_every=50", "--eval_images=50",
        "--eval_samples=100"]


def run(script, *args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, os.path.join(ROOT, "launch", script), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def checkpoint_values(path):
    reader = tf.train.load_checkpoint(path)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k.startswith("model/")}
