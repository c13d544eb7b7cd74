"""Checks of counts and real numbers: the one place where tfp_iwae validates them.

`count` (an integer >= a minimum: a number of samples k, a block size, a seed) and
`real` (a finite real number in a range: a learning rate > 0, Adam's beta_1 in [0, 1))
return the value checked and converted (a Python int or float), or raise
`errors.ArgumentError` (a ValueError) naming the argument. A message has one of two
wordings:

- the library's, naming the argument as `name`, with what was expected and what was
  given: "`num_samples` must be >= 1 (the number of importance samples k), got 0.";
  "`beta_1` must be a finite number in [0, 1), got 1.0.". `label=` replaces the
  "`name`" part, e.g. "Estimator 'miwae(0,5)': M must be >= 1, got 0.";
- with `expected=`, the command-line layer's (`expectation`): "{label}: expected
  {expected}, got {value!r}.", where the label is a flag (the command-line tools and
  `RunConfig.validate` give theirs) and `expected` says what it takes, e.g. "an integer
  >= 1".

Importing this module loads no TensorFlow (the command-line tools check their flags
before it is loaded); a value can only be a Tensor once TensorFlow is loaded.
"""

import math
import numbers
import sys

from tfp_iwae import errors

__all__ = ["count", "real", "expectation", "DESCRIPTIONS"]

# What a count of a given argument name is, shown in parentheses in the library's
# messages unless the caller gives `description`.
DESCRIPTIONS = {"num_samples": "the number of importance samples k"}

_SIGNS = {1: "positive", 0: "non-negative"}


def expectation(label, expected, value):
    """The command-line wording of a refused value: "{label}: expected {expected}, got
    {value!r}.", the label naming a flag; also for checks other than these (a choice
    among names)."""
    return f"{label}: expected {expected}, got {value!r}."


def _refusal(label, requirement, shown, expected, value):
    """The ArgumentError for a refused value: "{label} must be {requirement}, got
    {shown}." or, with `expected`, `expectation(label, expected, value)`."""
    if expected is not None:
        return errors.ArgumentError(expectation(label, expected, value))
    return errors.ArgumentError(f"{label} must be {requirement}, got {shown}.")


def _tensor_count(value, label, kind, about, minimum, expected):
    """A scalar integer Tensor count: a Python int when its value is known at trace
    time (still to be checked by the caller), else an int32 Tensor with a run-time
    check (InvalidArgumentError if < minimum)."""
    import tensorflow as tf  # loaded already: `value` is a Tensor
    if not value.dtype.is_integer or value.shape.rank not in (0, None):
        raise _refusal(label, kind + about, repr(value), expected, value)
    static = tf.get_static_value(value)
    if static is not None:
        return static.item() if hasattr(static, "item") else static
    n = tf.cast(value, tf.int32)
    with tf.control_dependencies([tf.debugging.assert_greater_equal(
            n, tf.constant(minimum, tf.int32),
            message=f"{label} must be >= {minimum}{about}")]):
        return tf.identity(n)


def count(value, name, *, minimum=1, description=None, allow_tensor=False,
          from_text=False, label=None, expected=None):
    """Returns `value` as a count (an integer >= `minimum`), or raises ArgumentError.

    Refused: a bool (True is no count), a float (2.0 too), a string (unless
    `from_text`), None, and any integer < `minimum`.

    Args:
      value: the value to check: a Python or NumPy integer; with `allow_tensor` also a
        scalar integer Tensor; with `from_text` also its text ("8").
      name: the argument's name, e.g. `num_samples`: the message's label is
        "`num_samples`" unless `label` is given.
      minimum: the smallest count allowed (an int): 1 (the default: e.g. k), 0 (e.g. a
        number of draws, where none is an empty result), or more.
      description: what the count is, shown in parentheses in the library's message
        (e.g. "the number of samples to draw"); default `DESCRIPTIONS.get(name)`.
      allow_tensor: also accept a scalar integer Tensor. One whose value is known at
        trace time is checked now and returned as a Python int; otherwise it is returned
        as an int32 scalar Tensor with a run-time check (InvalidArgumentError if
        < `minimum`, naming the argument).
      from_text: also accept a string holding an integer (e.g. an estimator's
        parameter in its name, "miwae(8,8)"); a string that holds none is refused as
        "{label} must be an integer, got '...'".
      label: how the message names the argument, in place of "`name`" (e.g.
        "Estimator 'miwae(0,5)': M", or a flag's name with `expected`).
      expected: the command-line wording: "{label}: expected {expected}, got
        {value!r}." for every refusal (e.g. expected="an integer >= 1").

    Returns:
      A Python int >= `minimum` (or, with `allow_tensor`, an int32 scalar Tensor whose
      value is only known at run time).
    """
    original = value
    minimum = int(minimum)
    label = f"`{name}`" if label is None else label
    description = DESCRIPTIONS.get(name) if description is None else description
    about = f" ({description})" if description else ""
    sign = _SIGNS.get(minimum)
    if allow_tensor:
        what = "integer or a scalar integer Tensor"
    else:
        what = "integer" if from_text else "Python integer"
    kind = (f"a {sign} {what}" if sign else f"a {what} >= {minimum}")
    if from_text and isinstance(value, str):
        kind = "an integer"
        try:
            value = int(value)
        except ValueError:
            raise _refusal(label, kind + about, repr(value), expected, original) from None
    tf = sys.modules.get("tensorflow")
    if allow_tensor and tf is not None and tf.is_tensor(value):
        value = _tensor_count(value, label, kind, about, minimum, expected)
        if tf.is_tensor(value):
            return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _refusal(label, kind + about, repr(value), expected, original)
    if value < minimum:
        raise _refusal(label, f">= {minimum}{about}", str(value), expected, original)
    return int(value)


def _bound_text(lower, upper, lower_open, upper_open):
    """The range in words: "> 0", ">= 0", "< 1", "in [0, 1)", or "" (no bounds)."""
    if lower is not None and upper is not None:
        return (f"in {'(' if lower_open else '['}{lower:g}, "
                f"{upper:g}{')' if upper_open else ']'}")
    if lower is not None:
        return f"{'>' if lower_open else '>='} {lower:g}"
    if upper is not None:
        return f"{'<' if upper_open else '<='} {upper:g}"
    return ""


def real(value, name, *, lower=None, upper=None, lower_open=False, upper_open=False,
         label=None, expected=None):
    """Returns `value` as a finite float in the range given, or raises ArgumentError.

    Accepted: anything `float()` converts (a Python or NumPy number, a string such as
    "0.05", a scalar eager Tensor), except a bool. Refused: a bool, anything `float()`
    does not convert, NaN, +-inf, and a number outside the range. The library's message
    names the range, e.g. "`learning_rate` must be a finite number > 0, got -1.0.";
    "`beta_1` must be a finite number in [0, 1), got 1.0.".

    Args:
      value: the value to check.
      name: the argument's name (the message's label is "`name`" unless `label`).
      lower, upper: the bounds of the range (None: no bound on that side).
      lower_open, upper_open: whether that bound itself is excluded (e.g. `lower=0,
        lower_open=True`: a positive number).
      label: how the message names the argument, in place of "`name`".
      expected: the command-line wording, as for `count`.

    Returns:
      A Python float.
    """
    label = f"`{name}`" if label is None else label
    bounds = _bound_text(lower, upper, lower_open, upper_open)
    requirement = "a finite number" + (f" {bounds}" if bounds else "")
    if isinstance(value, bool):
        raise _refusal(label, requirement, repr(value), expected, value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _refusal(label, requirement, repr(value), expected, value) from None
    inside = math.isfinite(number) and not (
        lower is not None and (number <= lower if lower_open else number < lower)) and not (
        upper is not None and (number >= upper if upper_open else number > upper))
    if not inside:
        raise _refusal(label, requirement, repr(number), expected, value)
    return number
