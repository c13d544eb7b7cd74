"""Memory-bounded L_k, active units and bits/dim, checked against NumPy."""

import gc
import math
import os
import sys
import weakref

import numpy as np
import pytest
import tensorflow as tf

import tfp_iwae
from tfp_iwae import evaluation, seeds

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


@pytest.fixture(scope="module")
def model_and_x(mnist_5k):
    train, test = mnist_5k
    model = tfp_iwae.IWAE(1, data_mean=train.mean(0), seed=0)
    x = (test[:30] > 0.5).astype(np.float32)
    return model, x


@pytest.mark.parametrize("chunk", [1, 7, 64, 100, 250])
def test_chunked_estimate_is_the_exact_log_mean_exp_of_its_draws(model_and_x, chunk):
    # Running max-shifted log-add-exp over chunks == float64 log-mean-exp of all k draws,
    # for chunk sizes that do and do not divide k.
    model, x = model_and_x
    k = 250
    est, lw = evaluation.estimate_log_likelihood(model, x, k, chunk_size=chunk, batch_size=16,
                                                 seed=3, return_log_weights=True)
    assert lw.shape == (k, len(x))
    m = lw.max(0)
    ref = m + np.log(np.mean(np.exp(lw - m), axis=0))
    np.testing.assert_allclose(est, ref, rtol=0, atol=1e-9)


def test_progress_sees_every_batch_and_its_estimates(model_and_x):
    # progress(images_done, batch_estimates) after each batch: 30 images in batches of
    # 16 -> counts 16, 30, and the batches' estimates, concatenated, are the result.
    model, x = model_and_x
    calls = []
    est = evaluation.estimate_log_likelihood(
        model, x, 20, batch_size=16, seed=2,
        progress=lambda done, b: calls.append((done, b.numpy())))
    assert [done for done, _ in calls] == [16, 30]
    np.testing.assert_array_equal(np.concatenate([b for _, b in calls]), est)
    with pytest.raises(tfp_iwae.ArgumentError, match=r"`progress=` must be None or a "
                                                     r"callable"):
        evaluation.estimate_log_likelihood(model, x, 20, progress="every 10 s")


@pytest.mark.parametrize("matmuls", ["xla", "tensorflow"])
def test_chunk_j_draws_with_fold_in_seed_j(model_and_x, matmuls):
    # The compiled loop draws chunk j with fold_in(seed, j), the last (partial) chunk
    # included: the same log weights as one jitted call per chunk (the evaluation before
    # the loop moved onto the device), to float32 rounding (XLA fuses the loop body
    # differently; `tensorflow` runs the decoder's GEMMs in another library). XLA's
    # stateless draws differ from eager ones, so the reference is jitted.
    model, x = model_and_x
    _, lw = evaluation.estimate_log_likelihood(model, x[:5], 25, chunk_size=10, seed=6,
                                               return_log_weights=True,
                                               decoder_matmuls=matmuls)
    chunk_log_weights = tf.function(model.log_weights, jit_compile=True)
    base = seeds.stateless_seed(6)
    ref = np.concatenate([chunk_log_weights(x[:5], n, seed=seeds.fold_in(base, j))
                          for j, n in enumerate([10, 10, 5])])
    if matmuls == "xla":
        np.testing.assert_allclose(lw, ref, rtol=1e-6)
    else:  # oneDNN's GEMMs round differently: the tolerance of the cross-program test
        np.testing.assert_allclose(lw, ref, rtol=0, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("layers", [1, 2])
def test_likelihood_blocks_change_no_draw(mnist_5k, layers):
    # A chunk's k samples are drawn at once; p(x|z) then runs `likelihood_block` samples
    # at a time (the k mod block left over in one more call). The log weights are those
    # of the unblocked call (same draws) to float32 rounding, for one and two stochastic
    # layers (z a structure {h1, h2}), with and without a remainder; the estimator runs a
    # chunk of 60 samples of a 100-image batch in blocks of 50 and a rest of 10 (5,000
    # rows at most) and gives the unblocked chunk's L_k.
    train, test = mnist_5k
    model = tfp_iwae.IWAE(layers, data_mean=train.mean(0), seed=0)
    x = (test[:100] > 0.5).astype(np.float32)
    assert evaluation.likelihood_block_size(60, 100) == 50
    assert evaluation.likelihood_block_size(7, 100) == 7
    assert evaluation.likelihood_block_size(500, 10_000) == 1
    fn = tf.function(model.log_weights, jit_compile=True)
    seed = seeds.fold_in(seeds.stateless_seed(4), 0)
    whole = fn(x, 60, seed=seed).numpy()
    for block in (6, 25):  # 10 blocks; 2 blocks and a rest of 10
        blocked = fn(x, 60, seed=seed, likelihood_block=block).numpy()
        np.testing.assert_allclose(blocked, whole, rtol=1e-6)
    est = evaluation.estimate_log_likelihood(model, x, 60, chunk_size=60, seed=4)
    m = whole.astype(np.float64).max(0)
    ref = m + np.log(np.mean(np.exp(whole - m), axis=0))
    np.testing.assert_allclose(est, ref, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="likelihood_block"):
        model.log_weights(x[:2], 10, seed=1, likelihood_block=0)


@pytest.mark.parametrize("matmuls", ["xla", "tensorflow"])
def test_compiled_once_per_shape_across_calls_seeds_and_k(model_and_x, matmuls):
    # One trace per batch shape (25 images in batches of 10: 10 and the last 5), reused by
    # later calls with another seed and another k with the same chunk remainder. The
    # model's methods run in Python only while a program is traced (`log_weights` in the
    # XLA program, `encoder` in the split one's draws): counting their calls counts the
    # traces.
    _, x = model_and_x
    model = tfp_iwae.IWAE(1, seed=0)
    traced = []
    for method in ("log_weights", "encoder"):
        def counted(x, *args, _real=getattr(model, method), **kwargs):
            traced.append(x.shape[0])
            return _real(x, *args, **kwargs)
        setattr(model, method, counted)
    kw = dict(chunk_size=20, batch_size=10, decoder_matmuls=matmuls)
    first = evaluation.estimate_log_likelihood(model, x[:25], 60, seed=5, **kw)
    shapes = sorted(set(traced))
    assert shapes == [5, 10], traced
    count = len(traced)
    again = evaluation.estimate_log_likelihood(model, x[:25], 60, seed=5, **kw)
    other = evaluation.estimate_log_likelihood(model, x[:25], 100, seed=[7, 8], **kw)
    assert len(traced) == count, traced  # no new trace
    np.testing.assert_array_equal(first, again)
    assert other.shape == (25,) and not np.allclose(first, other)


@pytest.mark.slow
@pytest.mark.parametrize("layers", [1, 2])
def test_decoder_matmuls_in_tensorflow_or_xla_give_the_same_estimate(mnist_5k, layers):
    # Same draws, the decoder's GEMMs in oneDNN (TensorFlow ops) or in XLA: L_k and every
    # log weight agree to float32 rounding of ~500-nat sums (1e-3 nats), for 1 and 2
    # stochastic layers, blocks with a remainder (chunk 70 of a 100-image batch: blocks of
    # 50 and a rest of 20) and a last partial chunk (k = 150); another seed moves L_k by
    # far more (different draws), so the agreement is not that of any two estimates.
    train, test = mnist_5k
    model = tfp_iwae.IWAE(layers, data_mean=train.mean(0), seed=0)
    x = (test[:100] > 0.5).astype(np.float32)
    kw = dict(chunk_size=70, seed=2, return_log_weights=True)
    xla, lw_xla = evaluation.estimate_log_likelihood(model, x, 150, decoder_matmuls="xla",
                                                     **kw)
    tfm, lw_tf = evaluation.estimate_log_likelihood(model, x, 150,
                                                    decoder_matmuls="tensorflow", **kw)
    np.testing.assert_allclose(tfm, xla, rtol=0, atol=1e-3)
    np.testing.assert_allclose(lw_tf, lw_xla, rtol=0, atol=1e-3)
    other = evaluation.estimate_log_likelihood(model, x, 150, chunk_size=70, seed=3)
    assert np.abs(other - xla).max() > 1e-2
    on_cpu = not tf.config.list_logical_devices("GPU")
    assert evaluation.decoder_matmuls_for(model) == ("tensorflow" if on_cpu else "xla")


@pytest.mark.slow
def test_split_program_takes_float64_dataset_batches(model_and_x):
    # A Dataset may yield float64 batches: both programs cast them as `check_inputs` does
    # (the split one used to hand them uncast to the log-prob program and fail).
    model, x = model_and_x
    ds = tf.data.Dataset.from_tensor_slices(x[:10].astype(np.float64)).batch(5)
    ref = evaluation.estimate_log_likelihood(model, x[:10], 20, seed=1, batch_size=5,
                                             decoder_matmuls="xla")
    for matmuls in ("xla", "tensorflow"):
        est = evaluation.estimate_log_likelihood(model, ds, 20, seed=1,
                                                 decoder_matmuls=matmuls)
        np.testing.assert_allclose(est, ref, rtol=0, atol=1e-3)


def test_decoder_matmuls_choices():
    gaussian = tfp_iwae.IWAE(1, likelihood="gaussian", seed=0)
    assert evaluation.decoder_matmuls_for(gaussian) == "xla"  # no split for its decoder
    with pytest.raises(tfp_iwae.ArgumentError, match="decoder_matmuls='tensorflow'.*Bernoulli"):
        evaluation.decoder_matmuls_for(gaussian, "tensorflow")
    with pytest.raises(tfp_iwae.ArgumentError, match="`decoder_matmuls=` must be one of"):
        evaluation.estimate_log_likelihood(gaussian, np.zeros([2, 784], np.float32), 3,
                                           decoder_matmuls="onednn")


@pytest.mark.parametrize("matmuls", ["xla", "tensorflow"])
def test_compiled_estimator_goes_with_its_model(model_and_x, matmuls):
    _, x = model_and_x
    model = tfp_iwae.IWAE(1, seed=0)
    evaluation.estimate_log_likelihood(model, x[:3], 4, seed=0, decoder_matmuls=matmuls)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None  # the per-model cache holds neither the model nor its function


def test_chunk_sizes_agree_within_monte_carlo_error(model_and_x):
    model, x = model_and_x
    a = evaluation.estimate_log_likelihood(model, x, 500, chunk_size=500, seed=1)
    b = evaluation.estimate_log_likelihood(model, x, 500, chunk_size=33, seed=2)
    # different draws, same estimator: L_500 of an untrained model varies by ~1 nat/image
    assert abs(a.mean() - b.mean()) < 2.


def test_k_5000_in_small_chunks_is_finite_and_at_least_L_50(model_and_x):
    model, x = model_and_x
    est = evaluation.estimate_log_likelihood(model, x[:4], 5000, chunk_size=50, seed=0)
    assert est.shape == (4,) and np.all(np.isfinite(est))
    l50 = evaluation.estimate_log_likelihood(model, x[:4], 50, seed=0)
    assert np.mean(est) > np.mean(l50) - 1.  # L_5000 >= L_50 on average


@pytest.mark.slow
def test_peak_memory_depends_on_the_chunk_not_on_k():
    # Peak resident memory (VmHWM of a fresh process, via bench/evaluate.py) of L_k over 25
    # images: k = 50 and k = 5000 in chunks of 50 peak alike, while one chunk of 20,000
    # samples (its draws z and their noise, [20000, 25, 50] float32 = 100 MB each, are
    # drawn at once; the likelihood runs in blocks) shows the measurement sees the growth
    # an unchunked evaluation would have (~480 MiB here).
    sys.path.insert(0, BENCH)
    from evaluate import measure
    small, large, whole = (measure(25, k, chunk)["peak_rss_mib"]
                           for k, chunk in ((50, 50), (5000, 50), (20000, 20000)))
    assert large - small < 48, (small, large)
    assert whole - small > 150, (small, whole)


def test_roofline_flops_count_the_encoder_once_per_image():
    # bench's forward-matmul count for L_k of N images, 1 layer (784-200-200-2x50 encoder,
    # 50-200-200-784 decoder): 2 FLOPs per multiply-add, the decoder on k * N rows, the
    # encoder on N rows; encoding each image k times puts the encoder on k * N rows too.
    sys.path.insert(0, BENCH)
    from train_step import forward_matmul_flops
    encoder = 784 * 200 + 200 * 200 + 200 * 100
    decoder = 50 * 200 + 200 * 200 + 200 * 784
    n, k = 10_000, 5000
    model = tfp_iwae.IWAE(1)
    assert forward_matmul_flops(model, n, k) == 2 * (n * encoder + n * k * decoder)
    assert forward_matmul_flops(model, n, k, encoder_per_sample=True) == \
        2 * n * k * (encoder + decoder)  # 42.4 TFLOP against 20.7


def test_active_units_statistic_matches_numpy(model_and_x):
    model, x = model_and_x
    au = evaluation.active_units(model, x, threshold=1e-2)
    loc, _ = model.q_layers[0].parameters_for(tf.constant(x))
    var = np.var(loc.numpy().astype(np.float64), axis=0)
    np.testing.assert_allclose(au["statistics"][0], var, rtol=1e-6)
    assert au["counts"] == [int(np.sum(var > 1e-2))]
    two = evaluation.active_units(tfp_iwae.IWAE(2, seed=1), x)
    assert len(two["counts"]) == 2 and two["statistics"][1].shape == (50,)


def test_bits_per_dim():
    assert evaluation.bits_per_dim(784 * math.log(2.)) == pytest.approx(1.)
    assert evaluation.bits_per_dim(84.78) == pytest.approx(84.78 / (784 * math.log(2)))


def test_bound_curve_is_the_block_average_of_log_mean_exp():
    # L_k from K draws = mean over floor(K/k) disjoint blocks of log (1/k) sum_block w;
    # k = K is the plain L_K, k = 1 the mean log weight (the ELBO estimate).
    rng = np.random.RandomState(0)
    lw = rng.randn(30, 4) * 5. - 100.
    curve = evaluation.bound_curve(lw, [1, 4, 7, 30])
    assert curve.shape == (4, 4)
    np.testing.assert_allclose(curve[0], lw.mean(0), atol=1e-12)
    for row, k in zip(curve[1:], [4, 7, 30]):
        blocks = [lw[i * k:(i + 1) * k] for i in range(30 // k)]  # 7: last 2 draws unused
        ref = np.mean([np.log(np.mean(np.exp(b + 100.), 0)) - 100. for b in blocks], 0)
        np.testing.assert_allclose(row, ref, atol=1e-9)
    with pytest.raises(tfp_iwae.ArgumentError, match="`ks=`: each k must be an integer in"):
        evaluation.bound_curve(lw, [31])
    with pytest.raises(tfp_iwae.ArgumentError, match="`log_weights=`: expected shape"):
        evaluation.bound_curve(lw[0], [1])


def test_estimate_bound_curve_ends_at_the_streamed_estimate(model_and_x):
    model, x = model_and_x
    curve = evaluation.estimate_bound_curve(model, x[:8], [1, 10, 100], seed=4, chunk_size=30)
    direct = evaluation.estimate_log_likelihood(model, x[:8], 100, chunk_size=30, seed=4)
    np.testing.assert_allclose(curve[-1], direct, atol=1e-9)
    with pytest.raises(tfp_iwae.ArgumentError, match="`ks=`: expected a non-empty "
                                                     "increasing list"):
        evaluation.estimate_bound_curve(model, x[:8], [10, 1])
