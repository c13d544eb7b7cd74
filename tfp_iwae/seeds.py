"""Explicit, stateless seeds: the one home of tfp_iwae's randomness.

Every sampling function in tfp_iwae takes `seed`: None (fresh randomness), a Python
int, or a stateless `[2]` int32 (or int64) Tensor. Ints are turned into stateless seeds
so that the same int gives the same samples, in eager mode and inside `tf.function`
alike. Any other seed (a string, a float, a float Tensor) is refused with an
ArgumentError (a ValueError) naming `seed` (`stateless_seed`).

This module holds the sampling algorithm (`RNG_ALG`), the seed derivations
(`stateless_seed`, `split_seed`, `fold_in`, and `sub_seed` for the int seeds of Keras
initialisers) and the stateless draws (`normal`, `uniform`); other modules draw through
these instead of calling `tf.random.stateless_*` themselves.
"""

import numbers

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_iwae import checks
from tfp_iwae import errors

__all__ = ["stateless_seed", "split_seed", "fold_in", "sub_seed", "normal", "uniform",
           "RNG_ALG", "LAYER_SEED_STRIDE", "SUBLAYER_SEED_STRIDE"]

# Counter-based generator of every stateless draw in tfp_iwae. XLA on CPU implements TF's
# default ("auto_select") stateless RNG far more slowly than Philox (docs/benchmarks.md),
# and its compiled draws differ from its uncompiled ones even for a constant seed. Its
# numbers are the same with and without XLA only when the seed is a compile-time constant
# (TensorFlow then folds the op before XLA compiles it); given the seed as a runtime
# argument, as the training step and the evaluation do, XLA's Philox kernel draws a
# different stream from TensorFlow's (each reproducible on its own; tested in
# tests/test_model.py).
RNG_ALG = "philox"

# Strides of `sub_seed` for the int seeds of Keras initialisers: `IWAE(seed=s)` gives its
# stochastic layer i the seed s * LAYER_SEED_STRIDE + i, and each network gives its
# sub-layer j the seed (its seed) * SUBLAYER_SEED_STRIDE + j. Both are part of every
# seeded initialisation (and so of committed results and tests): changing either changes
# the initial weights of every seeded model.
LAYER_SEED_STRIDE = 10
SUBLAYER_SEED_STRIDE = 1000


_EXPECTED = "expected None, an int or a [2] int32/int64 tensor"


def _describe(value):
    """How a seed argument is named in an error: its type and value (or dtype, shape)."""
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype.name} and shape {list(value.shape)}"
    if tf.is_tensor(value):
        shape = tf.TensorShape(value.shape)
        return (f"a tensor of dtype {value.dtype.name} and shape "
                f"{shape.as_list() if shape.rank is not None else 'unknown'}")
    if isinstance(value, (list, tuple)):  # also a tf.Module's ListWrapper of a list
        value = type(value)(value) if type(value) in (list, tuple) else list(value)
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _refused(seed):
    """The ArgumentError (a ValueError) for a seed that is not None, an int or a `[2]`
    integer tensor."""
    return errors.ArgumentError(f"`seed`: {_EXPECTED}, got {_describe(seed)}.")


def stateless_seed(seed):
    """None -> None; int -> `[2]` int32 Tensor; `[2]` integer Tensor -> int32 Tensor.

    Accepted: None, a non-negative Python or NumPy int, or a `[2]` integer Tensor,
    array or list (int32 or int64; e.g. a `fold_in` result). Anything else (a string,
    a float, a bool, a float Tensor, another shape) is refused with an ArgumentError (a
    ValueError) naming `seed`, what was expected and what was given, e.g. "`seed`:
    expected None, an int or a [2] int32/int64 tensor, got str 'abc'".
    """
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)):
        raise _refused(seed)
    if isinstance(seed, numbers.Integral):
        seed = checks.count(seed, "seed", minimum=0, label="`seed`",
                            expected="a non-negative int")
        return tf.constant([seed % 2**31, (seed // 2**31) % 2**31], tf.int32)
    if isinstance(seed, (str, bytes, numbers.Number)):  # a float, a complex, a string
        raise _refused(seed)
    try:
        tensor = tf.convert_to_tensor(seed)
    except (TypeError, ValueError):  # e.g. a ragged list or an arbitrary object
        raise _refused(seed) from None
    if not tensor.dtype.is_integer or (tensor.shape.rank is not None and
                                       tensor.shape.as_list() != [2]):
        raise _refused(seed)
    return tf.cast(tensor, tf.int32)


def split_seed(seed, n=2):
    """Splits a seed into n independent stateless seeds (None stays fresh randomness)."""
    return tfp.random.split_seed(stateless_seed(seed), n)


def fold_in(seed, data):
    """A stateless seed derived from `seed` and an int (e.g. the training step)."""
    seed = stateless_seed(seed)
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(data, tf.int32))


def sub_seed(seed, index, stride):
    """The int seed of part `index` of something seeded with the int `seed`.

    Returns `seed * stride + index` (None stays None: unseeded). Distinct (seed, index)
    pairs give distinct seeds while 0 <= index < stride. Used for the int seeds of Keras
    initialisers, which are not stateless seeds: `stride` is `LAYER_SEED_STRIDE` (10) for
    the model's stochastic layers and `SUBLAYER_SEED_STRIDE` (1000) for a network's
    sub-layers; these fixed strides keep seeded initialisations as they have always been.
    """
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise errors.ArgumentError(f"`seed`: expected None or an int (the seed of the Keras "
                                   f"initialisers), got {_describe(seed)}.")
    if not 0 <= index < stride:
        raise errors.ArgumentError(f"`index` must be in [0, {stride}), got {index}.")
    return int(seed) * stride + index


def _draw_seed(seed):
    """A stateless seed Tensor is used as it is (int32 or int64, e.g. a `fold_in` of an
    int64 counter); anything else goes through `tfp.random.sanitize_seed` (TFP's
    convention, which a distribution's `sample(seed=...)` follows: a `[2]` list is a
    stateless seed, None or an int a fresh stateful draw). A seed of another kind (a
    string, a float, a float Tensor) is refused by name, as in `stateless_seed`."""
    if tf.is_tensor(seed):
        if not seed.dtype.is_integer:
            raise _refused(seed)
        return seed
    if seed is not None and (isinstance(seed, (bool, np.bool_)) or
                             not isinstance(seed, numbers.Integral)):
        stateless_seed(seed)  # raises for anything but a [2] integer list or array
    return tfp.random.sanitize_seed(seed)


def normal(shape, seed, dtype=tf.float32):
    """Stateless N(0, 1) samples of `shape` with the `RNG_ALG` (Philox) generator."""
    return tf.random.stateless_normal(shape, seed=_draw_seed(seed), dtype=dtype, alg=RNG_ALG)


def uniform(shape, seed, dtype=tf.float32):
    """Stateless U[0, 1) samples of `shape` with the `RNG_ALG` (Philox) generator."""
    return tf.random.stateless_uniform(shape, seed=_draw_seed(seed), dtype=dtype,
                                       alg=RNG_ALG)
