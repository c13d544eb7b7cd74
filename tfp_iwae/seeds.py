"""Explicit, stateless seeds.

Every sampling function in tfp_iwae takes `seed`: None (fresh randomness), a Python
int, or a stateless `[2]` int32 Tensor. Ints are turned into stateless seeds so that
the same int gives the same samples, in eager mode and inside `tf.function` alike.
"""

import numbers

import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["stateless_seed", "split_seed", "fold_in", "RNG_ALG"]

# The counter-based generator of every stateless draw in tfp_iwae (fast under XLA on CPU).
RNG_ALG = "philox"


def stateless_seed(seed):
    """None -> None; int -> `[2]` int32 Tensor; `[2]` Tensor -> int32 Tensor."""
    if seed is None:
        return None
    if isinstance(seed, bool):
        raise ValueError(f"`seed` must be None, an int or a [2] int Tensor, got {seed!r}.")
    if isinstance(seed, numbers.Integral):
        seed = int(seed)
        if seed < 0:
            raise ValueError(f"`seed` must be a non-negative int, got {seed}.")
        return tf.constant([seed % 2**31, (seed // 2**31) % 2**31], tf.int32)
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank is not None and seed.shape.as_list() != [2]:
        raise ValueError(f"`seed` Tensor must have shape [2], got {seed.shape}.")
    return tf.cast(seed, tf.int32)


def split_seed(seed, n=2):
    """Splits a seed into n independent stateless seeds (None stays fresh randomness)."""
    return tfp.random.split_seed(stateless_seed(seed), n)


def fold_in(seed, data):
    """A stateless seed derived from `seed` and an int (e.g. the training step)."""
    seed = stateless_seed(seed)
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(data, tf.int32))
