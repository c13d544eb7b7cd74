"""Explicit, stateless seeds: the one home of tfp_iwae's randomness.

Every sampling function in tfp_iwae takes `seed`: None (fresh randomness), a Python
int, or a stateless `[2]` int32 Tensor. Ints are turned into stateless seeds so that
the same int gives the same samples, in eager mode and inside `tf.function` alike.

This module holds the sampling algorithm (`RNG_ALG`), the seed derivations
(`stateless_seed`, `split_seed`, `fold_in`, and `sub_seed` for the int seeds of Keras
initialisers) and the stateless draws (`normal`, `uniform`); other modules draw through
these instead of calling `tf.random.stateless_*` themselves.
"""

import numbers

import tensorflow as tf
import tensorflow_probability as tfp

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
    if not 0 <= index < stride:
        raise ValueError(f"`index` must be in [0, {stride}), got {index}.")
    return int(seed) * stride + index


def _draw_seed(seed):
    """A stateless seed Tensor is used as it is (int32 or int64, e.g. a `fold_in` of an
    int64 counter); anything else goes through `tfp.random.sanitize_seed` (TFP's
    convention, which a distribution's `sample(seed=...)` follows: a `[2]` list is a
    stateless seed, None or an int a fresh stateful draw)."""
    return seed if tf.is_tensor(seed) else tfp.random.sanitize_seed(seed)


def normal(shape, seed, dtype=tf.float32):
    """Stateless N(0, 1) samples of `shape` with the `RNG_ALG` (Philox) generator."""
    return tf.random.stateless_normal(shape, seed=_draw_seed(seed), dtype=dtype, alg=RNG_ALG)


def uniform(shape, seed, dtype=tf.float32):
    """Stateless U[0, 1) samples of `shape` with the `RNG_ALG` (Philox) generator."""
    return tf.random.stateless_uniform(shape, seed=_draw_seed(seed), dtype=dtype,
                                       alg=RNG_ALG)
