"""Helpers for the launcher tests: run a launcher as a subprocess, read checkpoints, serve
TensorBoard on 127.0.0.1, start two multi-worker training processes on loopback."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
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
    port, = free_ports(1)
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


# Seconds a multi-worker test waits for its workers.
WORKER_TIMEOUT = 300


def free_ports(n):
    """`n` free TCP ports on 127.0.0.1."""
    ports = []
    for _ in range(n):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    return ports


class Workers:
    """Two `train.py` workers on loopback (TF_CONFIG, one CPU replica each), as in the
    README's recipe (worker 0 is the chief); their stdout and stderr go to files."""

    def __init__(self, args, outdir):
        ports = free_ports(2)
        self.files = [(outdir / f"worker{i}.out", outdir / f"worker{i}.err") for i in range(2)]
        self.procs = []
        for i, (out, err) in enumerate(self.files):
            tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                         "task": {"type": "worker", "index": i}}
            with open(out, "w") as o, open(err, "w") as e:
                self.procs.append(subprocess.Popen(
                    [sys.executable, os.path.join(ROOT, "launch", "train.py"), *args],
                    cwd=ROOT, env=launcher_env(TF_CONFIG=json.dumps(tf_config)), stdout=o,
                    stderr=e, text=True))

    def stdout(self, i):
        return self.files[i][0].read_text()

    def wait_for_chief_line(self, prefix):
        """Waits until the chief logs a line starting with `prefix` (False if it ends
        or WORKER_TIMEOUT seconds pass first)."""
        deadline = time.time() + WORKER_TIMEOUT
        while time.time() < deadline:
            if any(line.startswith(prefix) for line in self.stdout(0).splitlines()):
                return True
            if self.procs[0].poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def finish(self):
        """[(returncode, stdout, stderr)] of each worker; one still running after
        WORKER_TIMEOUT seconds is killed (and the test fails)."""
        for p in self.procs:
            try:
                p.wait(timeout=WORKER_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"a worker still ran after {WORKER_TIMEOUT}s: "
                            f"{[self.files[i][1].read_text()[-2000:] for i in range(2)]}")
        return [(p.returncode, out.read_text(), err.read_text())
                for p, (out, err) in zip(self.procs, self.files)]

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
