"""The package's error family: `except tfp_iwae.Error` catches every error it raises on
bad input or a failed run.

Each error keeps the built-in base users may already catch: `DataError` is a ValueError,
`TrainingError` and `RunDirError` are RuntimeErrors. `Preempted` (a run stopped on a
signal after writing a checkpoint) is one too, though it reports no fault.
"""

__all__ = ["Error"]


class Error(Exception):
    """Base of the errors tfp_iwae raises (data, run directory, training, preemption)."""
