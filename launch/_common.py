"""Shared launcher plumbing: quiet start-up, error reporting, flag checks, run restore.

The launchers import the installed `tfp_iwae` (`pip install -e .` or `pip install .`);
nothing here changes the import path. Importing this module first:
- keeps TensorFlow's C++ INFO/WARNING lines out (TF_CPP_MIN_LOG_LEVEL=2 unless set, also
  for the lines TensorFlow prints before it reads it) and, on a machine with no NVIDIA
  GPU device, TensorFlow's CUDA probing errors (`failed call to cuInit`, ...), which say
  nothing to a CPU user (TFP_IWAE_SHOW_CUDA_PROBE=1 keeps them);
- makes Ctrl-C (SIGINT) before training starts exit quietly with status 130 (the
  training loop then answers it with a checkpoint, see `tfp_iwae.preemption`).
`run(main)` runs a launcher's main and reports the package's errors (`tfp_iwae.Error`)
as one `error: ...` line with status 2, a run stopped on a signal with its status.
"""

import atexit
import glob
import os
import re
import signal
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Lines of TensorFlow's CUDA probing (and absl's note that precedes them), dropped from
# stderr where no GPU device exists.
CUDA_PROBE_MARKERS = (b"cuInit", b"CUDA error", b"CUDA_ERROR", b"cuda_", b"cudart",
                      b"cuda drivers", b"cuDNN", b"cuFFT", b"cuBLAS", b"TensorRT", b"TF-TRT",
                      b"absl::InitializeLog()")


def _interrupted(signum, frame):
    """SIGINT before the training loop takes the signal over: exit 130, no traceback."""
    print("interrupted", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when ignored
    signal.signal(signal.SIGINT, _interrupted)


def has_gpu_device():
    """Whether this machine has an NVIDIA GPU device node (/dev/nvidia0, ...)."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def _glog_levels_hidden():
    """The glog severity letters TF_CPP_MIN_LOG_LEVEL hides (I: >= 1, W: >= 2, E: >= 3).
    TensorFlow prints some lines before its logging reads that variable ("All log
    messages before absl::InitializeLog() ..."), so they are dropped here too."""
    try:
        level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        level = 0
    return b"IWE"[:max(0, min(level, 3))]


def dropped(line, markers, hidden_levels):
    """Whether a stderr line is noise: a glog line (`I0000 00:00:...`) of a hidden
    severity, or one that contains any of `markers`."""
    glog = re.match(rb"([IWEF])\d{4} \d\d:\d\d:\d\d", line)
    if glog and glog.group(1) in hidden_levels:
        return True
    return any(m in line for m in markers)


def filter_stderr(markers, hidden_levels):
    """Drops the lines of file descriptor 2 (C++ and Python writes alike) that `dropped`
    calls noise, for the rest of the process: stderr becomes a pipe read by a daemon
    thread that passes every other line on (and drains it at exit)."""
    real = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def forward():
        with os.fdopen(read, "rb", buffering=0) as pipe:
            pending = b""
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                out = b"".join(line + b"\n" for line in lines
                               if not dropped(line, markers, hidden_levels))
                if out:
                    os.write(real, out)
            if pending and not dropped(pending, markers, hidden_levels):
                os.write(real, pending)

    thread = threading.Thread(target=forward, name="stderr_filter", daemon=True)
    thread.start()

    def drain():
        sys.stderr.flush()
        os.dup2(real, 2)  # closes the pipe's last write end: the thread drains and ends
        thread.join(timeout=2.)

    atexit.register(drain)


_MARKERS = () if has_gpu_device() or os.environ.get("TFP_IWAE_SHOW_CUDA_PROBE") == "1" \
    else CUDA_PROBE_MARKERS
if _MARKERS or _glog_levels_hidden():
    filter_stderr(_MARKERS, _glog_levels_hidden())


def fail(message):
    """Prints `error: message` to stderr and exits with status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def quiet_absl():
    from absl import logging
    logging.set_verbosity(logging.WARNING)


def check_flags(checks):
    """Fails naming every bad flag at once: `checks` is [(flag, value, ok, expected)]."""
    bad = [f"--{flag}: expected {expected}, got {value!r}" for flag, value, ok, expected
           in checks if not ok]
    if bad:
        fail("; ".join(bad) + ".")


def run(main):
    """`absl.app.run(main)`, reporting the package's errors: a `tfp_iwae.Error` exits
    with status 2 and its message (a run stopped on a signal: its status, 143 / 130 /
    129, and a `stopped:` line)."""
    from absl import app

    from tfp_iwae import errors, preemption

    def reported(argv):
        try:
            return main(argv)
        except preemption.Preempted as e:
            print(f"stopped: {e}", file=sys.stderr, flush=True)
            sys.exit(e.exit_code)
        except errors.Error as e:
            fail(str(e))

    app.run(reported)


def restore_run(logdir, checkpoint=None):
    """The `rundir.RestoredRun` (config, model, checkpoint, step) of the training run in
    `logdir`; fails with its message."""
    from tfp_iwae import errors, rundir
    try:
        return rundir.restore_run(logdir, checkpoint)
    except errors.Error as e:
        fail(str(e))
