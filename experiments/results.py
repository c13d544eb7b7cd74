"""Regenerates docs/results.md: the paper's table 1, extras, bound vs k, budget.

    python experiments/results.py --dataset=mnist --data_dir=../shared/data/mnist \
        --name=mnist_p10 --schedule=paper --epochs=10 --ks=5,1,50 \
        --extras=dreg,piwae                            # full MNIST, 14 runs, ~2 h
    python experiments/results.py --dataset=mnist --data_dir=../shared/data/mnist \
        --name=mnist_k5_p600 --schedule=paper --epochs=600 --layers=1 --ks=5 --extras= \
        --parallel=2                      # the 1-layer k=5 pair, both at once, ~2 h on 2 cores
    python experiments/results.py                      # embedded MNIST digits (mnist_5k)
    python experiments/results.py --dataset=fashion_mnist \
        --data_dir=/usr/share/datasets/fashion-mnist --layers=1 --extras= --epochs=10 \
        --eval_images=2000

Every number comes from the command-line tools (`launch/train.py`, `launch/evaluate.py`,
`launch/sample.py`) run as subprocesses; the exact commands are written next to the
results. Runs go to `--runs_dir/<name>/<run>` and are resumed/skipped when re-run
(delete a run's `result.json` to redo its evaluation, its directory to redo it all).
`--runs_dir/<name>` is one TensorBoard logdir: `tensorboard --logdir runs/results/mnist_5k`
shows every run of the set side by side (HParams table with test NLL, overlaid curves).

As each run finishes, its result and per-test-image log-likelihoods are written to
`docs/results/<name>/<run>.{json,_test_ll.npy}` (small files, meant to be committed);
a run whose result is there is never redone, so a set too long for one sitting is
finished over several (on other machines too: `--only` picks the runs one of them
trains), and `--report_only` writes the tables from what is committed. Reusing a
`--name` with other settings is refused.

Writes `docs/results/<name>.json` (every figure, command and timing),
`docs/results/<name>.md` (the tables), `docs/bound_vs_k_<name>.png`,
`docs/samples_<name>.png` (the set's lowest test NLL), `docs/nll_vs_passes_<dataset>.png`
(the k=5 VAE/IWAE pairs of every committed set of the dataset, a panel for each number of
layers trained at two budgets or more), and replaces the section of docs/results.md
(`--results_page`) between `<!-- results:<name>:start -->` and
`<!-- results:<name>:end -->`, or adds one at its end (`--name` defaults to the dataset).

Committed files name no absolute path of this machine: a run's checkpoint is relative
to the run's logdir (`checkpoints/ckpt-29800`), `--data_dir` and the runs' logdirs are
relative to the repository (`portable_path`).
"""

import argparse
import glob
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Burda et al. (2015), table 1: test NLL in nats (k = 5000), dynamically binarised MNIST.
PAPER_NLL = {(1, 1): (86.76, 86.76), (1, 5): (86.47, 85.54), (1, 50): (86.35, 84.78),
             (2, 1): (85.33, 85.33), (2, 5): (85.01, 83.89), (2, 50): (84.78, 82.90)}
PAPER_FIXED_IWAE = {1: 88.71, 5: 87.63, 50: 87.10}  # 1 layer, fixed binarisation
MNIST_DATASETS = ("mnist", "mnist_5k")  # the paper's numbers are for dynamic MNIST
CURVE_KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
EXTRAS = ("binarization", "finetune", "dreg", "piwae")
TRAIN_EVAL_IMAGES = 1000  # the train-set bound: on the first 1,000 training images


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="mnist_5k")
    p.add_argument("--name", default=None,
                   help="Names this set of results (runs subdirectory, docs files, "
                        "docs/results.md section); default: the dataset.")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--epochs", type=int, default=100,
                   help="Passes over the training split per configuration: at constant lr "
                        "(--schedule=constant) or the paper's schedule compressed to this "
                        "many passes (--schedule=paper).")
    p.add_argument("--schedule", default="constant", choices=("constant", "paper"),
                   help="constant: --learning_rate throughout; paper: the paper's 8 stages "
                        "(3^i passes at learning_rate * 10^(-i/7)) compressed to --epochs "
                        "passes (launch/train.py --schedule_passes).")
    p.add_argument("--finetune_epochs", type=int, default=50,
                   help="Extra passes for the fine-tuning runs and their controls.")
    p.add_argument("--batch_size", type=int, default=20)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval_images", type=int, default=0,
                   help="Test images for L_5000 (0: the whole test split).")
    p.add_argument("--eval_samples", type=int, default=5000)
    p.add_argument("--layers", default="1,2", help="Stochastic layers of the main table.")
    p.add_argument("--ks", default="1,5,50", help="k of the main table.")
    p.add_argument("--extras", default="binarization,finetune,dreg",
                   help="Also run: binarization (fixed vs dynamic), finetune (sec. 5.2), "
                        "dreg (the IWAE bound trained with the DReG estimator, top k, every "
                        "--layers), piwae (PIWAE(M,K) of Rainforth et al. 2018 at M*K = top "
                        "k, every --layers).")
    p.add_argument("--runs_dir", default=os.path.join(ROOT, "runs", "results"))
    p.add_argument("--docs", default=os.path.join(ROOT, "docs"))
    p.add_argument("--results_page", default=None,
                   help="The page whose section of this set is rewritten (default: "
                        "<docs>/results.md).")
    p.add_argument("--parallel", type=int, default=1,
                   help="Runs trained at once, each with (CPU cores // --parallel) TensorFlow "
                        "threads. At the paper's batch 20 one step is too small to use many "
                        "cores, so on a CPU two single-threaded runs together finish sooner "
                        "than one after the other (2 cores here: 1.6x). Each run's numbers "
                        "are those of a run on its own with that many threads.")
    p.add_argument("--only", default="",
                   help="Train and evaluate only these runs of the set (comma-separated "
                        "names, as --dry_run prints them); the others come from what is "
                        "committed. Splits a set too long for one sitting or one machine: "
                        "each part commits its runs under docs/results/<name>/, and any "
                        "invocation writes the tables from all of them.")
    p.add_argument("--dry_run", action="store_true", help="Print the commands only.")
    p.add_argument("--report_only", action="store_true",
                   help="Train nothing: write the tables and plots from the committed "
                        "results (runs not committed yet show as 'not run yet').")
    args = p.parse_args(argv)
    _check_args(p, args)
    args.extras = [e for e in args.extras.split(",") if e]
    args.name = args.name or args.dataset
    args.results_page = args.results_page or os.path.join(args.docs, "results.md")
    unknown = set(args.extras) - set(EXTRAS)
    if unknown:
        p.error(f"--extras: unknown {sorted(unknown)}; expected {', '.join(EXTRAS)}")
    args.only = [n for n in args.only.split(",") if n]
    runs = {run["name"]: run for run in plan(args)}
    unknown = [n for n in args.only if n not in runs]
    if unknown:
        p.error(f"--only: no run {', '.join(unknown)} in this set; its runs: "
                f"{', '.join(runs)}")
    for name in args.only:  # a fine-tuning run starts from its base's checkpoint
        base = runs[name]["init_from"]
        if base and base not in args.only and not tf_checkpoint_exists(run_dir(args, base)):
            p.error(f"--only: {name} starts from {base}, which is not trained here: add "
                    f"{base} to --only")
    return args


def _check_args(p, args):
    """The counts among `args` checked (`tfp_iwae.checks.count`; `p.error`, exit status
    2, naming the flag otherwise); --layers and --ks parsed into lists of ints."""
    from tfp_iwae import checks, errors

    minimums = dict(epochs=1, finetune_epochs=1, batch_size=1, eval_samples=1, parallel=1,
                    eval_images=0)
    try:
        for name, minimum in minimums.items():
            checks.count(getattr(args, name), name, minimum=minimum, label=f"--{name}",
                         expected=f"an integer >= {minimum}")
        args.layers = [int(v) for v in args.layers.split(",")]
        args.ks = [checks.count(v, "ks", from_text=True, label="--ks",
                                expected="comma-separated integers >= 1")
                   for v in args.ks.split(",")]
    except errors.ArgumentError as e:
        p.error(str(e))
    except ValueError:
        p.error("--layers and --ks: expected comma-separated integers")
    if not set(args.layers) <= {1, 2}:
        p.error(f"--layers must be in {{1, 2}}, got {args.layers}")


def plan(args):
    """The runs: dicts with name, layers, objective, k, binarization, epochs, init_from."""
    runs = {}

    def add(layers, objective, k, name=None, binarization="dynamic", epochs=None, init=None):
        """Adds a run (default name l<layers>_<objective>_k<k>) once; returns its name."""
        name = name or f"l{layers}_{objective}_k{k}"
        runs.setdefault(name, dict(name=name, layers=layers, objective=objective, k=k,
                                   binarization=binarization, epochs=epochs or args.epochs,
                                   init_from=init))
        return name

    top = max(args.ks)
    for layers in args.layers:  # run order: each architecture's table, then its extras
        for k in args.ks:
            add(layers, "vae", k)
            if k > 1:  # at k = 1 the IWAE objective is the VAE's
                add(layers, "iwae", k)
        for extra in ("dreg", "piwae"):
            if extra in args.extras and top > 1:
                add(layers, extra, top)
    if "binarization" in args.extras:
        add(1, "iwae", top)
        add(1, "iwae", top, f"l1_iwae_k{top}_fixed", binarization="fixed")
    if "finetune" in args.extras and top > 1:
        for base in ("vae", "iwae"):
            name = add(1, base, top)
            for then in ("iwae", "vae"):
                add(1, then, top, f"{name}_then_{then}", epochs=args.finetune_epochs,
                    init=name)
    return list(runs.values())


def tensorboard_logdir(args):
    """The parent of every run of this set: one TensorBoard logdir for all of them."""
    return os.path.join(args.runs_dir, args.name)


def run_dir(args, name):
    return os.path.join(tensorboard_logdir(args), name)


def commands(args, run):
    logdir = run_dir(args, run["name"])
    epoch = max(1, args.train_size // args.batch_size)  # steps per pass
    from tfp_iwae import estimators
    objective = run["objective"]
    if objective in ("miwae", "piwae"):  # M*K = k, M the largest divisor <= sqrt(k)
        objective = estimators.example_name(objective, run["k"])
    # fine-tuning runs continue at constant lr; the main runs follow --schedule
    schedule = (["--schedule=paper", f"--schedule_passes={run['epochs']}"]
                if args.schedule == "paper" and not run["init_from"] else
                ["--schedule=constant", f"--epochs={run['epochs']}"])
    train = [sys.executable, "launch/train.py", f"--dataset={args.dataset}",
             f"--binarization={run['binarization']}", f"--stochastic_layers={run['layers']}",
             f"--objective={objective}", f"--num_samples={run['k']}",
             f"--batch_size={args.batch_size}", *schedule, f"--learning_rate={args.learning_rate}",
             f"--seed={args.seed}", f"--logdir={logdir}",
             f"--eval_every={max(1, run['epochs'] // 5) * epoch}", "--eval_images=200",
             "--eval_samples=1000", f"--checkpoint_every={max(1, run['epochs'] // 10) * epoch}",
             f"--log_every={max(1, run['epochs'] // 20) * epoch}"]
    if args.data_dir:
        train.append(f"--data_dir={args.data_dir}")
    if run["init_from"]:
        train.append(f"--init_from={os.path.join(run_dir(args, run['init_from']), 'checkpoints')}")
    evaluate = [sys.executable, "launch/evaluate.py", f"--logdir={logdir}",
                f"--num_samples={args.eval_samples}",
                "--curve_ks=" + ",".join(str(k) for k in CURVE_KS if k <= args.eval_samples)]
    if args.eval_images:
        evaluate.append(f"--max_images={args.eval_images}")
    # Train-set bound on the first 1,000 training images, binarised once with seed 0
    # (exactly the fixed-binarisation run's training data): train - test is overfitting.
    train_eval = [sys.executable, "launch/evaluate.py", f"--logdir={logdir}",
                  f"--num_samples={args.eval_samples}", "--split=train",
                  f"--max_images={TRAIN_EVAL_IMAGES}", "--fixed_binarization_seed=0"]
    out = {"train": train, "evaluate": evaluate, "evaluate_train": train_eval}
    return out


def portable_path(path, start=ROOT):
    """`path` as committed: relative to `start` (the repository by default) when absolute,
    so that no file under docs/ names a directory of the machine that made it."""
    if path is None or not os.path.isabs(path):
        return path
    return os.path.relpath(path, start)


def show(cmd):
    """The command as a user would type it from the repository root: the path of a
    `--flag=/abs/path` argument inside the repository, or beside it (e.g. ../shared/data),
    relative to the repository; system paths such as /usr/share/datasets as given."""
    near = (ROOT, os.path.dirname(ROOT))  # the repository and its parent directory
    near = tuple(d.rstrip(os.sep) + os.sep for d in near if d.rstrip(os.sep))
    words = []
    for c in cmd[1:]:
        flag, eq, value = c.partition("=")
        if eq and value.startswith(near):
            c = f"{flag}={portable_path(value)}"
        words.append(shlex.quote(c))
    return " ".join(["python"] + words)


def portable_result(result, logdir):
    """A run's result as committed: each evaluation's `checkpoint` relative to the run's
    `logdir` (tfp-iwae-evaluate writes it as a path of this machine)."""
    result = dict(result)
    for split in ("test", "train"):
        if isinstance(result.get(split), dict):
            ckpt = result[split].get("checkpoint")
            result[split] = dict(result[split], checkpoint=portable_path(ckpt, logdir))
    return result


def thread_env(parallel):
    """Environment of a launcher subprocess: with `parallel` runs at once, each gets an equal
    share of the cores as TensorFlow's intra-op threads (and one inter-op thread)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if parallel > 1:
        threads = str(max(1, (os.cpu_count() or 1) // parallel))
        env.update(TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS="1",
                   OMP_NUM_THREADS=threads)
    return env


def execute(cmd, log_path, env):
    print("  $ " + show(cmd), flush=True)
    t0 = time.perf_counter()
    with open(log_path, "a") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              env=env)
    if proc.returncode:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f"command failed ({proc.returncode}): {show(cmd)}\n{tail}")
    return time.perf_counter() - t0


# What a committed run's result must share with this invocation to be reused.
SETTINGS = ("dataset", "epochs", "schedule", "batch_size", "learning_rate", "seed",
            "eval_samples", "eval_images")


def committed(args, name):
    """Where run `name`'s result is committed: (JSON, per-test-image log-likelihoods .npy)
    under `<docs>/results/<set name>/`; small files, checked in as each run finishes."""
    base = os.path.join(args.docs, "results", args.name, name)
    return base + ".json", base + "_test_ll.npy"


def settings(args):
    return {k: getattr(args, k) for k in SETTINGS}


def load_committed(args, name):
    """The committed result of run `name`, or None; SystemExit if it was made with other
    settings (another budget or schedule under the same --name)."""
    path = committed(args, name)[0]
    if not os.path.exists(path):
        return None
    with open(path) as f:
        result = json.load(f)
    theirs = result.get("settings")
    if theirs != settings(args):
        raise SystemExit(f"{path} was made with {theirs}, not {settings(args)}: use another "
                         f"--name for other settings (or delete the file to redo the run).")
    return result


def do_run(args, run):
    """Trains and evaluates one run, doing only what neither its committed result (under
    docs/results/<name>/) nor its run directory's result.json holds yet."""
    result = load_committed(args, run["name"])
    if result is not None:
        print(f"[{run['name']}] committed: {committed(args, run['name'])[0]}", flush=True)
        return result
    if args.report_only or (args.only and run["name"] not in args.only):
        print(f"[{run['name']}] not run yet" + ("" if args.report_only else
                                                " (not in --only)"), flush=True)
        return None
    logdir = run_dir(args, run["name"])
    done = os.path.join(logdir, "result.json")
    cmds = commands(args, run)
    result = dict(run)
    if os.path.exists(done):
        with open(done) as f:
            result = json.load(f)
        if "train" in result:
            write_committed(args, run["name"], result)
            return result
    print(f"[{run['name']}]", flush=True)
    if args.dry_run:
        for cmd in cmds.values():
            print("  $ " + show(cmd))
        return None
    os.makedirs(logdir, exist_ok=True)
    log_path = os.path.join(logdir, "console.log")
    env = thread_env(args.parallel)
    if "test" not in result:
        cores = os.cpu_count() or 1
        result["machine"] = {"cpu_cores": cores,
                             "threads": int(env.get("TF_NUM_INTRAOP_THREADS", cores))}
        result["train_seconds"] = execute(cmds["train"], log_path, env)
        result["evaluate_seconds"] = execute(cmds["evaluate"], log_path, env)
        with open(eval_result(args, logdir, "test") + ".json") as f:
            result["test"] = json.load(f)
    execute(cmds["evaluate_train"], log_path, env)
    with open(eval_result(args, logdir, "train") + ".json") as f:
        result["train"] = json.load(f)
    result["commands"] = {k: show(c) for k, c in cmds.items()}
    with open(done + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(done + ".tmp", done)
    write_committed(args, run["name"], result)
    t = result["test"]
    print(f"  -> test NLL {t['nll_nats']:.2f} nats ({t['bits_per_dim']:.4f} bits/dim), train "
          f"NLL {-result['train']['log_likelihood_nats']:.2f}, active units "
          f"{t['active_units']}, train {result['train_seconds'] / 60:.1f} min", flush=True)
    return result


def run_all(args, runs):
    """do_run for every run, `--parallel` at a time; a fine-tuning run starts once the run it
    starts from is done. Returns {name: result or None} in plan order."""
    if args.parallel == 1 or args.dry_run or args.report_only:
        return {run["name"]: do_run(args, run) for run in runs}
    from concurrent.futures import ThreadPoolExecutor  # the work is in subprocesses
    results = {}
    with ThreadPoolExecutor(args.parallel) as pool:
        for wave in ([r for r in runs if not r["init_from"]], [r for r in runs if r["init_from"]]):
            futures = {run["name"]: pool.submit(do_run, args, run) for run in wave}
            results.update((name, f.result()) for name, f in futures.items())
    return {run["name"]: results[run["name"]] for run in runs}


def eval_result(args, logdir, split):
    """The path stem of a run's `launch/evaluate.py` result for `split` (its .json and
    _per_example.npy): the test split's first --eval_images images (all if 0), or the
    first 1,000 training images (`commands`)."""
    from tfp_iwae import evaluation
    first = args.eval_images if split == "test" else TRAIN_EVAL_IMAGES
    stem = os.path.join(logdir, evaluation.result_name(split, args.eval_samples, first))
    if first and not os.path.exists(stem + ".json"):  # --max_images covered the split
        stem = os.path.join(logdir, evaluation.result_name(split, args.eval_samples))
    return stem


def write_committed(args, name, result):
    """Copies a finished run's result and per-image test log-likelihoods (float32) to
    docs/results/<name>/, from which later invocations (and the paired differences) read."""
    path, npy = committed(args, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ll = np.load(eval_result(args, run_dir(args, name), "test") + "_per_example.npy")
    np.save(npy, ll.astype(np.float32))
    result = dict(portable_result(result, run_dir(args, name)), settings=settings(args))
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(path + ".tmp", path)


def nll_cell(r):
    if r is None:
        return "-", "-", "-"
    t = r["test"]
    au = "+".join(str(c) for c in t["active_units"])
    return (f"{t['nll_nats']:.2f} ± {t['nll_standard_error_nats']:.2f}",
            f"{t['bits_per_dim']:.4f}", au)


def paired_difference(args, a, b):
    """(NLL(b) - NLL(a), its paired standard error) in nats over the same test images."""
    ll = [np.load(committed(args, name)[1]).astype(np.float64) for name in (a, b)]
    d = ll[0] - ll[1]
    return d.mean(), d.std(ddof=1) / np.sqrt(len(d))


def paired(args, a, b):
    """NLL(b) - NLL(a) ± its paired standard error, as text."""
    d, se = paired_difference(args, a, b)
    return f"{d:+.2f} ± {se:.2f}"


def replicates(args, name):
    """{seed: (set name, result)} of run `name` committed in *other* sets whose settings
    are this invocation's except the training seed: the same configuration trained again
    with another seed (e.g. `--name=mnist_k5_p600_seed1 --seed=1`)."""
    out = {}
    mine = settings(args)
    for path in sorted(glob.glob(os.path.join(args.docs, "results", "*", name + ".json"))):
        other = os.path.basename(os.path.dirname(path))
        if other == args.name:
            continue
        with open(path) as f:
            res = json.load(f)
        theirs = res.get("settings", {})
        if theirs.get("seed") != args.seed and all(
                theirs.get(k) == v for k, v in mine.items() if k != "seed"):
            out.setdefault(theirs.get("seed"), (other, res))
    return out


def set_paired_difference(args, set_name, a, b):
    """paired_difference of runs a and b of the committed set `set_name`."""
    return paired_difference(argparse.Namespace(**dict(vars(args), name=set_name)), a, b)


def other_seed_differences(args, a, b):
    """[(seed, (NLL(b) - NLL(a), its paired SE))] in the other seeds' sets holding both."""
    ra, rb = replicates(args, a), replicates(args, b)
    out = []
    for seed in sorted(set(ra) & set(rb)):
        if ra[seed][0] == rb[seed][0]:
            try:
                out.append((seed, set_paired_difference(args, ra[seed][0], a, b)))
            except FileNotFoundError:
                pass
    return out


def seed_lines(args, r, paper_nll):
    """A table of each configuration's test NLL (and paired difference) under every
    training seed committed (see `replicates`), with the spread (max - min) a seed moves
    them by; [] when no other seed is committed."""
    rows = []
    for layers in args.layers:
        for name, label, _, versus in table_rows(args, layers, paper_nll):
            if name not in r or not replicates(args, name):
                continue
            runs = {args.seed: (args.name, r[name]), **replicates(args, name)}
            seeds_ = sorted(runs)
            nll = [runs[s][1]["test"]["nll_nats"] for s in seeds_]
            cells = [f"{v:.2f}" for v in nll] + [f"{max(nll) - min(nll):.2f}"]
            if versus and versus[0] in r:
                diffs = sorted([(args.seed, paired_difference(args, versus[0], name))] +
                               other_seed_differences(args, versus[0], name))
                d = [v for _, (v, _) in diffs]
                cells += [" / ".join(f"{v:+.2f} ± {se:.2f}" + (f" (seed {seed})" if len(
                    diffs) < len(seeds_) else "") for seed, (v, se) in diffs) +
                    f" vs {versus[1]}", f"{max(d) - min(d):.2f}" if len(d) > 1 else "-"]
            else:
                cells += ["-", "-"]
            rows.append((layers, x_k(name), label, seeds_, cells))
    if not rows:
        return []
    lines = ["", "Training seeds: the same configurations trained again with another seed "
             "(everything else equal; each seed's test NLL on the same test images). The "
             "spread (largest - smallest) is how much a training seed moves a number, to "
             "read beside the standard errors over images above.", "",
             "| layers | k | trained with | seeds | test NLL per seed (nats) | spread | "
             "paired difference per seed (nats) | spread |", "|---|---|---|---|---|---|---|---|"]
    for layers, k, label, seeds_, cells in rows:
        lines.append(f"| {layers} | {k} | {label} | {', '.join(map(str, seeds_))} | "
                     f"{' / '.join(cells[:-3])} | {cells[-3]} | {cells[-2]} | {cells[-1]} |")
    return lines


def subset_text(args, test):
    """(active-unit sentence, train-subset caveat) for the table header, from one run's
    evaluation JSON. Results evaluated before the data fixes (no
    `active_units_binarization_seed` in the JSON) counted active units on grey-level
    images and, on mnist_5k (then stored sorted by class), took class-biased prefixes:
    they are marked as such, to be re-measured."""
    if "active_units_binarization_seed" in test:
        seed = test["active_units_binarization_seed"]
        images = ("intensities" if seed is None else f"binarised once with seed {seed}")
        return (f"Active units: variance over the first 500 training images ({images}) of "
                f"the posterior mean > 0.01 (layer 1 + layer 2; layer 2's mean at one "
                f"sample of h1).", "")
    text = ("Active units: variance over the first 500 training images of the posterior "
            "mean > 0.01 (layer 1 + layer 2). **Measured before {}, to be re-measured:** "
            "the active units were counted on grey-level images, not on binary pixels as "
            "in training")
    if args.dataset != "mnist_5k":
        return text.format("a fix") + ".", ""
    return (text.format("two data fixes") + "; and mnist_5k's splits were then stored "
            "sorted by class, so the 500 active-unit images were 350 zeros and 150 ones and "
            "the first 1,000 training images (train NLL, all tables) were digits 0-2 only: "
            "class-biased subsets. Test NLLs (the whole test split) and training "
            "(reshuffled every pass) were not class-biased.",
            "; a class-biased subset before the fix, digits 0-2 only: to be re-measured")


def x_k(name):
    """k of a run name such as l1_iwae_k50 (fixed/fine-tuned runs: their base's k)."""
    return int(name.split("_k")[1].split("_")[0])


def schedule_text(args):
    """The training budget of every run in words, stage by stage for the paper schedule."""
    if args.schedule == "constant":
        return f"{args.epochs} passes over the training split at constant learning rate " \
               f"{args.learning_rate:g}"
    from tfp_iwae import schedule
    plan = schedule.stages("paper", args.train_size // args.batch_size,
                           args.learning_rate, 1, args.epochs)
    steps = ", ".join(f"{last - first:,}" for first, last, _ in plan)
    return (f"the paper's schedule (stage i: 3^i passes at {args.learning_rate:g} * "
            f"10^(-i/7), i = 0..7, 3,280 passes) compressed to {args.epochs} passes "
            f"(`--schedule_passes={args.epochs}`): stages of {steps} steps "
            f"({plan[-1][1]:,} steps of {args.batch_size} images), each at its paper "
            f"learning rate")


def table_rows(args, layers, paper_nll):
    """(run name, label, paper NLL or "-", (paired reference run, its label) or None) for
    the rows of one architecture: VAE and IWAE at each k, then the extras at the top k."""
    rows, top = [], max(args.ks)
    for k in sorted(args.ks):
        vae, iwae = paper_nll.get((layers, k), ("-", "-"))
        if k == 1:  # the IWAE objective at k = 1 is the VAE's: one model
            rows.append((f"l{layers}_vae_k1", "VAE = IWAE", vae, None))
            continue
        rows.append((f"l{layers}_vae_k{k}", "VAE", vae, None))
        rows.append((f"l{layers}_iwae_k{k}", "IWAE", iwae,
                     (f"l{layers}_vae_k{k}", f"VAE k={k}")))
    if top > 1:
        for extra, label in (("dreg", "IWAE bound, DReG gradient"),
                             ("piwae", f"PIWAE{piwae_params(top)}")):
            if extra in args.extras:
                rows.append((f"l{layers}_{extra}_k{top}", label, "-",
                             (f"l{layers}_iwae_k{top}", f"IWAE k={top}")))
    return rows


def piwae_params(k):
    from tfp_iwae import estimators
    return estimators.example_name("piwae", k)[len("piwae"):]


def claims(args, r):
    """Markdown bullets: the paper's headline claims, each with its numbers and verdict."""
    out = []

    def verdict(d, se):  # a claim that b's NLL is below a's
        return "**holds**" if d < -3 * se else ("fails (a tie)" if abs(d) <= 3 * se
                                                else "**fails** (the opposite holds)")
    for layers in args.layers:
        arch = f"{layers} layer{'s' if layers > 1 else ''}"
        for k in (k for k in sorted(args.ks) if k > 1):
            a, b = f"l{layers}_vae_k{k}", f"l{layers}_iwae_k{k}"
            if a in r and b in r:
                d, se = paired_difference(args, a, b)
                others = "".join(
                    f"; seed {seed}: {od:+.2f} ± {ose:.2f}, {verdict(od, ose)}"
                    for seed, (od, ose) in other_seed_differences(args, a, b))
                out.append(f"- IWAE NLL < VAE NLL, {arch}, k={k}: IWAE - VAE = {d:+.2f} ± "
                           f"{se:.2f} nats: {verdict(d, se)}" +
                           (f" (seed {args.seed}{others})" if others else "") + ".")
        ks = sorted(args.ks)
        names = [f"l{layers}_vae_k1" if k == 1 else f"l{layers}_iwae_k{k}" for k in ks]
        if len(ks) > 1 and all(n in r for n in names):
            steps = [(ks[i], ks[i + 1], *paired_difference(args, names[i], names[i + 1]))
                     for i in range(len(ks) - 1)]
            ok = all(d < -3 * se for _, _, d, se in steps)
            out.append(f"- IWAE NLL falls with k, {arch}: " + "; ".join(
                f"k={a} -> {b}: {d:+.2f} ± {se:.2f}" for a, b, d, se in steps) +
                f": {'**holds**' if ok else '**fails**'}.")
        pairs = [(k, r[f"l{layers}_vae_k{k}"], r[f"l{layers}_iwae_k{k}"])
                 for k in ks if k > 1 and f"l{layers}_vae_k{k}" in r
                 and f"l{layers}_iwae_k{k}" in r]
        if pairs:
            au = [(k, sum(v["test"]["active_units"]), sum(i["test"]["active_units"]))
                  for k, v, i in pairs]
            ok = all(i > v for _, v, i in au)
            out.append(f"- IWAE keeps more active units, {arch}: " + "; ".join(
                f"k={k}: IWAE {i} vs VAE {v}" for k, v, i in au) +
                f": {'**holds**' if ok else '**fails**'}.")
    return out


def machine_text(r):
    """Where a set's runs trained: the CPU cores and TensorFlow threads each run recorded.
    Results without the record predate it; all of those were made on the 2-core machine."""
    seen = {(x["machine"]["cpu_cores"], x["machine"]["threads"]) if "machine" in x
            else (2, 2) for x in r.values()}
    return "; ".join(f"{cores} CPU cores" + ("" if threads >= cores else
                                            f", {threads} TensorFlow thread(s) per run "
                                            f"(runs trained {cores // threads} at a time)")
                     for cores, threads in sorted(seen))


def tables(args, results):
    r = {name: res for name, res in results.items() if res is not None}
    mnist = args.dataset in MNIST_DATASETS
    paper_nll = PAPER_NLL if mnist else {}
    paper_fixed = PAPER_FIXED_IWAE if mnist else {}
    any_run = next(iter(r.values()))
    protocol = any_run["test"]["protocol"]
    images = any_run["test"]["images"]
    active_text, train_caveat = subset_text(args, any_run["test"])
    seeds_table = seed_lines(args, r, paper_nll)
    seed_note = ("seed-to-seed variation: see the training-seeds table below" if seeds_table
                 else "one training seed: seed-to-seed variation is not included")
    lines = [
        f"**{protocol}**; {args.train_size:,} training images; budget per configuration: "
        f"{schedule_text(args)}; batch {args.batch_size}, Adam (eps 1e-4), seed {args.seed}, "
        f"XLA, {machine_text(r)}. Test NLL = -L_{args.eval_samples} averaged over {images:,} test "
        f"images (fixed binarisation of the test images, seed 0), ± one standard error over "
        f"images ({seed_note}); *paired* "
        f"differences compare two models on the same test images. Train NLL: the same "
        f"bound on the first 1,000 training images, binarised once with seed 0"
        f"{train_caveat}. {active_text} " +
        ("Paper: Burda et al. (2015) table 1, full dynamically binarised MNIST after 3,280 "
         "passes; *- paper* is our test NLL minus the paper's." if mnist else
         "The paper reports no numbers for this dataset."),
        "",
        "| layers | k | trained with | test NLL (nats) | bits/dim | paper | - paper | "
        "train NLL | test - train | active units | paired difference (nats) | train min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for layers in args.layers:
        for name, label, paper_value, versus in table_rows(args, layers, paper_nll):
            paper = (f"{paper_value:.2f}" if isinstance(paper_value, float)
                     else paper_value)
            x = r.get(name)
            if x is None:
                lines.append(f"| {layers} | {x_k(name)} | {label} | not run yet | - | "
                             f"{paper} | - | - | - | - | - | - |")
                continue
            nll, bpd, au = nll_cell(x)
            te, tr = x["test"]["nll_nats"], -x["train"]["log_likelihood_nats"]
            gap = f"{te - paper_value:+.2f}" if isinstance(paper_value, float) else "-"
            diff = "-"
            if versus and versus[0] in r:
                diff = f"{paired(args, versus[0], name)} vs {versus[1]}"
            lines.append(f"| {layers} | {x_k(name)} | {label} | {nll} | {bpd} | {paper} | "
                         f"{gap} | {tr:.2f} | {te - tr:+.2f} | {au} | {diff} | "
                         f"{x['train_seconds'] / 60:.1f} |")
    lines += seeds_table
    claim_lines = claims(args, r)
    if claim_lines:
        lines += ["", "The paper's claims, checked (a paired difference counts when it is "
                  "beyond 3 standard errors):", ""] + claim_lines
    top = max(args.ks)
    dyn, fixed = r.get(f"l1_iwae_k{top}"), r.get(f"l1_iwae_k{top}_fixed")
    if dyn and fixed:
        lines += ["", f"Binarisation, 1 layer, IWAE k={top} (train bound: first 1,000 "
                  f"training images binarised with seed 0, which is exactly the fixed run's "
                  f"training data):", "",
                  "| training data | train NLL (nats) | test NLL (nats) | bits/dim "
                  "| active | test NLL - train NLL | fixed - dynamic test NLL (paired) | "
                  "paper test NLL |",
                  "|---|---|---|---|---|---|---|---|"]
        for label, x, paper in (("dynamic", dyn, paper_nll.get((1, top), ("-", "-"))[1]),
                                ("fixed", fixed, paper_fixed.get(top, "-"))):
            nll, bpd, au = nll_cell(x)
            tr = x["train"]["log_likelihood_nats"]
            gap = x["test"]["nll_nats"] + tr
            diff = paired(args, f"l1_iwae_k{top}", f"l1_iwae_k{top}_fixed") \
                if label == "fixed" else "-"
            lines.append(f"| {label} | {-tr:.2f} | {nll} | {bpd} | {au} | {gap:.2f} | "
                         f"{diff} | {paper} |")
    ft = [(f"l1_{a}_k{top}", f"l1_{a}_k{top}_then_{b}") for a in ("vae", "iwae")
          for b in ("iwae", "vae")]
    if all(base in r and then in r for base, then in ft):
        lines += ["", f"Fine-tuning (paper sec. 5.2), 1 layer, k={top}: each trained model "
                  f"continued for {args.finetune_epochs} more passes (fresh Adam state) with "
                  f"the other objective, and with its own as the control:", "",
                  "| model | test NLL (nats) | bits/dim | active units | vs the control "
                  "(paired) |", "|---|---|---|---|---|"]
        for base in ("vae", "iwae"):
            name = f"l1_{base}_k{top}"
            lines.append(f"| {base.upper()} ({args.epochs} passes) | " +
                         " | ".join(nll_cell(r[name])) + " | - |")
            for then in ("iwae", "vae"):
                diff = "control" if then == base else paired(
                    args, f"{name}_then_{base}", f"{name}_then_{then}")
                lines.append(f"| {base.upper()} → {then.upper()} ({args.epochs} + "
                             f"{args.finetune_epochs} passes) | " + " | ".join(
                                 nll_cell(r[f"{name}_then_{then}"])) + f" | {diff} |")
    lines += ["", "Commands (one configuration each; `experiments/results.py` runs them all):",
              "", "```"]
    for name, res in r.items():  # as they run from the repository root by default
        cmds = commands(argparse.Namespace(**dict(
            vars(args), runs_dir=os.path.join(ROOT, "runs", "results"))), res)
        lines.append(show(cmds["train"]))
        lines.append(show(cmds["evaluate"]))
    lines += ["```"]
    return "\n".join(lines) + "\n"


def plot_curves(args, results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    top = max(args.ks)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for layers in args.layers:
        for name, style in ((f"l{layers}_vae_k1", "--"), (f"l{layers}_vae_k{top}", ":"),
                            (f"l{layers}_iwae_k{top}", "-")):
            res = results.get(name)
            if not res or "bound_curve" not in res["test"]:
                continue
            c = res["test"]["bound_curve"]
            label = (f"{layers} layer{'s' if layers > 1 else ''}, "
                     + ("VAE k=1" if name.endswith("vae_k1") else
                        ("VAE" if "_vae_" in name else "IWAE") + f" k={top}"))
            ax.errorbar(c["k"], c["bound_nats"], yerr=c["standard_error_nats"], ls=style,
                        marker="o", ms=3, capsize=2, label=label)
    style_log_x(ax, "k (importance samples at evaluation)",
                "test L_k (nats), mean over images", f"Test bound against k ({args.name})", 8)
    save(fig, path)


def style_log_x(ax, xlabel, ylabel, title, legend_fontsize):
    """Finishes one panel of a results plot: log x axis, labels, grid, legend."""
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=legend_fontsize)


def save(fig, path):
    """Writes a finished results plot to path and frees it."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def tf_checkpoint_exists(logdir):
    path = os.path.join(logdir, "checkpoints", "checkpoint")
    return os.path.exists(path)


def budget_points(docs, dataset):
    """The k=5 VAE/IWAE pairs of every committed result set of `dataset` (docs/results/
    *.json, L_5000 over the whole test split only), as {(layers, objective): {(schedule,
    passes): [(seed, test NLL, standard error), ...]}}: one entry per training seed."""
    points = {}
    for f in sorted(glob.glob(os.path.join(docs, "results", "*.json"))):
        with open(f) as fh:
            res = json.load(fh)
        a, runs = res.get("args", {}), res.get("runs", {})
        if a.get("dataset") != dataset or a.get("eval_images", 0) != 0:
            continue
        for layers in (1, 2):
            for objective in ("vae", "iwae"):
                x = runs.get(f"l{layers}_{objective}_k5")
                if x:
                    budget = (a.get("schedule", "constant"), a["epochs"])
                    points.setdefault((layers, objective), {}).setdefault(budget, []).append(
                        (a.get("seed", 0), x["test"]["nll_nats"],
                         x["test"]["nll_standard_error_nats"]))
    return points


def plot_budgets(args, path):
    """Test NLL of the k=5 VAE/IWAE pairs against training passes, one panel per number of
    stochastic layers that has the pair at two budgets or more, one point per committed
    result set and training seed (a line through the mean over seeds), beside the paper's
    numbers. Returns False (and draws nothing) when no panel has two budgets."""
    points = budget_points(args.docs, args.dataset)
    panels = [layers for layers in (1, 2)
              if len(set(points.get((layers, "vae"), {})) | set(points.get((layers, "iwae"), {})))
              >= 2]
    if not panels:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.2), dpi=110,
                             squeeze=False)
    colors = {"vae": "tab:blue", "iwae": "tab:orange"}
    for ax, layers in zip(axes[0], panels):
        for objective in ("vae", "iwae"):
            by_budget = points.get((layers, objective), {})
            for schedule, marker in (("constant", "s"), ("paper", "o")):
                budgets = sorted(b for b in by_budget if b[0] == schedule)
                if not budgets:
                    continue
                label = (f"{objective.upper()} k=5, " + ("paper schedule compressed"
                         if schedule == "paper" else "constant lr"))
                for b in budgets:  # every seed's point with its standard error over images
                    _, y, e = zip(*by_budget[b])
                    ax.errorbar([b[1]] * len(y), y, yerr=e, marker=marker, ls="none",
                                color=colors[objective], capsize=2, label=label)
                    label = None
                if schedule == "paper" and len(budgets) > 1:
                    ax.plot([b[1] for b in budgets],
                            [np.mean([p[1] for p in by_budget[b]]) for b in budgets],
                            color=colors[objective], ls="-")
            paper = PAPER_NLL[(layers, 5)][objective == "iwae"]
            ax.axhline(paper, color=colors[objective], ls=":", lw=1)
            ax.annotate(f"paper {objective.upper()} {paper} (3,280 passes)", (1, paper),
                        xycoords=("axes fraction", "data"), ha="right", va="bottom",
                        fontsize=7)
        style_log_x(ax, "passes over the training images", "test NLL = -L_5000 (nats)",
                    f"{layers} stochastic layer{'s' if layers > 1 else ''}, k=5: test NLL "
                    f"against budget ({args.dataset})", 7)
    save(fig, path)
    return True


def update_results_page(path, name, text):
    """Replaces the section of set `name` in the results page (between `<!--
    results:<name>:start -->` and `<!-- results:<name>:end -->`) with `text`; a set the
    page does not hold yet gets a new section at its end (a new page if there is none)."""
    start, end = f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"
    page = ""
    if os.path.exists(path):
        with open(path) as f:
            page = f.read()
    if start in page and end in page:
        head, rest = page.split(start, 1)
        _, tail = rest.split(end, 1)
        page = head + start + "\n" + text + end + tail
    else:
        page = (page or "# Results\n\nWhat the models trained by experiments/results.py "
                "score, set by set.\n")
        page = page.rstrip("\n") + f"\n\n## {name}\n\n{start}\n{text}{end}\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(page)
    os.replace(path + ".tmp", path)
    print(f"updated {path}")


def figures(args, best, budget, where):
    """Markdown lines showing the set's figures, linked from a page in directory `where`."""
    def link(png):
        return os.path.relpath(os.path.join(args.docs, png), where)
    text = (f"\n![test bound against k]({link(f'bound_vs_k_{args.name}.png')})\n"
            f"![samples and reconstructions of {best}, the lowest test NLL of the set]"
            f"({link(f'samples_{args.name}.png')})\n")
    if budget:
        text += (f"![test NLL of the k=5 VAE/IWAE pairs against training passes, every "
                 f"committed {args.dataset} set]"
                 f"({link(f'nll_vs_passes_{args.dataset}.png')})\n")
    return text


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tfp_iwae import data
    args.train_size = len(data.load_array(args.dataset, "train", data_dir=args.data_dir))
    runs = plan(args)
    print(f"{len(runs)} runs for {args.name} into {os.path.join(args.runs_dir, args.name)}",
          flush=True)
    t0 = time.perf_counter()
    results = run_all(args, runs)
    if args.dry_run:
        return
    os.makedirs(os.path.join(args.docs, "results"), exist_ok=True)
    done = {name: res for name, res in results.items() if res is not None}
    if not done:
        raise SystemExit(f"no results of {args.name} yet: nothing to report.")
    best = min(done, key=lambda name: done[name]["test"]["nll_nats"])  # lowest test NLL
    samples_png = os.path.join(args.docs, f"samples_{args.name}.png")
    if tf_checkpoint_exists(run_dir(args, best)):
        execute([sys.executable, "launch/sample.py", f"--logdir={run_dir(args, best)}",
                 f"--out={samples_png}"], os.path.join(run_dir(args, best), "console.log"),
                thread_env(1))
    else:  # a machine with the committed results but not the runs
        print(f"no checkpoint of {best} here: {samples_png} left as it is", flush=True)
    curve_png = os.path.join(args.docs, f"bound_vs_k_{args.name}.png")
    plot_curves(args, results, curve_png)
    text = tables(args, results)
    committed_args = {k: v for k, v in vars(args).items()
                      if k not in ("runs_dir", "docs", "results_page", "dry_run",
                                   "report_only", "parallel", "only")}
    committed_args["data_dir"] = portable_path(args.data_dir)
    with open(os.path.join(args.docs, "results", f"{args.name}.json"), "w") as f:
        json.dump({"args": committed_args,
                   "runs": {name: res if res is None else
                            portable_result(res, run_dir(args, name))
                            for name, res in results.items()}}, f, indent=1)
    # (before the budget plot, which reads every committed set's JSON, this one's too)
    budget = plot_budgets(args, os.path.join(args.docs, f"nll_vs_passes_{args.dataset}.png"))
    table_md = os.path.join(args.docs, "results", f"{args.name}.md")
    with open(table_md, "w") as f:
        f.write(text + figures(args, best, budget, os.path.dirname(table_md)))
    text += figures(args, best, budget, os.path.dirname(os.path.abspath(args.results_page)))
    update_results_page(args.results_page, args.name, text)
    print(text)
    print(f"done in {(time.perf_counter() - t0) / 60:.1f} min; compare the runs in "
          f"TensorBoard: tensorboard --logdir {tensorboard_logdir(args)}", flush=True)


if __name__ == "__main__":
    main()
