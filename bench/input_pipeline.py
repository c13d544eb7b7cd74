"""Benchmark: input-pipeline examples/s next to the training step's, at batch 100.

    python bench/input_pipeline.py [--dataset=fashion_mnist --data_dir=/usr/share/datasets/fashion-mnist]

The pipeline must never be the bottleneck: the ratio should be >= 10 at every k.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tfp_iwae  # noqa: E402
from tfp_iwae import data  # noqa: E402
import train_step  # noqa: E402


def pipeline_rate(ds, batches):
    it = iter(ds)
    for _ in range(20):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        b = next(it)
    b.numpy()
    return batches * int(b.shape[0]) / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="mnist_5k")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--ks", default="1,5,50")
    args = p.parse_args()
    ds = data.load(args.dataset, "train", batch_size=args.batch, data_dir=args.data_dir)
    rate = pipeline_rate(ds, 3000)
    print(f"{data.describe(args.dataset, 'dynamic')}: pipeline {rate:.0f} ex/s at batch "
          f"{args.batch}")
    for k in [int(k) for k in args.ks.split(",")]:
        step = train_step.time_step(tfp_iwae.IWAE(1), k, "iwae", args.batch, 2.0)
        print(f"k={k:>3}: train step {step:8.0f} ex/s; pipeline / step = {rate / step:6.1f}x")


if __name__ == "__main__":
    main()
