"""The whole benchmark in one table: training, evaluation and input-pipeline speed.

    python bench/report.py --data_dir=../shared/data/mnist   # L_5000 over 10,000 images
    python bench/report.py                 # no IDX files: L_5000 over mnist_5k's 1,000
    python bench/report.py --quick         # smoke run (seconds; figures not meaningful)

Prints the table and writes it, with the command and the machine, into docs/benchmarks.md
(`--out`) between `<!-- bench:table:start -->` and `<!-- bench:table:end -->` (a --quick
run writes nothing unless --out is given).

Rows:
  * training examples/s at k = 1, 5, 50 for the 1- and 2-stochastic-layer paper models
    (IWAE, XLA) at batch 20 (the paper's) and 100, three ways: one compiled step per call
    (`step.make_train_step`, a fixed binary batch: no gather, no binarisation), the
    fused loop (`fused_loop.TrainLoop`, --steps_per_call steps per compiled call with the
    training images on the device, gathered and binarised in the program), these two
    timed in alternating windows (median of 3 each), and the whole training loop behind
    `launch/train.py` at its defaults (progress lines, summaries and checkpoints;
    validation off), each next to the matmul roofline: the step's matmul FLOPs at the
    sgemm rate measured in the same run (share = achieved / roofline; NumPy's and
    TensorFlow's sgemm are both measured, the faster is the roofline). Then the whole
    loop at batch 20 against batch 100;
  * L_5000 over the whole MNIST test set (10,000 images from the IDX files in --data_dir;
    without them, and said so, mnist_5k's 1,000), 1 and 2 layers, per chunk size, each in
    a fresh process (bench/evaluate.py), at the default `decoder_matmuls` (on a CPU the
    decoder's matmuls as TensorFlow ops) and, for the first cell, also as one XLA program
    per batch (the ratio of the two): seconds (compilation apart), share of the
    roofline (forward matmul FLOPs at the sgemm rate below, the encoder once per image;
    beside it the roofline of an evaluation that encodes each image k times, about twice
    the FLOPs at 1 layer) and peak resident memory (VmHWM), against the ~280 s per 1,000
    images of a plain PyTorch IWAE (1 layer) on the same 2 cores;
  * input pipeline examples/s (dynamic binarisation, batch 100) against the k = 1 step.
Every ratio is taken between figures measured in this run on this machine.
"""

import argparse
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfp_iwae  # noqa: E402
from tfp_iwae import data  # noqa: E402
import evaluate as eval_bench  # noqa: E402
import input_pipeline  # noqa: E402
import train_step  # noqa: E402

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
ROOT = os.path.dirname(HERE)
BENCHMARKS_PAGE = os.path.join(ROOT, "docs", "benchmarks.md")
TABLE_START, TABLE_END = "<!-- bench:table:start -->", "<!-- bench:table:end -->"
ROUNDS = 3  # alternating timing windows per training cell


def device_name():
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical cores"


def table_markdown(header, rows):
    """The measured table as markdown: a header paragraph, then one row per measurement."""
    lines = [header, "", "| measurement | result | reference (same run) | share / ratio |",
             "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(path, text):
    """Puts `text` between the page's table markers (replacing what was there); a page
    without them gets the markers and the table at its end."""
    page = ""
    if os.path.exists(path):
        with open(path) as f:
            page = f.read()
    if TABLE_START in page and TABLE_END in page:
        head, rest = page.split(TABLE_START, 1)
        page = head + TABLE_START + "\n" + text + TABLE_END + rest.split(TABLE_END, 1)[1]
    else:
        page = page.rstrip("\n") + ("\n\n" if page else "") + \
            f"{TABLE_START}\n{text}{TABLE_END}\n"
    with open(path + ".tmp", "w") as f:
        f.write(page)
    os.replace(path + ".tmp", path)


def main(argv=None):
    t0 = time.perf_counter()
    command = " ".join(["python bench/report.py"] + [shlex.quote(a) for a in (
        sys.argv[1:] if argv is None else argv)])
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny timings: checks the script runs")
    p.add_argument("--ks", default="1,5,50")
    p.add_argument("--layers", default="1,2")
    p.add_argument("--batches", default="20,100", help="comma list of batch sizes")
    p.add_argument("--steps_per_call", type=int, default=100,
                   help="steps per call of the fused rows")
    p.add_argument("--chunks", default="50,500", help="chunk sizes of the L_5000 rows")
    p.add_argument("--data_dir", default=None, help="MNIST IDX files for the L_5000 rows "
                   "(all 10,000 test images); without them mnist_5k's 1,000")
    p.add_argument("--out", default=None, help="Page whose table section is rewritten "
                   "(default: docs/benchmarks.md; none for --quick)")
    args = p.parse_args(argv)
    out = args.out or (None if args.quick else BENCHMARKS_PAGE)
    ks = [int(k) for k in args.ks.split(",")]
    layers = [int(v) for v in args.layers.split(",")]
    seconds = 0.3 if args.quick else 3.0
    images, num_samples = (50, 100) if args.quick else (0, 5000)  # 0: the whole test split
    eval_data, eval_dir, eval_note = eval_bench.test_images("mnist", args.data_dir)
    print(eval_note, flush=True)

    rows = []
    batches = [int(b) for b in args.batches.split(",")]
    sgemm = train_step.sgemm_rate(max(batches) * max(ks), 200, 784,
                                  seconds=0.2 if args.quick else 1.0)
    roof_rate = max(sgemm.values())
    step_rate, launcher = {}, {}
    train_images = data.load_array("mnist_5k", "train")
    scratch = tempfile.mkdtemp(prefix="tfp_iwae_bench_")
    for n_layers in layers:
        for k in ks:
            model = tfp_iwae.IWAE(n_layers)
            flops = train_step.step_matmul_flops(model, 100, k) / 100  # per example
            roof = roof_rate / flops
            for batch in batches:
                # One step per call and the fused loop in alternating windows (median of
                # each), so that drift in the machine's speed hits both alike.
                built = train_step.build_step(tfp_iwae.IWAE(n_layers), k, "iwae", batch)
                loop = train_step.build_fused(tfp_iwae.IWAE(n_layers), k, "iwae", batch,
                                              args.steps_per_call, train_images)
                windows = {"step": [], "fused": []}
                for _ in range(ROUNDS):
                    windows["step"].append(train_step.rate_of(built, batch, seconds / ROUNDS))
                    windows["fused"].append(train_step.fused_rate(
                        loop, batch, seconds / ROUNDS, min_calls=1))
                eps, fused = (float(np.median(windows[w])) for w in ("step", "fused"))
                steps = int(np.clip(round(2.5 * seconds * fused / batch, -2), 300, 6000))
                whole = train_step.launcher_rate(
                    n_layers, k, batch, 300 if args.quick else steps,
                    os.path.join(scratch, f"l{n_layers}_k{k}_b{batch}"))
                step_rate[(n_layers, k, batch)] = eps
                launcher[(n_layers, k, batch)] = whole
                what = f"{n_layers} layer{'s' * (n_layers > 1)}, k={k}, batch {batch}"
                for label, rate, ref in (
                        ("one step per call", eps, f"roofline {roof:,.0f} ex/s"),
                        (f"fused, {args.steps_per_call} steps per call", fused,
                         f"{fused / eps:.2f}x one step per call"),
                        (f"launch/train.py loop ({steps if not args.quick else 300} "
                         f"steps)", whole, f"{whole / fused:.0%} of fused")):
                    rows.append((f"train, {label}, {what}", f"{rate:,.0f} ex/s", ref,
                                 f"{rate / roof:.1%} of roofline"))
                    print(*rows[-1], sep=" | ", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    if 20 in batches and 100 in batches:
        for n_layers in layers:
            for k in ks:
                small, big = launcher[(n_layers, k, 20)], launcher[(n_layers, k, 100)]
                rows.append((f"launch/train.py loop, {n_layers} layer"
                             f"{'s' * (n_layers > 1)}, k={k}: batch 20 vs batch 100",
                             f"{small:,.0f} vs {big:,.0f} ex/s", "same run",
                             f"{small / big:.0%}"))
                print(*rows[-1], sep=" | ", flush=True)
    base_batch = 100 if 100 in batches else batches[0]
    # Every (layers, chunk) cell at the default decoder_matmuls ("auto"); the first layer
    # count's first chunk also as one XLA program per batch, for the ratio between them.
    cells = [(n, int(c), "auto") for n in layers for c in args.chunks.split(",")]
    cells.insert(1, (cells[0][0], cells[0][1], "xla"))
    auto_seconds = {}
    for n_layers, chunk, matmuls in cells:
        if matmuls == "xla" and auto_seconds[(n_layers, chunk)][1] == "xla":
            continue  # the default is already one XLA program (e.g. on a GPU)
        r = eval_bench.measure(images, num_samples, chunk, n_layers, eval_data, eval_dir,
                               decoder_matmuls=matmuls)
        flops, share = eval_bench.roofline(r, num_samples, n_layers, roof_rate)
        per_sample = eval_bench.per_sample_encoder_seconds(r, num_samples, n_layers,
                                                           roof_rate)
        ref = eval_bench.PYTORCH_L5000_SECONDS * r["images"] * num_samples / 5e6
        where = {"tensorflow": "decoder matmuls as TF ops", "xla": "all XLA"}[
            r["decoder_matmuls"]]
        if matmuls == "auto":
            auto_seconds[(n_layers, chunk)] = (r["seconds"], r["decoder_matmuls"])
            versus = f"{ref / r['seconds']:.1f}x faster"
        else:
            auto, auto_where = auto_seconds[(n_layers, chunk)]
            versus = f"{r['seconds'] / auto:.2f}x the time of the default ({auto_where})"
        rows.append((f"L_{num_samples}, {r['images']:,} {eval_data} test images, {n_layers} "
                     f"layer{'s' * (n_layers > 1)}, chunk {chunk}, {where}",
                     f"{r['seconds']:.1f} s (+{r['compile_seconds']:.0f} s compile), peak "
                     f"RSS {r['peak_rss_mib']:,.0f} MiB",
                     f"roofline {flops / roof_rate:.1f} s (encoding each image k times: "
                     f"{per_sample:.1f} s); PyTorch "
                     f"{'1-layer ' * (n_layers > 1)}reference {ref:.0f} s",
                     f"{share:.1%} of roofline; {versus}"))
        print(*rows[-1], sep=" | ", flush=True)
    base = step_rate.get((layers[0], min(ks), base_batch))
    sources = [("mnist_5k", None)]
    if os.path.isdir(FASHION_DIR):
        sources.append(("fashion_mnist", FASHION_DIR))
    for name, data_dir in sources:
        ds = data.load(name, "train", batch_size=base_batch, data_dir=data_dir)
        rate = input_pipeline.pipeline_rate(ds, 200 if args.quick else 3000)
        rows.append((f"input pipeline, {data.describe(name, 'dynamic')}, batch {base_batch}",
                     f"{rate:,.0f} ex/s", f"k={min(ks)} step {base:,.0f} ex/s",
                     f"{rate / base:.1f}x the step"))
        print(*rows[-1], sep=" | ", flush=True)

    minutes, secs = divmod(round(time.perf_counter() - t0), 60)
    header = (f"Measured with `{command}` ({device_name()}; TensorFlow {tf.__version__}; "
              f"sgemm at [{max(batches) * max(ks)}x200]x[200x784]: NumPy "
              f"{sgemm['numpy'] / 1e9:.0f}, TensorFlow {sgemm['tensorflow'] / 1e9:.0f} "
              f"GFLOP/s" + (" (--quick: figures not meaningful)" if args.quick else "") +
              f"; L_{num_samples} data: {eval_note}; {minutes} min {secs} s):")
    text = table_markdown(header, rows)
    print()
    print(text)
    if out:
        write_table(out, text)
        print(f"wrote the table into {out}")
    return rows


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
