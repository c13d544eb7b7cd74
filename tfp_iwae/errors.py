"""The package's error family: `except tfp_iwae.Error` catches every error it raises on
bad input or a failed run.

Each error keeps the built-in base users may already catch: `ArgumentError` and
`DataError` are ValueErrors, `ArgumentTypeError` is a TypeError, `TrainingError` and
`RunDirError` are RuntimeErrors. `Preempted` (a run stopped on a signal after writing a
checkpoint) is one too, though it reports no fault.

Library messages name the argument (`data_dir=`); the command-line tools say an argument
that is also one of their flags as that flag (`tfp_iwae.cli.common.to_flags`).
"""

__all__ = ["Error", "ArgumentError", "ArgumentTypeError"]


class Error(Exception):
    """Base of the errors tfp_iwae raises (data, run directory, training, preemption)."""


class ArgumentError(Error, ValueError):
    """A bad value of a named argument (a count, a name, a shape); a ValueError."""


class ArgumentTypeError(Error, TypeError):
    """An argument of the wrong type or dtype; a TypeError."""
