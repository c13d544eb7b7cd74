"""Helpers for the launcher tests: run a launcher as a subprocess, read checkpoints, serve
TensorBoard on 127.0.0.1."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

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


def default_signals():
    """In the child, before exec: SIGINT, SIGTERM and SIGHUP as a terminal's process gets
    them. A test runner started by nohup, or as a background job, ignores SIGHUP or
    SIGINT, and an ignored signal is inherited (and rightly left alone by the run)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def run(script, *args, timeout=300):
    return subprocess.run([sys.executable, os.path.join(ROOT, "launch", script), *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=launcher_env(), cwd=ROOT)


def checkpoint_values(path):
    reader = tf.train.load_checkpoint(path)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k.startswith("model/")}


# Loopback only: never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@contextlib.contextmanager
def tensorboard(logdir):
    """A TensorBoard server on 127.0.0.1 over `logdir`: yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", f"--logdir={logdir}",
                             "--host=127.0.0.1", f"--port={port}", "--load_fast=false",
                             "--reload_interval=1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fetch(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    with _OPENER.open(request, timeout=10) as r:
        return r.read()
