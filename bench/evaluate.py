"""Benchmark: L_5000 over the MNIST test set: seconds, share of the roofline, peak memory.

    python bench/evaluate.py --dataset=mnist --data_dir=../shared/data/mnist   # 10,000 images
    python bench/evaluate.py                      # no IDX files: mnist_5k's 1,000 test images
    python bench/evaluate.py --images 200 --num_samples 50 --chunks 50   # smoke run
    python bench/evaluate.py --images 1000 --decoder_matmuls tensorflow,xla  # the two programs

The images are the whole test split (`--images` takes the first n): all 10,000 MNIST test
digits when `--data_dir` holds the IDX files, else (said so in the output) the embedded
mnist_5k test split, binarised once (seed 0). Each (layers, chunk, decoder_matmuls) cell
runs in a fresh
subprocess so its peak resident memory is its own; the compilation runs first, on a
warm-up call with the timed call's shapes, and is reported apart. The roofline is the
forward matmul FLOPs L_k needs (encoder once per image, every later layer on k * N rows;
`train_step.forward_matmul_flops`) at the float32 GEMM rate measured in the same run, at
the evaluation's largest GEMM shape [block * batch, 200] x [200, 784] (a chunk's
likelihood runs in blocks of `evaluation.likelihood_block_size(chunk, batch)` samples):
share = FLOPs / seconds / sgemm rate. The last column is the roofline of an L_k that
encodes each image k times (the encoder on every sample: 42.4 TFLOP for 1 layer over
10,000 images, against 20.7 TFLOP here): no such implementation can be faster than that.
Reference: a plain PyTorch IWAE took ~280 s for L_5000 over 1,000 images on 2 cores.
"""

import argparse
import functools
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PYTORCH_L5000_SECONDS = 280.  # 1,000 images, k = 5000, same 2-core machine
BATCH = 100  # images per compiled call (estimate_log_likelihood's default)

CHILD = r"""
import json, os, resource, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
import tfp_iwae
from tfp_iwae import data, evaluation
images, k, chunk, layers, batch = (int(a) for a in sys.argv[1:6])
chunk = min(chunk, k)
name, data_dir = sys.argv[6], sys.argv[7] or None
model = tfp_iwae.IWAE(layers, seed=0)
matmuls = evaluation.decoder_matmuls_for(model, sys.argv[8])
x = data.load_array(name, "test", data_dir=data_dir, source="embedded" if name == "mnist_5k"
                    else "files", download=False)
x = data.fixed_binarization(x[:images] if images > 0 else x, 0)
fn = evaluation._compiled_estimator(model, matmuls)
# Compile: the timed call's shapes (a full batch, the last partial batch, a full chunk and
# the k mod chunk remainder) with one chunk's work; k enters the program as a Tensor.
t0 = time.perf_counter()
warm = x[:batch + len(x) % batch] if len(x) > batch else x
evaluation.estimate_log_likelihood(model, warm, chunk + k % chunk, chunk_size=chunk,
                                   batch_size=batch, seed=1, decoder_matmuls=matmuls)
compile_secs = time.perf_counter() - t0
traces = fn.experimental_get_tracing_count()
t0 = time.perf_counter()
ll = evaluation.estimate_log_likelihood(model, x, k, chunk_size=chunk, batch_size=batch, seed=0,
                                        decoder_matmuls=matmuls)
secs = time.perf_counter() - t0
# Peak RSS of this process image: VmHWM (reset at exec). ru_maxrss would also count the
# parent's pages shared at fork time (a large parent, e.g. bench/report.py, inflates it).
ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
try:
    with open("/proc/self/status") as f:
        peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
except (OSError, StopIteration):
    peak = ru_maxrss
print(json.dumps({"seconds": secs, "compile_seconds": compile_secs, "images": len(x),
                  "retraces": fn.experimental_get_tracing_count() - traces,
                  "peak_rss_mib": peak, "ru_maxrss_mib": ru_maxrss,
                  "mean_ll": float(np.mean(ll)), "decoder_matmuls": matmuls}))
"""


def test_images(dataset="mnist", data_dir=None):
    """(dataset, data_dir, note): `mnist` if data_dir holds its IDX test files, else the
    embedded `mnist_5k` with a note saying why."""
    if dataset == "mnist_5k":
        return "mnist_5k", None, "mnist_5k test split (embedded)"
    from tfp_iwae import data
    try:
        n = len(data.load_array(dataset, "test", data_dir=data_dir, source="files",
                                download=False))
        return dataset, data_dir, f"{dataset} test split from {data_dir} ({n:,} images)"
    except data.DataError as e:
        return "mnist_5k", None, (f"FALLBACK: no {dataset} IDX files ({e}); using the "
                                  f"embedded mnist_5k test split (1,000 images)")


def measure(images=1000, num_samples=5000, chunk=50, layers=1, dataset="mnist_5k",
            data_dir=None, batch=BATCH, decoder_matmuls="auto"):
    """One evaluation in a fresh subprocess: {'seconds', 'compile_seconds', 'images',
    'retraces' (of the timed call; 0 expected), 'peak_rss_mib' (VmHWM), 'ru_maxrss_mib',
    'mean_ll' (nats), 'decoder_matmuls' (as resolved)}. images <= 0: the whole test
    split; decoder_matmuls as in `estimate_log_likelihood`."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(images), str(num_samples),
                          str(chunk), str(layers), str(batch), dataset, data_dir or "",
                          decoder_matmuls],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@functools.lru_cache(maxsize=None)
def _model(layers):
    """The paper's model with `layers` stochastic layers, built once: its architecture
    gives the FLOP counts of both rooflines."""
    import tfp_iwae
    return tfp_iwae.IWAE(layers)


def _flops(result, num_samples, layers, encoder_per_sample=False):
    sys.path.insert(0, HERE)
    import train_step
    return train_step.forward_matmul_flops(_model(layers), result["images"], num_samples,
                                           encoder_per_sample)


def roofline(result, num_samples, layers, sgemm):
    """(forward matmul FLOPs, share of the roofline) of a `measure` result, given the sgemm
    rate in FLOP/s. The FLOPs are those L_k needs: q(h1|x) once per image."""
    flops = _flops(result, num_samples, layers)
    return flops, flops / result["seconds"] / sgemm


def per_sample_encoder_seconds(result, num_samples, layers, sgemm):
    """Seconds that the forward matmuls of an L_k which encodes each image k times (q(h1|x)
    on all k * N rows, ~2x the FLOPs at 1 layer) would take at the sgemm rate: a floor for
    such an implementation, which this package's evaluation does not run."""
    return _flops(result, num_samples, layers, encoder_per_sample=True) / sgemm


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist", help="mnist (IDX files in --data_dir; "
                   "else falls back to mnist_5k) or mnist_5k")
    p.add_argument("--data_dir", default=None, help="folder of the MNIST IDX .gz files")
    p.add_argument("--images", type=int, default=0, help="first n test images (0: all)")
    p.add_argument("--num_samples", type=int, default=5000)
    p.add_argument("--chunks", default="50,500")
    p.add_argument("--layers", default="1")
    p.add_argument("--sgemm_seconds", type=float, default=1.0)
    p.add_argument("--decoder_matmuls", default="auto",
                   help="auto, xla or tensorflow, or a comma list to compare (each cell "
                   "runs once per value)")
    args = p.parse_args(argv)
    sys.path.insert(0, HERE)
    import train_step
    dataset, data_dir, note = test_images(args.dataset, args.data_dir)
    print(note)
    chunks = [int(c) for c in args.chunks.split(",")]
    from tfp_iwae import evaluation
    rows = {c: evaluation.likelihood_block_size(c, BATCH) * BATCH for c in chunks}
    rates = {r: max(train_step.sgemm_rate(r, 200, 784, args.sgemm_seconds).values())
             for r in sorted(set(rows.values()))}
    sgemm = {c: rates[rows[c]] for c in chunks}
    print(f"{'layers':>6} {'chunk':>6} {'matmuls':>10} {'images':>6} {'seconds':>8} "
          f"{'compile s':>9} {'GFLOP/s':>8} {'sgemm':>6} {'share':>6} {'peak RSS MiB':>12} "
          f"{'vs PyTorch':>10} {'per-sample-encoder roofline s':>29}")
    rows = []
    cells = [(int(v), c, m) for v in args.layers.split(",") for c in chunks
             for m in args.decoder_matmuls.split(",")]
    for layers, chunk, matmuls in cells:
        r = measure(args.images, args.num_samples, chunk, layers, dataset, data_dir,
                    decoder_matmuls=matmuls)
        flops, share = roofline(r, args.num_samples, layers, sgemm[chunk])
        ref = PYTORCH_L5000_SECONDS * r["images"] * args.num_samples / 5e6
        rows.append(dict(r, layers=layers, chunk=chunk, flops=flops, share=share,
                         sgemm=sgemm[chunk], pytorch_seconds=ref))
        print(f"{layers:>6} {chunk:>6} {r['decoder_matmuls']:>10} {r['images']:>6} "
              f"{r['seconds']:8.1f} "
              f"{r['compile_seconds']:9.1f} {flops / r['seconds'] / 1e9:8.1f} "
              f"{sgemm[chunk] / 1e9:6.0f} {share:6.1%} {r['peak_rss_mib']:12.0f} "
              f"{ref / r['seconds']:9.1f}x "
              f"{per_sample_encoder_seconds(r, args.num_samples, layers, sgemm[chunk]):29.1f}",
              flush=True)
        if r["retraces"]:
            print(f"  warning: the timed call retraced {r['retraces']} time(s), so its "
                  f"seconds include compilation", flush=True)
    return note, rows


if __name__ == "__main__":
    main()
