"""Gradient signal-to-noise ratio of trained models, per estimator: a measurement that
explains a failed comparison rather than a result in itself.

    python experiments/gradient_snr.py --runs_dir=runs/results/mnist_p10 \
        --runs=l1_vae_k5,l1_iwae_k5,l2_vae_k5,l2_iwae_k5 --estimators=vae,iwae,dreg \
        --out=docs/results/mnist_p10_gradient_snr

For each trained run (its newest checkpoint) and each estimator at the run's k, the
encoder and decoder gradients of one training step are drawn `--repeats` times on the same
batch (stateless seeds), on each of `--batches` batches of `--batch_size` training images
(the first images of the training split, binarised once with seed 0). Per parameter,
SNR = |mean| / std over the draws (Rainforth et al. 2018); the table reports its mean over
the parameters of each network, averaged over the batches. The estimators are compared at
the same parameters, so a lower SNR is a noisier gradient for the same model.

Writes `<out>.json` (every figure) and `<out>.md` (one table); trains nothing.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs_dir", required=True, help="Parent directory of the runs.")
    p.add_argument("--runs", required=True, help="Comma-separated run names under --runs_dir.")
    p.add_argument("--estimators", default="vae,iwae,dreg",
                   help="Comma-separated estimator names (tfp_iwae.estimators).")
    p.add_argument("--num_samples", type=int, default=0,
                   help="k of every estimator (0: each run's own k).")
    p.add_argument("--batch_size", type=int, default=20, help="Images per batch (paper: 20).")
    p.add_argument("--batches", type=int, default=5, help="Batches the SNR is averaged over.")
    p.add_argument("--repeats", type=int, default=100,
                   help="Gradient draws per batch (>= 2) from which mean and std are taken.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="Output path without extension.")
    args = p.parse_args(argv)
    for name, low in (("num_samples", 0), ("batch_size", 1), ("batches", 1), ("repeats", 2), ("seed", 0)):
        if getattr(args, name) < low:
            p.error(f"--{name}: expected an integer >= {low}, got {getattr(args, name)}")
    args.runs = [r for r in args.runs.split(",") if r]
    args.estimators = [e for e in args.estimators.split(",") if e]
    if not args.runs or not args.estimators:
        p.error("--runs and --estimators: expected at least one name each")
    return args


def measure(args):
    """{run: {"config": {...}, "estimators": {name: {"encoder": stats, "decoder": stats}}}}
    with stats the batch-averaged `diagnostics.gradient_statistics`."""
    from tfp_iwae import data, diagnostics, estimators, rundir
    out = {}
    for run in args.runs:
        config, model, path, _ = rundir.restore_run(os.path.join(args.runs_dir, run))
        x = data.load_array(config.dataset, "train", data_dir=config.data_dir,
                            download=config.download,
                            allow_nonstandard=config.allow_nonstandard_data)
        x = data.fixed_binarization(x[:args.batch_size * args.batches], 0)
        k = args.num_samples or config.num_samples
        res = {"checkpoint": os.path.relpath(path, args.runs_dir), "k": k,
               "layers": config.stochastic_layers, "trained_with": config.objective,
               "estimators": {}}
        for name in args.estimators:
            try:
                estimators.get_estimator(name, k)
            except ValueError as e:
                raise SystemExit(f"--estimators: {e}") from None
            row = {}
            for group in ("encoder", "decoder"):
                sampler = diagnostics.make_gradient_sampler(model, name, k, group=group)
                stats = [diagnostics.gradient_statistics(
                    sampler, x[b * args.batch_size:(b + 1) * args.batch_size], args.repeats,
                    seed=args.seed * args.batches + b)
                    for b in range(args.batches)]
                row[group] = {key: float(np.mean([s[key] for s in stats])) for key in stats[0]}
            res["estimators"][name] = row
            print(f"[{run}] {name}: encoder SNR {row['encoder']['snr']:.4f}, decoder SNR "
                  f"{row['decoder']['snr']:.4f}", flush=True)
        out[run] = res
    return out


def table(args, measured):
    at = f"k={args.num_samples}" if args.num_samples else "the model's k"
    lines = [f"Gradient SNR (mean over a network's parameters of |mean| / std over "
             f"{args.repeats} draws, averaged over {args.batches} batches of "
             f"{args.batch_size} training images), each model at its newest checkpoint, "
             f"each estimator at {at}.", "",
             "| run | layers | k | trained with | estimator | encoder SNR | decoder SNR |",
             "|---|---|---|---|---|---|---|"]
    for run, res in measured.items():
        for name, row in res["estimators"].items():
            lines.append(f"| {run} | {res['layers']} | {res['k']} | {res['trained_with']} | "
                         f"{name} | {row['encoder']['snr']:.4f} | {row['decoder']['snr']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t0 = time.perf_counter()
    measured = measure(args)
    text = table(args, measured)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"args": {k: v for k, v in vars(args).items() if k != "out"},
                   "runs": measured}, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(text)
    print(text)
    print(f"done in {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
