"""Benchmark: examples/second of the compiled training step, and its share of the roofline.

    python bench/train_step.py                       # 1-layer model, k = 1, 5, 50, IWAE
    python bench/train_step.py --layers 1,2 --estimators iwae,stl,dreg,rws,miwae,ciwae,piwae

The roofline is what the step's matrix multiplies alone would cost at the single-precision
GEMM rate measured in the same run (the best of NumPy's and TensorFlow's matmul, at the
step's own largest GEMM shape): share = (matmul FLOPs of the step / sgemm rate) / step time.
Matmul FLOPs count 2 per multiply-add forward and 4 backward (input and weight
gradients), except the encoder's first layer, which needs no input gradient.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfp_iwae  # noqa: E402
from tfp_iwae import estimators, fused_loop, schedule  # noqa: E402
from tfp_iwae import step as step_lib  # noqa: E402


def sgemm_rate(m, k, n, seconds=1.0):
    """Best of NumPy and TF float32 GEMM FLOP/s at shape [m, k] x [k, n]."""
    rng = np.random.RandomState(0)
    a = rng.rand(m, k).astype(np.float32)
    b = rng.rand(k, n).astype(np.float32)
    rates = {}

    def measure(fn):
        fn()
        best = 0.
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            fn()
            best = max(best, 2. * m * k * n / (time.perf_counter() - t0))
        return best

    rates["numpy"] = measure(lambda: a @ b)
    ta, tb = tf.Variable(a), tf.Variable(b)
    mm = tf.function(lambda: tf.reduce_sum(tf.matmul(ta, tb)))
    rates["tensorflow"] = measure(lambda: mm().numpy())
    return rates


def dense_chain(sizes):
    return list(zip(sizes[:-1], sizes[1:]))


def dense_layers(model, batch, k, encoder_per_sample=False):
    """(rows, multiply-adds per row) of every dense matmul of one pass over `batch` images
    with k samples each, encoder first, from the model's architecture (`input_dim`,
    `latent_units`, `hidden_units`; the decoder mirrors the encoder's hidden sizes):
    q(h1|x) runs on the batch rows, every later layer on batch * k rows. The first entry
    is the encoder's input layer. encoder_per_sample: q(h1|x) on batch * k rows too, as
    an implementation that repeats each image k times before encoding it would run it."""
    out = []
    for i in range(model.stochastic_layers):  # q(h1|x) once per image, q(h2|h1) per sample
        rows = batch if i == 0 and not encoder_per_sample else batch * k
        d_in = model.input_dim if i == 0 else model.latent_units[0]
        sizes = [d_in] + list(model.hidden_units[i])
        out += [(rows, a * b) for a, b in dense_chain(sizes)] + \
            [(rows, 2 * sizes[-1] * model.latent_units[i])]
    # p(x|h1) (one output per pixel) and, for 2 layers, p(h1|h2) (loc and std per unit).
    decoders = [(model.latent_units[0], model.hidden_units[0], model.input_dim)]
    if model.stochastic_layers == 2:
        decoders.append((model.latent_units[1], model.hidden_units[1],
                         2 * model.latent_units[0]))
    for d_in, hidden, units in decoders:
        sizes = [d_in] + list(hidden[::-1]) + [units]
        out += [(batch * k, a * b) for a, b in dense_chain(sizes)]
    return out


def step_matmul_flops(model, batch, k):
    """Matmul FLOPs of one training step (forward + backward)."""
    return float(sum(rows * mac * (4 if i == 0 else 6)
                     for i, (rows, mac) in enumerate(dense_layers(model, batch, k))))


def forward_matmul_flops(model, batch, k, encoder_per_sample=False):
    """Matmul FLOPs of one forward pass (2 per multiply-add): e.g. L_k of `batch` images
    (encoder_per_sample: q(h1|x) counted on all k * batch rows, see `dense_layers`)."""
    return float(sum(2 * rows * mac for rows, mac in
                     dense_layers(model, batch, k, encoder_per_sample)))


def build_step(model, k, estimator, batch):
    """(compiled step, x, seed) ready to time."""
    opt = schedule.make_optimizer()
    step = step_lib.make_train_step(model, opt, k, estimator=estimator)
    x = tf.cast(tf.random.stateless_uniform([batch, model.input_dim], [0, 1]) < 0.3,
                tf.float32)
    seed = tf.constant([1, 2], tf.int32)
    for _ in range(3):
        step(x, seed)["loss"].numpy()
    return step, x, seed


def rate_of(built, batch, seconds):
    """Examples/s of one timing window."""
    step, x, seed = built
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        out = step(x, seed)
        n += 1
    out["loss"].numpy()
    return batch * n / (time.perf_counter() - t0)


def time_step(model, k, estimator, batch, seconds):
    """Examples/s of the compiled step (median of 3 windows)."""
    built = build_step(model, k, estimator, batch)
    return float(np.median([rate_of(built, batch, seconds / 3) for _ in range(3)]))


def build_fused(model, k, estimator, batch, steps_per_call, images):
    """A `fused_loop.TrainLoop` of `steps_per_call` steps per call on `images`, compiled."""
    loop = fused_loop.TrainLoop(model, schedule.make_optimizer(), k, images,
                                batch_size=batch, seed=0, estimator=estimator,
                                max_steps_per_call=steps_per_call)
    loop(0, steps_per_call)["steps"].numpy()  # compile
    return loop


def fused_rate(loop, batch, seconds, min_calls=2):
    """Examples/s of back-to-back fused calls (`loop.max_steps_per_call` steps each), at
    least `min_calls` of them."""
    n, s, t0 = 0, loop.max_steps_per_call, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < min_calls:
        out = loop(s, loop.max_steps_per_call)
        s += loop.max_steps_per_call
        n += 1
    out["steps"].numpy()
    return batch * n * loop.max_steps_per_call / (time.perf_counter() - t0)


def launcher_rate(layers, k, batch, steps, logdir, dataset="mnist_5k", data_dir=None):
    """Examples/s of the whole training loop behind `launch/train.py` at its defaults
    (progress lines and summaries every 100 steps, a checkpoint every 500; validation off),
    between its first and last progress lines, so compilation is not counted."""
    from tfp_iwae import trainer
    marks = []

    def log(line):
        if line.startswith("step "):
            marks.append((int(line.split()[1].split("/")[0]), time.perf_counter()))

    config = trainer.RunConfig(dataset=dataset, data_dir=data_dir, stochastic_layers=layers,
                               num_samples=k, batch_size=batch, schedule="constant",
                               epochs=10 ** 6, max_steps=steps, eval_every=0, logdir=logdir)
    trainer.train(config, log=log)
    (s0, t0), (s1, t1) = marks[0], marks[-1]
    return batch * (s1 - s0) / (t1 - t0)


def estimator_name(name, k):
    """A bare table name gets parameters that fit k (estimators.example_name: miwae at
    k=50 -> miwae(5,10), ciwae -> ciwae(0.05)); a full name is used as it is."""
    if name in estimators.ESTIMATORS:
        return estimators.example_name(name, k)
    return name


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", default="1", help="comma list of stochastic layers")
    p.add_argument("--ks", default="1,5,50", help="comma list of k")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--estimators", default="iwae", help="comma list (miwae/piwae use "
                   "M=5, K=10 at k=50; ciwae beta=0.05)")
    p.add_argument("--seconds", type=float, default=3.0, help="timing per cell, split into "
                   "--rounds interleaved windows (median reported)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--mixed_precision", action="store_true",
                   help="time the mixed_bfloat16 model instead of float32")
    args = p.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    names = args.estimators.split(",")
    rates = sgemm_rate(args.batch * max(ks), 200, 784)
    rate, np_rate = max(rates.values()), rates["numpy"]
    print(f"sgemm at [{args.batch * max(ks)}x200]x[200x784]: numpy "
          f"{rates['numpy'] / 1e9:.0f} GFLOP/s, tensorflow {rates['tensorflow'] / 1e9:.0f}"
          f" GFLOP/s; 'roofline' uses the faster, 'share np' NumPy's")
    header = f"{'layers':>6} {'k':>4} {'estimator':>12} {'ex/s':>9} {'roofline ex/s':>13} " \
             f"{'share':>6} {'share np':>8} {'x iwae time':>11}"
    print(header)
    for layers in [int(s) for s in args.layers.split(",")]:
        for k in ks:
            ests = [estimator_name(name, k) for name in names]
            policy = "mixed_bfloat16" if args.mixed_precision else None
            model = tfp_iwae.IWAE(layers)
            built = {e: build_step(tfp_iwae.IWAE(layers, dtype_policy=policy), k, e,
                                   args.batch) for e in ests}
            rates = {e: [] for e in ests}
            for _ in range(args.rounds):  # interleaved, so drift hits every estimator alike
                for e in ests:
                    rates[e].append(rate_of(built[e], args.batch, args.seconds / args.rounds))
            flops_per_ex = step_matmul_flops(model, args.batch, k) / args.batch
            roof = rate / flops_per_ex
            roof_np = np_rate / flops_per_ex
            base = float(np.median(rates[ests[0]]))
            for e in ests:
                eps = float(np.median(rates[e]))
                print(f"{layers:>6} {k:>4} {e:>12} {eps:9.0f} {roof:13.0f} "
                      f"{eps / roof:6.1%} {eps / roof_np:8.1%} {base / eps:11.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
