"""Evaluation: memory-bounded L_k (k = 5000 in the paper), active units, bits/dim, and a
training run's periodic validation (`validate`)."""

import math
import typing
import weakref

import numpy as np
import tensorflow as tf

from tfp_iwae import data
from tfp_iwae import errors
from tfp_iwae import latent_model
from tfp_iwae import networks
from tfp_iwae import objectives
from tfp_iwae import seeds
from tfp_iwae.memory import VALIDATION_IMAGES

__all__ = ["estimate_log_likelihood", "active_units", "bits_per_dim", "default_chunk_size",
           "bound_curve", "estimate_bound_curve", "validate", "validation_binarization",
           "DECODER_MATMULS", "decoder_matmuls_for", "result_name", "VALIDATION_BATCH"]

# Rows (samples x images) per compiled chunk: logits of 50,000 x 784 float32 are 157 MB.
# A chunk's samples are drawn at once (its draws, and so L_k for a seed, depend on the
# chunk size); its likelihood runs in blocks of about _ROWS_PER_BLOCK rows, whose
# [5,000, 784] logits (16 MB) stay in cache better than a whole 50,000-row chunk's, which
# makes the decoder's matmuls and Bernoulli log-probs faster on a CPU (timings:
# docs/benchmarks.md).
_ROWS_PER_CHUNK = 50_000
_ROWS_PER_BLOCK = 5_000


def likelihood_block_size(chunk, batch_size):
    """Samples per likelihood block: min(chunk, 5,000 rows // batch_size), at least 1
    (None, no blocks, when batch_size is None: a batch whose size is not static)."""
    if batch_size is None:
        return None
    return int(max(1, min(chunk, _ROWS_PER_BLOCK // max(1, int(batch_size)))))


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


def _batches(x_or_dataset, batch_size, check):
    """Batches `[b, input_dim]` float32 Tensors; an array goes to the device once, whole.

    `check` (the model's `check_inputs`) runs eagerly on the whole array, or on each
    batch of a Dataset, before that batch is dispatched: the compiled programs cannot
    check their input (XLA drops run-time assertions), so integer dtypes, a Bernoulli
    model's pixels outside [0, 1] and (with the model's validate_args) non-binary or
    non-finite pixels are refused here.
    """
    if isinstance(x_or_dataset, tf.data.Dataset):
        for x in x_or_dataset:
            yield check(x)
        return
    x = check(x_or_dataset)
    for start in range(0, int(x.shape[0]), batch_size):
        yield x[start:start + batch_size]


# model -> {decoder_matmuls: its compiled per-batch estimator}. Weak keys: the entry goes
# with the model (the compiled functions hold the model only through a weak reference).
_COMPILED = weakref.WeakKeyDictionary()

# Where the estimator runs the decoder's matmuls p(x|h1) (see `decoder_matmuls_for`).
DECODER_MATMULS = ("auto", "xla", "tensorflow")


def _splits_decoder(model):
    """True when the model's p(x|h1) is a `BernoulliLayer` (logits, then log-probs)."""
    return isinstance(getattr(model, "p_x", None), networks.BernoulliLayer)


def decoder_matmuls_for(model, decoder_matmuls="auto"):
    """Resolves `estimate_log_likelihood`'s `decoder_matmuls` to `xla` or `tensorflow`.

    `xla`: each batch is one XLA program. `tensorflow`: the decoder's dense layers
    (MatMul + bias + tanh, the bulk of L_k's FLOPs) run as TensorFlow ops, which on x86
    CPUs go to oneDNN's GEMM, faster than XLA:CPU's at these shapes (timings:
    docs/benchmarks.md); the draws and log-probabilities stay in XLA programs, so the
    draws are the same and, for a float32 model, L_k agrees to float32 rounding (a
    mixed-precision model's bfloat16 matmuls round differently in the two libraries).
    `auto`: `tensorflow` for a Bernoulli decoder when no GPU is visible, else `xla`
    (XLA's GPU matmuls are the vendor's own).

    Raises:
      ArgumentError: an unknown value, or `tensorflow` for a model whose decoder is not a
        Bernoulli layer (e.g. the `gaussian` likelihood).
    """
    if decoder_matmuls not in DECODER_MATMULS:
        raise errors.ArgumentError(f"`decoder_matmuls=` must be one of {DECODER_MATMULS}, "
                                   f"got {decoder_matmuls!r}.")
    if decoder_matmuls == "auto":
        split = _splits_decoder(model) and not tf.config.list_logical_devices("GPU")
        return "tensorflow" if split else "xla"
    if decoder_matmuls == "tensorflow" and not _splits_decoder(model):
        raise errors.ArgumentError(
            "`decoder_matmuls='tensorflow'` needs a Bernoulli decoder (likelihood "
            f"'bernoulli'); this model's is "
            f"{getattr(model, 'likelihood', type(getattr(model, 'p_x', None)))!r}: use "
            "'xla' or 'auto'.")
    return decoder_matmuls


def _log_sum_exp_update(m, s, log_weights):
    """Adds a chunk `[n, b]` (float32, nats) to a running float64 (max m, sum s) `[b]` pair.

    The pair stands for m + log(s) = log sum_i exp(lw_i) over the draws so far (m = -inf,
    s = 0 before any); each chunk is summed in float64 shifted by the new running max, so
    nothing overflows and the sum rescales exactly once per chunk.
    """
    lw = tf.cast(log_weights, tf.float64)
    new_m = tf.maximum(m, tf.reduce_max(lw, axis=0))
    shift = tf.where(tf.math.is_finite(new_m), new_m, tf.zeros_like(new_m))
    s = s * tf.exp(m - shift) + tf.reduce_sum(tf.exp(lw - shift), axis=0)
    return new_m, s


def _log_mean_exp_over_chunks(chunk_log_weights, x, seed, num_full, chunk, rest, keep):
    """The chunk loop both estimator programs share (see `_xla_estimator`).

    chunk_log_weights(x, seed, j, n) gives chunk j's `[n, b]` float32 log weights (n a
    Python int; drawn with fold_in(seed, j)). Runs num_full chunks of `chunk` samples in a
    `tf.while_loop` (one chunk at a time), then `rest`, keeping the running float64
    (max, sum) pair; returns L_k `[b]` in nats and, with keep, the log weights `[k, b]`.
    """
    b = tf.shape(x)[0]
    state = (tf.constant(0), tf.fill([b], tf.constant(-np.inf, tf.float64)),
             tf.zeros([b], tf.float64))
    if keep:  # XLA needs the TensorArray's size static: num_full is an int here
        state += (tf.TensorArray(tf.float32, size=num_full,
                                 element_shape=[chunk, x.shape[0]]),)

    def body(j, acc_m, acc_s, *kept):
        lw = chunk_log_weights(x, seed, j, chunk)
        kept = tuple(t.write(j, lw) for t in kept)
        return (j + 1,) + _log_sum_exp_update(acc_m, acc_s, lw) + kept

    _, acc_m, acc_s, *kept = tf.while_loop(lambda j, *_: j < num_full, body, state,
                                           parallel_iterations=1)
    lws = [t.concat() for t in kept]
    if rest:
        lw = chunk_log_weights(x, seed, num_full, rest)
        acc_m, acc_s = _log_sum_exp_update(acc_m, acc_s, lw)
        lws.append(lw)
    k = tf.cast(num_full * chunk + rest, tf.float64)
    out = acc_m + tf.math.log(acc_s) - tf.math.log(k)
    return (out, tf.concat(lws, axis=0)) if keep else out


def _compiled_estimator(model, decoder_matmuls="xla"):
    """The model's per-batch estimator, traced once per (batch shape, chunk, rest, keep).

    `decoder_matmuls` (`xla` or `tensorflow`, see `decoder_matmuls_for`) picks the
    program: `_xla_estimator` or `_split_estimator`, which take the same arguments and
    draw the same samples.
    """
    per_model = _COMPILED.setdefault(model, {})
    fn = per_model.get(decoder_matmuls)
    if fn is None:
        build = {"xla": _xla_estimator, "tensorflow": _split_estimator}[decoder_matmuls]
        fn = per_model[decoder_matmuls] = build(weakref.ref(model))
    return fn


def _xla_estimator(model_ref):
    """The model's jitted per-batch estimator, traced once per (batch shape, chunk, rest).

    `fn(x, seed, num_full, chunk, rest, keep)` with x `[b, input_dim]` float32, seed a
    `[2]` int32 Tensor, num_full a scalar int32 Tensor (so k enters as a tensor; a Python
    int when keep), and Python ints chunk >= 1, rest in [0, chunk) and bool keep (static):
    one compiled program draws num_full chunks of `chunk` samples in a `tf.while_loop`
    (chunk j with the stateless seed fold_in(seed, j)), then `rest` samples with
    fold_in(seed, num_full), and returns the float64 log-mean-exp `[b]` (L_k, nats) of
    all k = num_full * chunk + rest log weights, accumulated on the device; with keep,
    also those log weights `[k, b]` float32.
    """
    def chunk_log_weights(x, seed, j, n):
        return latent_model.log_weights_of(
            model_ref(), x, n, seed=seeds.fold_in(seed, j),
            likelihood_block=likelihood_block_size(n, x.shape[0]))

    @tf.function(jit_compile=True)
    def batch_log_mean_exp(x, seed, num_full, chunk, rest, keep):
        return _log_mean_exp_over_chunks(chunk_log_weights, x, seed, num_full, chunk, rest,
                                         keep)

    return batch_log_mean_exp


def _split_estimator(model_ref):
    """`_xla_estimator`'s function (same arguments, draws and result) with the decoder's
    dense layers as TensorFlow ops: a graph-mode loop over chunks in which, per chunk, one
    XLA program derives the chunk's seed fold_in(seed, j) and draws z ~ q(z|x) with it
    (both inside XLA, as in `_xla_estimator`, so the draws are the same by construction)
    and returns h1 (the decoder's input) and log p(z) - log q(z|x) `[n, b]`; then, per
    likelihood block of `likelihood_block_size(n, b)` samples, `model.p_x.logits` runs as
    TensorFlow ops (oneDNN's fused MatMul + bias + tanh on x86 CPUs) and an XLA program
    takes the Bernoulli log-probs. The running float64 log-sum-exp (small `[b]` and
    `[n, b]` TensorFlow ops) stays on the device.
    """

    @tf.function(jit_compile=True)
    def draw(x, seed, j, n):
        m = model_ref()
        q = m.encoder(x)
        z = q.sample(n, seed=seeds.stateless_seed(seeds.fold_in(seed, j)))
        base = m.prior.log_prob(z) - q.log_prob(z)
        return (z["h1"] if isinstance(z, dict) else z), base

    @tf.function(jit_compile=True)
    def log_prob(x, logits):
        return networks.bernoulli_log_prob(x, logits)

    def chunk_log_weights(x, seed, j, n):
        """`[n, b]` log weights of chunk j, n (a Python int) samples."""
        m = model_ref()
        h, base = draw(x, seed, j, n)
        return base + objectives.log_likelihood_in_blocks(
            lambda hb: log_prob(x, m.p_x.logits(hb)), h, n,
            likelihood_block_size(n, x.shape[0]), tf.float32)

    @tf.function
    def batch_log_mean_exp(x, seed, num_full, chunk, rest, keep):
        # float32 as `log_weights` would see it; `estimate_log_likelihood` checked x
        # (range, and the support with validate_args) eagerly before the call.
        x = model_ref().check_inputs(x, validate_args=False)
        return _log_mean_exp_over_chunks(chunk_log_weights, x, seed, num_full, chunk, rest,
                                         keep)

    return batch_log_mean_exp


def estimate_log_likelihood(model, x_or_dataset, num_samples=5000, *, chunk_size=None,
                            batch_size=100, seed=0, return_log_weights=False,
                            decoder_matmuls="auto", progress=None):
    """Per-example IWAE estimate L_k of log p(x), streamed over chunks of samples.

    Chunk j draws `chunk_size` samples with the stateless seed fold_in(seed, j) (the last
    chunk holds the k mod chunk_size left over, if any). Each batch is one compiled
    function (compiled once per model and batch shape, reused across calls and seeds) that
    loops over the chunks on the device, a `[chunk * batch, d]` forward pass each (the
    likelihood in blocks of about 5,000 rows), and keeps a running max-shifted
    log-sum-exp in float64: the result is the exact L_k of all k draws while peak memory
    depends on `chunk_size * batch_size`, not on k. Batches are dispatched back to back;
    the results are read to the host once, at the end. On a CPU the decoder's matmuls run
    as TensorFlow (oneDNN) ops between XLA programs for the draws and the log-probs
    (`decoder_matmuls`).

    Args:
      model: an `IWAE`.
      x_or_dataset: array `[N, input_dim]` or a `tf.data.Dataset` of such batches,
        float (see `IWAE.check_inputs`; checked eagerly before the compiled programs
        run: for a Bernoulli model a pixel outside [0, 1] is refused with an
        InvalidArgumentError naming the smallest and largest value; grey levels in
        [0, 1] are scored with the continuous relaxation).
      num_samples: k.
      chunk_size: samples per chunk (any size; need not divide k). Default keeps
        chunk * batch near 50,000 rows.
      batch_size: images per batch when given an array.
      seed: int or `[2]` seed.
      return_log_weights: also return all log weights `[k, N]` (float64 on the host,
        memory O(k N); each batch's are read while the next batch runs).
      decoder_matmuls: `auto` (default), `xla` or `tensorflow`: where the decoder's
        matmuls run (`decoder_matmuls_for`); the same draws either way, and L_k agrees to
        float32 rounding.
      progress: None, or a callable `progress(images_done, batch_estimates)` called
        after each batch is dispatched, with the number of images dispatched so far and
        that batch's L_k `[b]` float64 Tensor (reading it waits for the batch; the
        estimator itself reads nothing before the end).

    Returns:
      float64 NumPy array `[N]` of L_k in nats (and the log weights if asked).

    Raises:
      ArgumentError: a bad `num_samples`, `chunk_size`, `seed`, `decoder_matmuls` or
        `progress` (named in the message).
    """
    plan = _plan(model, x_or_dataset, num_samples, chunk_size, batch_size, seed,
                 decoder_matmuls, return_log_weights, progress)
    est, log_weights = _run_batches(plan, model, x_or_dataset, batch_size, progress)
    return (est, log_weights) if return_log_weights else est


class _Plan(typing.NamedTuple):
    """How `estimate_log_likelihood` runs its batches: the compiled per-batch estimator
    `fn` (`_compiled_estimator`), the `[2]` seed, k, the samples per chunk, the number of
    full chunks (an int32 Tensor: one trace serves every k with the same chunk and
    remainder; an int when the log weights are kept, as their TensorArray's size must be
    static) and whether the log weights are kept."""
    fn: typing.Callable
    seed: tf.Tensor
    k: int
    chunk: int
    num_full: typing.Union[int, tf.Tensor]
    keep: bool


def _plan(model, x_or_dataset, num_samples, chunk_size, batch_size, seed, decoder_matmuls,
          keep, progress):
    """Checks `estimate_log_likelihood`'s arguments (ArgumentError naming the one at
    fault) and builds the model if needed; returns its `_Plan`."""
    latent_model.check_model(model, "estimate_log_likelihood")
    if not isinstance(x_or_dataset, tf.data.Dataset):
        latent_model.ensure_built(model, np.asarray(x_or_dataset[:1], np.float32))
    k = objectives.check_num_samples(num_samples)
    chunk = default_chunk_size(k, batch_size) if chunk_size is None else \
        objectives.check_num_samples(chunk_size, "chunk_size")
    chunk = min(chunk, k)
    base = seeds.stateless_seed(seed)
    if base is None:
        raise errors.ArgumentError("estimate_log_likelihood: `seed=` must be an int or a [2] "
                                   "int Tensor (the chunks' draws are fold_in(seed, j)), got "
                                   "None.")
    fn = _compiled_estimator(model, decoder_matmuls_for(model, decoder_matmuls))
    num_full = k // chunk if keep else tf.constant(k // chunk, tf.int32)
    if progress is not None and not callable(progress):
        raise errors.ArgumentError(f"estimate_log_likelihood: `progress=` must be None or a "
                                   f"callable progress(images_done, batch_estimates), got "
                                   f"{progress!r}.")
    return _Plan(fn, base, k, chunk, num_full, bool(keep))


def _run_batches(plan, model, x_or_dataset, batch_size, progress):
    """Dispatches the batches to `plan.fn` back to back (`progress` after each one).

    Returns L_k float64 `[N]` (nats, read to the host once, at the end) and, when
    `plan.keep`, the log weights float64 `[k, N]` (each batch's read while the next one
    runs), else None.
    """
    results, host_lw, pending, done = [], [], None, 0
    for x in _batches(x_or_dataset, batch_size,
                      lambda t: latent_model.checked_inputs(model, t)):
        out = plan.fn(x, plan.seed, plan.num_full, plan.chunk, plan.k % plan.chunk, plan.keep)
        if plan.keep:
            out, lw = out
            if pending is not None:  # the previous batch's weights, this batch in flight
                host_lw.append(pending.numpy().astype(np.float64))
            pending = lw
        results.append(out)
        if progress is not None:
            done += int(x.shape[0])  # eager batches: the shape is known
            progress(done, out)
    if pending is not None:
        host_lw.append(pending.numpy().astype(np.float64))
    est = tf.concat(results, axis=0).numpy() if results else np.zeros([0])
    if not plan.keep:
        return est, None
    return est, (np.concatenate(host_lw, axis=1) if host_lw else np.zeros([plan.k, 0]))


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
        raise errors.ArgumentError(f"`log_weights=`: expected shape [num_samples, N], got "
                                   f"{lw.shape}.")
    total = lw.shape[0]
    out = []
    for k in ks:
        if int(k) != k or not 1 <= k <= total:
            raise errors.ArgumentError(f"`ks=`: each k must be an integer in [1, {total}], "
                                       f"got {k!r}.")
        k = int(k)
        blocks = lw[:(total // k) * k].reshape(total // k, k, -1)
        out.append(_log_sum_exp(blocks, axis=1).mean(axis=0) - math.log(k))
    return np.stack(out)


def estimate_bound_curve(model, x, ks, *, seed=0, batch_size=100, chunk_size=None):
    """Block-averaged L_k `[len(ks), N]` (nats) for a model, from max(ks) draws per image.

    One streamed pass of `estimate_log_likelihood` with k = max(ks) keeps the log
    weights (memory O(max(ks) * N) on the host); `bound_curve` then gives every k.
    """
    given = ks
    try:
        ks = [int(k) for k in ks]
    except (TypeError, ValueError):
        ks = None
    if not ks or sorted(ks) != ks:
        raise errors.ArgumentError(f"`ks=`: expected a non-empty increasing list of "
                                   f"integers, got {given!r}.")
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
      model: an `IWAE`, or any model with `posterior_parameters(x, seed)` (a list of
        `(mean, stddev)` per stochastic layer; `tfp_iwae.LatentVariableModel` has it).
      x: `[N, *event_shape]` images as the model sees them: for a model trained on binarised
        pixels, binary images (`tfp_iwae.data.active_units_images` gives the first 500
        training images binarised once with a recorded seed), not grey levels.
      threshold: variance above which a unit is active (paper: 1e-2).
      seed: int or `[2]` seed of the h1 samples (2 layers).
      batch_size: images per encoder call.

    Returns:
      dict with `counts` (list, one int per layer) and `statistics` (list of float64
      arrays `[units]`, the per-unit variance of the posterior mean).
    """
    latent_model.check_model(model, "active_units", ("posterior_parameters",))
    x = np.asarray(x, np.float32)
    latent_model.ensure_built(model, x[:1])
    layers = getattr(model, "stochastic_layers", 1)
    means = None
    base = seeds.stateless_seed(seed)
    for b, start in enumerate(range(0, len(x), batch_size)):
        xb = tf.constant(x[start:start + batch_size])
        h1_seed = seeds.fold_in(base, b) if layers > 1 else None
        params = model.posterior_parameters(xb, seed=h1_seed)
        means = means or [[] for _ in params]
        for m, (loc, _) in zip(means, params):
            m.append(np.reshape(loc.numpy(), [len(xb), -1]))  # units of any latent shape
    stats = [np.var(np.concatenate(m).astype(np.float64), axis=0) for m in means]
    return {"counts": [int(np.sum(s > threshold)) for s in stats], "statistics": stats}


def result_name(split, num_samples, first=None):
    """The stem of an evaluation's result files (`evaluate_run`): `eval_<split>_k<k>`, or
    `eval_<split>_k<k>_first<n>` for an evaluation of only the first n images of the
    split (so that it never replaces one of the whole split)."""
    return f"eval_{split}_k{int(num_samples)}" + (f"_first{int(first)}" if first else "")


# Images per batch of a validation's L_k estimates: small enough that a stop signal is
# answered between batches within about a second, even at k = 5000.
VALIDATION_BATCH = 25


class _Stopped(Exception):
    """Raised between a validation's batches when its `should_stop()` is true."""


def validate(model, images, num_samples, eval_samples, *, binarization, seed, pictures=True,
             should_stop=None):
    """A training run's validation at one step: the numbers behind its summaries and log.

    The images are presented as `data.evaluation_pixels` gives them (binarised once with
    seed 1234 unless `binarization` is `none`); every draw is seeded by `seed` (the step).

    Args:
      model: an `IWAE`.
      images: `[N, input_dim]` validation intensities.
      num_samples: k of the training objective (L_k, ELBO and ESS are at this k).
      eval_samples: k of the log-likelihood estimate (L_5000 in the paper).
      binarization: the run's `binarization` (`data.BINARIZATIONS`).
      seed: int seed of the importance samples.
      pictures: also draw 16 samples and reconstruct 16 images spread over the set.
      should_stop: None, or a callable checked between batches of `VALIDATION_BATCH`
        images: when it returns True the validation is abandoned (returns None).

    Returns:
      dict with `l_k` and `log_likelihood` (mean L_k and L_eval_samples, nats),
      `bits_per_dim` (of L_eval_samples), `active_units` (counts per layer), `elbo` and
      `ess` (means over the first `memory.VALIDATION_IMAGES` images), their `log_weights`
      `[k, n]`, `num_images`, and with `pictures` `inputs`, `reconstructions` and
      `samples` (16 images each; else None). None if `should_stop` stopped it.
    """
    def check(*_):
        if should_stop is not None and should_stop():
            raise _Stopped

    xb = data.evaluation_pixels(images, binarization, 1234)
    try:
        lk = estimate_log_likelihood(model, xb, num_samples, seed=seed,
                                     batch_size=VALIDATION_BATCH, progress=check)
        l_eval = estimate_log_likelihood(model, xb, eval_samples, seed=seed,
                                         batch_size=VALIDATION_BATCH, progress=check)
        check()
    except _Stopped:
        return None
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
    """How `validate` presents the images for a run's `binarization` (a log label)."""
    return ("not binarised (intensities)" if binarization == "none" else
            "fixed-binarised")
