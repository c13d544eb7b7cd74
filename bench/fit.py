"""Benchmark: Keras `fit` beside `make_train_step` and the fused loop, in one run.

    python bench/fit.py                        # 1-layer paper model, batch 20/100, k 5/50
    python bench/fit.py --layers 2 --seconds 6

For each (batch, k) it times, on the paper's 1-layer IWAE and the same random binary
images, examples/s of: `model.fit` (compile(estimator="iwae", num_samples=k,
steps_per_execution=S), one epoch over an in-memory tf.data pipeline per window),
`make_train_step` called once per step (a fixed batch: no pipeline), and
`fused_loop.TrainLoop` (many steps per compiled call, images on the device). The three are
timed in turn, median of 3 windows each, so that drift in the machine's speed hits all
alike; the ratio fit / make_train_step is the figure to read (issue #27 asks >= 0.9).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfp_iwae  # noqa: E402
from tfp_iwae import schedule  # noqa: E402

from train_step import build_fused, build_step, fused_rate, rate_of  # noqa: E402


def fit_rate(model, images, batch, seconds):
    """Examples/s of `model.fit` epochs over `images` (compiled already)."""
    ds = tf.data.Dataset.from_tensor_slices(images).batch(batch, drop_remainder=True)
    steps = len(images) // batch
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 1:
        model.fit(ds, epochs=1, verbose=0)
        n += 1
    return batch * steps * n / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--cells", default="20:5,100:5,20:50,100:50",
                   help="batch:k pairs, comma-separated")
    p.add_argument("--seconds", type=float, default=4., help="per window")
    p.add_argument("--steps_per_execution", type=int, default=50)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    print(f"fit vs make_train_step vs fused loop; {args.layers} stochastic layer(s); "
          f"median of 3 alternating windows of {args.seconds:g} s; CPU cores "
          f"{os.cpu_count()}")
    print("| batch | k | fit ex/s | make_train_step ex/s | fused ex/s | fit / step | "
          "fit / fused |")
    print("|---|---|---|---|---|---|---|")
    for cell in args.cells.split(","):
        batch, k = (int(v) for v in cell.split(":"))
        images = (rng.random([batch * 200, 784]) < 0.3).astype(np.float32)
        fit_model = tfp_iwae.IWAE(args.layers, seed=0)
        fit_model.compile(optimizer=schedule.make_optimizer(), estimator="iwae",
                          num_samples=k, steps_per_execution=args.steps_per_execution)
        fit_rate(fit_model, images[:batch * args.steps_per_execution], batch, 0.)  # compile
        step = build_step(tfp_iwae.IWAE(args.layers, seed=0), k, "iwae", batch)
        fused = build_fused(tfp_iwae.IWAE(args.layers, seed=0), k, "iwae", batch, 100,
                            images)
        rates = {"fit": [], "step": [], "fused": []}
        for _ in range(3):
            rates["fit"].append(fit_rate(fit_model, images, batch, args.seconds))
            rates["step"].append(rate_of(step, batch, args.seconds))
            rates["fused"].append(fused_rate(fused, batch, args.seconds))
        med = {name: float(np.median(r)) for name, r in rates.items()}
        print(f"| {batch} | {k} | {med['fit']:,.0f} | {med['step']:,.0f} | "
              f"{med['fused']:,.0f} | {med['fit'] / med['step']:.2f} | "
              f"{med['fit'] / med['fused']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
