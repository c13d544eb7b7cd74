"""Shared command-line plumbing: quiet start-up, error reporting, flag checks, run restore.

Importing this module changes nothing and loads no TensorFlow. `start()`, which every
command calls before TensorFlow is imported (`tfp_iwae.cli`'s entry points do):
- keeps TensorFlow's C++ INFO/WARNING lines out (TF_CPP_MIN_LOG_LEVEL=2 unless set, also
  for the lines TensorFlow prints before it reads it) and, on a machine with no NVIDIA
  GPU device, TensorFlow's CUDA probing errors (`failed call to cuInit`, ...), which say
  nothing to a CPU user (TFP_IWAE_SHOW_CUDA_PROBE=1 keeps them);
- makes Ctrl-C (SIGINT) before training starts exit quietly with status 130 (the
  training loop then answers it with a checkpoint, see `tfp_iwae.preemption`).
`run(main, define_flags, doc)` defines a command's flags, runs its main under absl and
reports the package's errors (`tfp_iwae.Error`) as one `error: ...` line with status 2,
a run stopped on a signal with its status. The library's messages name arguments
(`data_dir='/x'`, `` `num_samples=` ``); `to_flags` says them as the running command's
flags (`--data_dir='/x'`, `--num_samples`).
"""

import atexit
import functools
import glob
import os
import re
import signal
import sys
import threading

from tfp_iwae import checks

# Lines of TensorFlow's CUDA probing (and absl's note that precedes them), dropped from
# stderr where no GPU device exists.
CUDA_PROBE_MARKERS = (b"cuInit", b"CUDA error", b"CUDA_ERROR", b"cuda_", b"cudart",
                      b"cuda drivers", b"cuDNN", b"cuFFT", b"cuBLAS", b"TensorRT", b"TF-TRT",
                      b"absl::InitializeLog()")

_started = False
_drain_stderr = None  # the stderr filter's drain, once `filter_stderr` installed it


def _in_import(frame):
    """Whether `frame` runs inside an import (importlib's frames are on its stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _interrupted(signum, frame):
    """SIGINT before the training loop takes the signal over: exit 130, no traceback.

    Inside an import (TensorFlow's, at start-up) the process ends there and then: an
    exception raised there need not get out as it is (NumPy's C extension, importing
    `datetime`, turned it into an ImportError with a traceback), and nothing of a run is
    being written while a module loads."""
    print("interrupted", file=sys.stderr, flush=True)
    if _in_import(frame):
        if _drain_stderr is not None:
            _drain_stderr()
        os._exit(128 + signum)
    raise SystemExit(128 + signum)


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

    global _drain_stderr
    _drain_stderr = drain
    atexit.register(drain)


def start():
    """Quiet start-up of a command, before TensorFlow is imported (once per process):
    TF_CPP_MIN_LOG_LEVEL=2 unless set, the stderr filter, and a quiet exit (130) on
    SIGINT until the training loop takes the signal over."""
    global _started
    if _started:
        return
    _started = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when ignored
        signal.signal(signal.SIGINT, _interrupted)
    markers = () if has_gpu_device() or os.environ.get("TFP_IWAE_SHOW_CUDA_PROBE") == "1" \
        else CUDA_PROBE_MARKERS
    if markers or _glog_levels_hidden():
        filter_stderr(markers, _glog_levels_hidden())


# Library arguments that a command's flag names otherwise: `argument=value` (that value
# only) or `argument` (any value, or none) -> the flag's text. The data functions call
# their dataset argument `name` and say `dataset name=` in messages.
ARGUMENT_FLAGS = {
    "allow_nonstandard=True": "--allow_nonstandard_data",
    "allow_nonstandard=False": "--noallow_nonstandard_data",
    "allow_nonstandard": "--allow_nonstandard_data",
    "download=True": "--download",
    "download=False": "--nodownload",
    "dataset name": "--dataset",
}
# An argument in a library message: `name=` alone in backticks, or name= then a value or
# nothing (not part of a longer name, a list, a path, an attribute or a flag: `--name=`,
# and not followed by an unquoted value holding a `/`, a path such as seed=1/ckpt-5);
# or a quoted span ('...' or "..." after no letter: a repr, such as a path), which is
# left as it is, whatever it holds.
_ARGUMENT = re.compile(r"(?<!\w)'[^'\n]*'|(?<!\w)\"[^\"\n]*\"|"
                       r"(?<![\w.\-/=,])(`?)(dataset name|[A-Za-z_]\w*)=(?![^\s'\"`]*/)"
                       r"(?:(True|False)\b)?(`?)")
# What can start a value after `name=` (a repr, a number, a list, a path).
_VALUE_START = re.compile(r"[\w'\"\[({/~-]")
_command_flags = frozenset()


def _is_flag(text, flag_names):
    """Whether flag text `--name` (or `--noname` of a boolean flag) is one of `flag_names`."""
    name = text[2:]
    return name in flag_names or (name.startswith("no") and name[2:] in flag_names)


def _flag_text(argument, value, flag_names):
    """(flag text, whether it stands for `argument=value` as a whole) for an argument a
    library message names, with `value` (True / False) or None; None if no flag of the
    command stands for it."""
    if value and f"{argument}={value}" in ARGUMENT_FLAGS:
        text = ARGUMENT_FLAGS[f"{argument}={value}"]
        return (text, True) if _is_flag(text, flag_names) else None
    text = ARGUMENT_FLAGS.get(argument, f"--{argument}")
    return (text, False) if _is_flag(text, flag_names) else None


def to_flags(message, flag_names):
    """A library message said in a command's flags: each argument the message names
    (`name=`) that is one of `flag_names`, the running command's flags, becomes the flag.

    `` `name=` `` -> `--name`; `name=value` -> `--name=value`; `name=` before no value
    (`lower num_samples= or ...`) -> `--name`. `ARGUMENT_FLAGS` gives the flags of
    arguments named otherwise (`allow_nonstandard=True` -> `--allow_nonstandard_data`,
    `download=False` -> `--nodownload`, `dataset name='x'` -> `--dataset='x'`). Names
    that are no flag of the command stay as they are.
    """
    def replace(m):
        tick, argument, value, close = m.groups()
        if argument is None:  # a quoted span
            return m.group(0)
        found = _flag_text(argument, value, flag_names)
        if found is None:
            return m.group(0)
        text, whole = found
        if tick and close and not value:
            return text  # `name=` -> --name
        if whole:
            return tick + text + close  # download=False -> --nodownload
        if value or (not close and _VALUE_START.match(m.string, m.end())):
            return f"{tick}{text}={value or ''}{close}"  # name=value -> --name=value
        return tick + text + close  # name= before no value -> --name

    return _ARGUMENT.sub(replace, message)


def command_flags():
    """The flag names of the running command (those its `define_flags` defined; all of
    absl's FLAGS for a command run without one)."""
    if _command_flags:
        return _command_flags
    from absl import flags
    return frozenset(flags.FLAGS)


def say(line):
    """Prints a library log line (`trainer.train`'s `log`) in the command's flags."""
    print(to_flags(line, command_flags()), flush=True)


def error_message(error):
    """The message of a library error (a `tfp_iwae.Error`), said in the command's flags."""
    return to_flags(str(error), command_flags())


def fail(message):
    """Prints `error: message` to stderr and exits with status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def quiet_absl():
    from absl import logging
    logging.set_verbosity(logging.WARNING)


def check_flags(flag_checks):
    """Fails naming every bad flag at once: "--flag: expected {expected}, got {value!r}"
    for each, joined by "; ".

    `flag_checks` is [(flag, value, check, expected)]; `check` is a function of
    `tfp_iwae.checks` taking (value, flag, label=..., expected=...): `COUNT` (an integer
    >= 1), `COUNT_OR_ZERO` (>= 0) or `NON_NEGATIVE` (a finite real >= 0), or another.
    """
    from tfp_iwae import errors

    bad = []
    for flag, value, check, expected in flag_checks:
        try:
            check(value, flag, label=f"--{flag}", expected=expected)
        except errors.ArgumentError as e:
            bad.append(str(e).rstrip("."))
    if bad:
        fail("; ".join(bad) + ".")


# The checks of `check_flags` (tfp_iwae.checks, the package's one validator).
COUNT = checks.count
COUNT_OR_ZERO = functools.partial(checks.count, minimum=0)
NON_NEGATIVE = functools.partial(checks.real, lower=0.)


def define_for_main(define_flags, flag_values):
    """Runs `define_flags(flag_values)` and declares the flags it defined key flags of
    the program's main module, which `--help` / `--helpshort` list (absl lists the
    flags defined in `__main__`; a command's are defined in its `tfp_iwae.cli` module).
    They are the names `error_message` says as flags (`command_flags`)."""
    global _command_flags
    before = set(flag_values)
    define_flags(flag_values)
    defined = set(flag_values) - before
    for name in sorted(defined):
        flag_values.register_key_flag_for_module(sys.argv[0], flag_values[name])
    _command_flags = frozenset(defined)


def run(main, define_flags=None, doc=None):
    """`absl.app.run(main)` after `define_flags(flags.FLAGS)`, reporting the package's
    errors: a `tfp_iwae.Error` exits with status 2 and its message in the command's flags
    (`error_message`; a run stopped on a signal: its status, 143 / 130 / 129, and a
    `stopped:` line). `doc` is the usage text of `--help` (absl shows the main module's
    docstring)."""
    from absl import app, flags

    from tfp_iwae import errors, preemption

    if define_flags is not None:
        define_for_main(define_flags, flags.FLAGS)
    if doc and "__main__" in sys.modules:
        sys.modules["__main__"].__doc__ = doc

    def reported(argv):
        try:
            return main(argv)
        except preemption.Preempted as e:
            print(f"stopped: {e}", file=sys.stderr, flush=True)
            sys.exit(e.exit_code)
        except errors.Error as e:
            fail(error_message(e))

    app.run(reported)


def define_run_flags(flag_values):
    """--logdir and --checkpoint: the trained run a command reads (evaluate, sample,
    export)."""
    from absl import flags
    flags.DEFINE_string("logdir", "runs/default", "The training run's logdir.",
                        flag_values=flag_values)
    flags.DEFINE_string("checkpoint", None, "A checkpoint prefix of the run (default: the "
                        "newest), e.g. an older one when the newest is damaged.",
                        flag_values=flag_values)


def restore_run(logdir, checkpoint=None):
    """The `rundir.RestoredRun` (config, model, checkpoint, step) of the training run in
    `logdir`; fails with its message (in the command's flags)."""
    from tfp_iwae import errors, rundir
    try:
        return rundir.restore_run(logdir, checkpoint)
    except errors.Error as e:
        fail(error_message(e))
