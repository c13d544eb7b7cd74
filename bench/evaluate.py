"""Benchmark: seconds and peak resident memory of L_5000 over 1,000 images, per chunk size.

    python bench/evaluate.py [--images 1000] [--num_samples 5000] [--chunks 50,200,500]

Each chunk size runs in a fresh subprocess so its peak RSS (VmHWM) is its own.
Reference: a plain PyTorch IWAE took ~280 s for L_5000 over 1,000 images on 2 cores.
"""

import argparse
import json
import subprocess
import sys


CHILD = r"""
import json, os, resource, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
import tfp_iwae
from tfp_iwae import data, evaluation
images, k, chunk, layers = (int(a) for a in sys.argv[1:5])
x = data.fixed_binarization(data.load_array("mnist_5k", "test")[:images], 0)
model = tfp_iwae.IWAE(layers, seed=0)
evaluation.estimate_log_likelihood(model, x[:100], chunk, chunk_size=chunk)  # compile
t0 = time.perf_counter()
ll = evaluation.estimate_log_likelihood(model, x, k, chunk_size=chunk, seed=0)
secs = time.perf_counter() - t0
# Peak RSS of this process image: VmHWM (reset at exec). ru_maxrss would also count the
# parent's pages shared at fork time (a large parent, e.g. bench/report.py, inflates it).
try:
    with open("/proc/self/status") as f:
        peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": secs, "peak_rss_mib": peak, "mean_ll": float(np.mean(ll))}))
"""


def measure(images=1000, num_samples=5000, chunk=50, layers=1):
    """{'seconds', 'peak_rss_mib', 'mean_ll'} of one evaluation in a fresh subprocess."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(images), str(num_samples),
                          str(chunk), str(layers)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--num_samples", type=int, default=5000)
    p.add_argument("--chunks", default="50,200,500")
    p.add_argument("--layers", default="1")
    args = p.parse_args()
    print(f"{'layers':>6} {'chunk':>6} {'seconds':>8} {'peak RSS MiB':>12} "
          f"{'x faster than 280 s':>19}")
    for layers in args.layers.split(","):
        for chunk in args.chunks.split(","):
            r = measure(args.images, args.num_samples, chunk, layers)
            print(f"{layers:>6} {chunk:>6} {r['seconds']:8.1f} {r['peak_rss_mib']:12.0f} "
                  f"{280 / r['seconds']:19.1f}", flush=True)


if __name__ == "__main__":
    main()
