"""Evaluation: memory-bounded L_k (k = 5000 in the paper), active units, bits/dim, and a
training run's periodic validation (`validate`)."""

import math

import numpy as np
import tensorflow as tf

from tfp_iwae import data
from tfp_iwae import objectives
from tfp_iwae import seeds
from tfp_iwae.memory import VALIDATION_IMAGES

__all__ = ["estimate_log_likelihood", "active_units", "bits_per_dim", "default_chunk_size",
           "bound_curve", "estimate_bound_curve", "validate", "validation_binarization"]

# Rows (samples x images) per compiled chunk: logits of 50,000 x 784 float32 are 157 MB.
_ROWS_PER_CHUNK = 50_000


def default_chunk_size(num_samples, batch_size):
    """Samples per chunk so that chunk * batch ~ 50,000 rows (large matmuls, bounded memory)."""
    return int(max(1, min(num_samples, _ROWS_PER_CHUNK // max(1, batch_size))))


def bits_per_dim(nll_nats, dims=784):
    """NLL in nats per image -> bits per dimension: nll / (dims * ln 2)."""
    return nll_nats / (dims * math.log(2.))


def _log_sum_exp(a, axis):
    """Max-shifted log-sum-exp of a float64 NumPy array over `axis` (exact, no overflow)."""
    m = a.max(axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def _batches(x_or_dataset, batch_size):
    if isinstance(x_or_dataset, tf.data.Dataset):
        for x in x_or_dataset:
            yield x
        return
    x = np.asarray(x_or_dataset, np.float32)
    for start in range(0, len(x), batch_size):
        yield tf.constant(x[start:start + batch_size])


def estimate_log_likelihood(model, x_or_dataset, num_samples=5000, *, chunk_size=None,
                            batch_size=100, seed=0, return_log_weights=False):
    """Per-example IWAE estimate L_k of log p(x), streamed over chunks of samples.

    Chunk j draws `chunk_size` samples with the stateless seed fold_in(seed, j) and
    returns their log-sum-exp (one compiled `[chunk * batch, d]` forward pass); the
    chunks are combined with a running max-shifted log-add-exp in float64, so the result
    is the exact L_k of all k draws while peak memory depends on `chunk_size * batch_size`,
    not on k.

    Args:
      model: an `IWAE`.
      x_or_dataset: array `[N, input_dim]` or a `tf.data.Dataset` of such batches.
      num_samples: k.
      chunk_size: samples per chunk (any size; need not divide k). Default keeps
        chunk * batch near 50,000 rows.
      batch_size: images per batch when given an array.
      seed: int or `[2]` seed.
      return_log_weights: also return all log weights `[k, N]` (memory O(k N) on the host).

    Returns:
      float64 NumPy array `[N]` of L_k in nats (and the log weights if asked).
    """
    k = objectives.check_num_samples(num_samples)
    chunk = default_chunk_size(k, batch_size) if chunk_size is None else \
        objectives.check_num_samples(chunk_size, "chunk_size")
    chunk = min(chunk, k)
    base = seeds.stateless_seed(seed)

    @tf.function(jit_compile=True, reduce_retracing=True)
    def chunk_log_weights(x, chunk_seed, n):
        return model.log_weights(x, n, seed=chunk_seed)

    results, all_lw = [], []
    for x in _batches(x_or_dataset, batch_size):
        acc = np.full([int(x.shape[0])], -np.inf)
        lws = []
        for j, start in enumerate(range(0, k, chunk)):
            n = min(chunk, k - start)
            lw = chunk_log_weights(x, seeds.fold_in(base, j), n)
            lw64 = lw.numpy().astype(np.float64)
            acc = np.logaddexp(acc, _log_sum_exp(lw64, axis=0))
            if return_log_weights:
                lws.append(lw64)
        results.append(acc - math.log(k))
        if return_log_weights:
            all_lw.append(np.concatenate(lws, axis=0))
    out = np.concatenate(results) if results else np.zeros([0])
    if return_log_weights:
        return out, np.concatenate(all_lw, axis=1)
    return out


def bound_curve(log_weights, ks):
    """L_k for several k from one set of log weights, averaged over disjoint blocks.

    For each k the first `floor(K / k) * k` of the K draws are cut into disjoint blocks
    of k; each block gives an unbiased draw of L_k, and their mean estimates E[L_k] with
    less variance than a single block (all K draws are used for every k that divides K).

    Args:
      log_weights: `[K, N]` log weights log p(x, z_i) - log q(z_i|x) of N examples.
      ks: increasing sample counts, each in [1, K].

    Returns:
      float64 NumPy array `[len(ks), N]` of block-averaged L_k in nats.
    """
    lw = np.asarray(log_weights, np.float64)
    if lw.ndim != 2 or lw.shape[0] < 1:
        raise ValueError(f"log_weights: expected shape [num_samples, N], got {lw.shape}.")
    total = lw.shape[0]
    out = []
    for k in ks:
        if int(k) != k or not 1 <= k <= total:
            raise ValueError(f"ks: each k must be an integer in [1, {total}], got {k!r}.")
        k = int(k)
        blocks = lw[:(total // k) * k].reshape(total // k, k, -1)
        out.append(_log_sum_exp(blocks, axis=1).mean(axis=0) - math.log(k))
    return np.stack(out)


def estimate_bound_curve(model, x, ks, *, seed=0, batch_size=100, chunk_size=None):
    """Block-averaged L_k `[len(ks), N]` (nats) for a model, from max(ks) draws per image.

    One streamed pass of `estimate_log_likelihood` with k = max(ks) keeps the log
    weights (memory O(max(ks) * N) on the host); `bound_curve` then gives every k.
    """
    ks = [int(k) for k in ks]
    if not ks or sorted(ks) != ks:
        raise ValueError(f"ks: expected a non-empty increasing list, got {ks!r}.")
    _, lw = estimate_log_likelihood(model, x, ks[-1], chunk_size=chunk_size,
                                    batch_size=batch_size, seed=seed, return_log_weights=True)
    return bound_curve(lw, ks)


def active_units(model, x, threshold=1e-2, seed=0, batch_size=500):
    """Active units per stochastic layer (Burda et al., sec. 5.2).

    Unit u is active if Var_x(E_{q(u|x)}[u]) > threshold: the variance over data points
    of the posterior mean. Layer 2's posterior mean is E_{q(h2|h1)}[h2] at one sample
    h1 ~ q(h1|x) per image (stateless seed fold_in(seed, batch index)), as in the
    paper's code, not the mean over h1.

    Args:
      model: an `IWAE`.
      x: `[N, input_dim]` images as the model sees them: for a model trained on binarised
        pixels, binary images (`tfp_iwae.data.active_units_images` gives the first 500
        training images binarised once with a recorded seed), not grey levels.
      threshold: variance above which a unit is active (paper: 1e-2).
      seed: int or `[2]` seed of the h1 samples (2 layers).
      batch_size: images per encoder call.

    Returns:
      dict with `counts` (list, one int per layer) and `statistics` (list of float64
      arrays `[units]`, the per-unit variance of the posterior mean).
    """
    x = np.asarray(x, np.float32)
    means = [[] for _ in model.q_layers]
    base = seeds.stateless_seed(seed)
    for b, start in enumerate(range(0, len(x), batch_size)):
        xb = tf.constant(x[start:start + batch_size])
        loc, scale = model.q_layers[0].parameters_for(xb)
        means[0].append(loc.numpy())
        if len(model.q_layers) == 2:
            eps = tf.random.stateless_normal(tf.shape(loc), seeds.fold_in(base, b),
                                             alg="philox")
            loc2, _ = model.q_layers[1].parameters_for(loc + scale * eps)
            means[1].append(loc2.numpy())
    stats = [np.var(np.concatenate(m).astype(np.float64), axis=0) for m in means]
    return {"counts": [int(np.sum(s > threshold)) for s in stats], "statistics": stats}


def validate(model, images, num_samples, eval_samples, *, binarization, seed, pictures=True):
    """A training run's validation at one step: the numbers behind its summaries and log.

    The images are presented as `data.evaluation_pixels` gives them (binarised once with
    seed 1234 unless `binarization` is `none`); every draw is seeded by `seed` (the step).

    Args:
      model: an `IWAE`.
      images: `[N, input_dim]` validation intensities.
      num_samples: k of the training objective (L_k, ELBO and ESS are at this k).
      eval_samples: k of the log-likelihood estimate (L_5000 in the paper).
      binarization: the run's `--binarization`.
      seed: int seed of the importance samples.
      pictures: also draw 16 samples and reconstruct 16 images spread over the set.

    Returns:
      dict with `l_k` and `log_likelihood` (mean L_k and L_eval_samples, nats),
      `bits_per_dim` (of L_eval_samples), `active_units` (counts per layer), `elbo` and
      `ess` (means over the first `memory.VALIDATION_IMAGES` images), their `log_weights`
      `[k, n]`, `num_images`, and with `pictures` `inputs`, `reconstructions` and
      `samples` (16 images each; else None).
    """
    xb = data.evaluation_pixels(images, binarization, 1234)
    lk = estimate_log_likelihood(model, xb, num_samples, seed=seed)
    l_eval = estimate_log_likelihood(model, xb, eval_samples, seed=seed)
    au = active_units(model, xb)  # the pixels the model sees, not grey levels
    lw = model.log_weights(tf.constant(xb[:VALIDATION_IMAGES]), num_samples, seed=seed)
    out = dict(l_k=float(np.mean(lk)), log_likelihood=float(np.mean(l_eval)),
               bits_per_dim=bits_per_dim(-float(np.mean(l_eval)), model.input_dim),
               active_units=au["counts"], elbo=float(tf.reduce_mean(objectives.vae_bound(lw))),
               ess=float(tf.reduce_mean(objectives.effective_sample_size(lw))),
               log_weights=lw, num_images=len(xb), inputs=None, reconstructions=None,
               samples=None)
    if pictures:
        spread = np.linspace(0, len(xb) - 1, 16).astype(int)  # every class when sorted
        out.update(inputs=xb[spread], samples=model.sample(16, seed=seed, mean=True),
                   reconstructions=model.reconstruct(tf.constant(xb[spread]), seed=seed))
    return out


def validation_binarization(binarization):
    """How `validate` presents the images for a run's --binarization (a log label)."""
    return ("not binarised (intensities)" if binarization == "none" else
            "fixed-binarised")
