"""`experiments/results.py`: at a tiny budget (one configuration, end to end) it produces
the results table, JSON, plots and its docs/results.md section from the command-line
tools; its parts (claims, parallel runs, portable paths) in process."""

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from helpers import ROOT

@pytest.mark.slow
def test_results_script_writes_table_json_plots_and_results_page_section(tmp_path):
    docs, runs = tmp_path / "docs", tmp_path / "runs"
    docs.mkdir()
    page = docs / "results.md"  # the default --results_page: <docs>/results.md
    page.write_text("intro\n<!-- results:mnist_5k:start -->\nold\n"
                    "<!-- results:mnist_5k:end -->\nafter\n")
    cmd = [sys.executable, os.path.join(ROOT, "experiments", "results.py"), "--layers=1",
           "--ks=1", "--extras=", "--epochs=1", "--eval_samples=20", "--eval_images=40",
           f"--runs_dir={runs}", f"--docs={docs}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads((docs / "results" / "mnist_5k.json").read_text())
    run = res["runs"]["l1_vae_k1"]
    test = run["test"]
    assert test["images"] == 40 and test["num_samples"] == 20
    assert test["bound_curve"]["k"] == [1, 2, 5, 10, 20]
    # one pass over 3,500 digits from the data-mean init: better than the init, not a miracle
    assert 90 < test["nll_nats"] < 220
    assert "launch/train.py" in run["commands"]["train"]
    cores = os.cpu_count() or 1
    threads = int(os.environ.get("TF_NUM_INTRAOP_THREADS", cores))  # --parallel=1: as set
    assert run["machine"] == {"cpu_cores": cores, "threads": threads}
    table = (docs / "results" / "mnist_5k.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| 1 | 1 |"))
    assert f"{test['nll_nats']:.2f}" in row and "86.76" in row  # ours beside the paper's
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("after\n") and "old" not in text
    # The set's tables, then its figures, each linked from the page's own directory.
    tables, figures = table.split("\n![", 1)
    assert tables in text
    assert "](../bound_vs_k_mnist_5k.png)" in figures  # from docs/results/mnist_5k.md
    assert "](bound_vs_k_mnist_5k.png)" in text and "](samples_mnist_5k.png)" in text
    # Committed results name the checkpoint relative to the run's logdir, no machine path.
    committed = json.loads((docs / "results" / "mnist_5k" / "l1_vae_k1.json").read_text())
    assert committed["test"]["checkpoint"].startswith("checkpoints/ckpt-")
    assert committed["train"]["checkpoint"] == committed["test"]["checkpoint"]
    assert res["runs"]["l1_vae_k1"]["test"]["checkpoint"] == committed["test"]["checkpoint"]
    for png in ("bound_vs_k_mnist_5k.png", "samples_mnist_5k.png"):
        assert tf.io.decode_png(tf.io.read_file(str(docs / png))).shape[0] > 100

    # A machine with the committed results (docs/results/mnist_5k/) but none of the runs:
    # nothing is trained or evaluated again, and the same table comes out.
    assert sorted(p.name for p in (docs / "results" / "mnist_5k").iterdir()) == [
        "l1_vae_k1.json", "l1_vae_k1_test_ll.npy"]
    fresh = [c for c in cmd if not c.startswith("--runs_dir")] + [
        f"--runs_dir={tmp_path / 'elsewhere'}"]
    proc = subprocess.run(fresh, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "[l1_vae_k1] committed" in proc.stdout and "$ python launch/" not in proc.stdout
    assert (docs / "results" / "mnist_5k.md").read_text() == table
    # The same --name with another budget is refused, naming the way out.
    other = [c if c != "--epochs=1" else "--epochs=2" for c in cmd]
    proc = subprocess.run(other, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode != 0 and "use another --name" in proc.stderr


def _results_module(name="results"):
    """experiments/<name>.py as a module (the experiment scripts are not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "experiments", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("shift,verdict", [(-0.5, "**holds**"), (+0.1, "fails (a tie)"),
                                           (+0.5, "**fails** (the opposite holds)")])
def test_claims_use_paired_differences_beyond_three_standard_errors(tmp_path, shift,
                                                                    verdict):
    """IWAE - VAE is the mean over test images of the per-image NLL differences; its
    standard error is their std / sqrt(n). Per-image noise of std 1 over n = 400 images
    gives SE 0.05: a shift of 0.5 nats is 10 SE (a verdict), 0.1 nats (2 SE) a tie."""
    results = _results_module()
    args = results.parse_args(["--layers=1", "--ks=1,5", f"--docs={tmp_path}",
                               "--name=t", "--extras="])
    rng = np.random.default_rng(0)
    base = rng.normal(-90.0, 5.0, size=400)
    noise = rng.normal(0.0, 1.0, size=400)
    noise -= noise.mean()  # the mean difference is exactly `shift`
    lls = {"l1_vae_k1": base - 2.0 + 0.1 * noise, "l1_vae_k5": base,
           "l1_iwae_k5": base - shift + noise}
    r = {}
    for name, ll in lls.items():
        os.makedirs(tmp_path / "results" / "t", exist_ok=True)
        np.save(results.committed(args, name)[1], ll.astype(np.float32))
        r[name] = {"test": {"active_units": [20 if "vae" in name else 30]}}
    text = "\n".join(results.claims(args, r))
    assert (f"IWAE NLL < VAE NLL, 1 layer, k=5: IWAE - VAE = {shift:+.2f} ± 0.05 nats: "
            f"{verdict}.") in text
    # k=1 -> 5: NLL falls by 2 - shift nats, beyond 3 SE in every case here
    assert f"k=1 -> 5: {shift - 2.0:+.2f}" in text and "falls with k, 1 layer" in text
    assert "IWAE keeps more active units, 1 layer: k=5: IWAE 30 vs VAE 20: **holds**" in text


def test_parallel_runs_share_the_cores_and_fine_tuning_waits_for_its_base(tmp_path, monkeypatch):
    """--parallel=N: N runs at once, each with cores // N TensorFlow threads; a run that
    starts from another's checkpoint (fine-tuning) starts only after that run is done; the
    results come back in plan order whatever order the runs finish in."""
    import threading
    import time as time_module
    results = _results_module()
    args = results.parse_args(["--layers=1", "--ks=5", "--extras=finetune", "--parallel=2",
                               f"--docs={tmp_path}", f"--runs_dir={tmp_path}", "--name=t"])
    runs = results.plan(args)
    done, running, peak, lock = set(), set(), [0], threading.Lock()

    def fake_run(args_, run):
        with lock:
            assert run["init_from"] is None or run["init_from"] in done, run["name"]
            running.add(run["name"])
            peak[0] = max(peak[0], len(running))
        time_module.sleep(0.2 if run["objective"] == "vae" else 0.05)  # finish out of order
        with lock:
            running.discard(run["name"])
            done.add(run["name"])
        return {"name": run["name"]}

    monkeypatch.setattr(results, "do_run", fake_run)
    out = results.run_all(args, runs)
    assert list(out) == [r["name"] for r in runs] and len(runs) == 6  # 2 bases, 4 fine-tunes
    assert all(out[name]["name"] == name for name in out)
    assert peak[0] == 2
    env = results.thread_env(2)
    assert env["TF_NUM_INTRAOP_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert "TF_NUM_INTRAOP_THREADS" not in results.thread_env(1) or \
        results.thread_env(1)["TF_NUM_INTRAOP_THREADS"] == os.environ["TF_NUM_INTRAOP_THREADS"]
    with pytest.raises(SystemExit):
        results.parse_args(["--parallel=0"])


@pytest.mark.slow
def test_gradient_snr_script_measures_each_estimator_on_a_trained_run(trained_run, tmp_path):
    """At k=1 the IWAE gradient is the VAE gradient (softmax over one sample is 1): with
    the same seeds their SNRs are equal; at k=5 they are different estimators."""
    snr = _results_module("gradient_snr")
    logdir, _ = trained_run
    out = str(tmp_path / "snr")
    common = [f"--runs_dir={os.path.dirname(logdir)}", f"--runs={os.path.basename(logdir)}",
              "--estimators=vae,iwae", "--batches=2", "--repeats=4", "--batch_size=8"]
    snr.main(common + ["--num_samples=1", f"--out={out}"])
    res = json.loads(open(out + ".json").read())["runs"][os.path.basename(logdir)]
    assert res["k"] == 1
    est = res["estimators"]
    for group in ("encoder", "decoder"):
        assert 0 < est["vae"][group]["snr"] < np.inf
        assert est["iwae"][group]["snr"] == pytest.approx(est["vae"][group]["snr"], rel=1e-5)
    rows = [line.split(" | ") for line in open(out + ".md")
            if line.startswith("| ")][1:]  # after the header row
    assert [(r[2], r[4]) for r in rows] == [("1", "vae"), ("1", "iwae")]  # k, estimator
    snr.main(common + ["--num_samples=5", f"--out={out}"])
    est = json.loads(open(out + ".json").read())["runs"][os.path.basename(logdir)]["estimators"]
    assert est["iwae"]["encoder"]["snr"] != pytest.approx(est["vae"]["encoder"]["snr"], rel=1e-3)
    with pytest.raises(SystemExit):
        snr.main(common + ["--repeats=1", f"--out={out}"])


def test_committed_results_name_no_path_of_the_machine_that_made_them(tmp_path):
    # A run's checkpoint is committed relative to its logdir and paths beside the
    # repository (runs, ../shared/data) relative to it; system paths such as Debian's
    # dataset directory stay as typed in the commands.
    results = _results_module()
    logdir = os.path.join(results.ROOT, "runs", "results", "s", "l1_vae_k5")
    ckpt = os.path.join(logdir, "checkpoints", "ckpt-29800")
    out = results.portable_result({"test": {"checkpoint": ckpt, "nll_nats": 1.5},
                                   "train": {"checkpoint": "checkpoints/ckpt-1"},
                                   "name": "l1_vae_k5"}, logdir)
    assert out == {"test": {"checkpoint": "checkpoints/ckpt-29800", "nll_nats": 1.5},
                   "train": {"checkpoint": "checkpoints/ckpt-1"}, "name": "l1_vae_k5"}
    beside = os.path.join(os.path.dirname(results.ROOT), "shared", "data", "mnist")
    assert results.portable_path(beside) == os.path.join("..", "shared", "data", "mnist")
    assert results.portable_path("../shared/data") == "../shared/data"
    shown = results.show([sys.executable, "launch/train.py", f"--logdir={logdir}",
                          f"--data_dir={beside}", "--data_dir=/usr/share/datasets/x"])
    assert shown == ("python launch/train.py --logdir=runs/results/s/l1_vae_k5 "
                     "--data_dir=../shared/data/mnist --data_dir=/usr/share/datasets/x")
    # ... and so are the files committed under docs/results.
    found = []
    for folder, _, files in os.walk(os.path.join(ROOT, "docs", "results")):
        for name in files:
            if name.endswith(".json"):
                with open(os.path.join(folder, name)) as f:
                    found += [(name, line.strip()) for line in f if '"/' in line]
    assert not found, found[:5]


def test_results_page_section_is_replaced_or_added(tmp_path):
    results = _results_module()
    page = tmp_path / "results.md"
    results.update_results_page(str(page), "a", "first\n")
    text = page.read_text()
    assert text.startswith("# Results\n") and "## a\n\n<!-- results:a:start -->\nfirst\n" \
        "<!-- results:a:end -->\n" in text
    results.update_results_page(str(page), "b", "other\n")
    results.update_results_page(str(page), "a", "second\n")
    text = page.read_text()
    assert "first" not in text and text.count("<!-- results:a:start -->") == 1
    assert text.index("second") < text.index("## b") < text.index("other")


def test_a_set_trained_again_with_another_seed_gives_the_seed_spread(tmp_path):
    """Sets whose committed runs share every setting but the training seed are replicates:
    the seeds table lists each seed's test NLL and paired difference (the mean of the
    per-image differences on the same test images) and their spread, max - min; the
    IWAE < VAE claim gives every seed's verdict. A set with other settings (another
    budget) is no replicate."""
    results = _results_module()
    rng = np.random.default_rng(0)
    base = rng.normal(-90.0, 5.0, size=400)
    # seed 0: IWAE 0.5 nats better; seed 1: the VAE 0.3 worse, IWAE 0.4 better than it.
    sets = {("t", 0, 10): {"l1_vae_k5": base, "l1_iwae_k5": base + 0.5},
            ("t_seed1", 1, 10): {"l1_vae_k5": base - 0.3, "l1_iwae_k5": base + 0.1},
            ("t_longer", 1, 20): {"l1_vae_k5": base + 5, "l1_iwae_k5": base + 5}}
    r = {}
    for (set_name, seed, epochs), lls in sets.items():
        args = results.parse_args(["--layers=1", "--ks=5", f"--docs={tmp_path}",
                                   f"--name={set_name}", "--extras=", f"--seed={seed}",
                                   f"--epochs={epochs}"])
        os.makedirs(tmp_path / "results" / set_name)
        for name, ll in lls.items():
            path, npy = results.committed(args, name)
            np.save(npy, ll.astype(np.float32))
            res = {"test": {"nll_nats": float(-ll.mean()), "active_units": [20]},
                   "settings": results.settings(args)}
            with open(path, "w") as f:
                json.dump(res, f)
            r.setdefault(set_name, {})[name] = res
    args = results.parse_args(["--layers=1", "--ks=5", f"--docs={tmp_path}", "--name=t",
                               "--extras=", "--seed=0", "--epochs=10"])
    assert sorted(results.replicates(args, "l1_vae_k5")) == [1]  # not t_longer
    table = "\n".join(results.seed_lines(args, r["t"], {}))
    nll_vae, nll_iwae = -base.mean(), -base.mean() - 0.5
    assert (f"| 1 | 5 | VAE | 0, 1 | {nll_vae:.2f} / {nll_vae + 0.3:.2f} | 0.30 | - | - |"
            in table)
    assert (f"| 1 | 5 | IWAE | 0, 1 | {nll_iwae:.2f} / {nll_iwae + 0.4:.2f} | 0.40 | "
            f"-0.50 ± 0.00 / -0.40 ± 0.00 vs VAE k=5 | 0.10 |") in table
    claim = "\n".join(results.claims(args, r["t"]))
    assert ("IWAE - VAE = -0.50 ± 0.00 nats: **holds** (seed 0; seed 1: -0.40 ± 0.00, "
            "**holds**).") in claim
    # The seed 1 set's table lists the same rows in seed order, whichever set writes it.
    args1 = results.parse_args(["--layers=1", "--ks=5", f"--docs={tmp_path}",
                                "--name=t_seed1", "--extras=", "--seed=1", "--epochs=10"])
    assert table == "\n".join(results.seed_lines(args1, r["t_seed1"], {}))
    # Without another seed committed: no table, and the claim names no seed.
    shutil.rmtree(tmp_path / "results" / "t_seed1")
    assert results.seed_lines(args, r["t"], {}) == []
    assert "(seed" not in "\n".join(results.claims(args, r["t"]))


def test_budget_figure_has_a_panel_per_layer_count_trained_at_two_budgets(tmp_path):
    """The passes figure gathers the k=5 VAE/IWAE pairs of every committed set of the
    dataset that measured L_5000 on the whole test split, one point per training seed; a
    panel is drawn for each number of layers with the pair at two budgets or more."""
    results = _results_module()
    os.makedirs(tmp_path / "results")

    def commit(name, runs, dataset="mnist", epochs=10, seed=0, eval_images=0):
        args = {"dataset": dataset, "schedule": "paper", "epochs": epochs, "seed": seed,
                "eval_images": eval_images}
        res = {f"l{layers}_{objective}_k5": {"test": {"nll_nats": nll,
                                                      "nll_standard_error_nats": 0.2}}
               for (layers, objective), nll in runs.items()}
        with open(tmp_path / "results" / f"{name}.json", "w") as f:
            json.dump({"args": args, "runs": res}, f)

    both = {(1, "vae"): 105.0, (1, "iwae"): 104.5, (2, "vae"): 104.0, (2, "iwae"): 105.5}
    commit("p10", both)
    commit("p10_part", {(1, "vae"): 99.0}, eval_images=2000)  # a bound on a subset: left out
    commit("fashion", {(1, "vae"): 99.0}, dataset="fashion_mnist", epochs=600)
    args = argparse.Namespace(docs=str(tmp_path), dataset="mnist")
    png = tmp_path / "nll_vs_passes.png"
    assert not results.plot_budgets(args, str(png)) and not png.exists()  # one budget only

    commit("p600", {(1, "vae"): 87.4, (1, "iwae"): 86.8}, epochs=600)
    commit("p600_seed1", {(1, "vae"): 87.7, (1, "iwae"): 86.9}, epochs=600, seed=1)
    points = results.budget_points(str(tmp_path), "mnist")
    assert points[(1, "vae")] == {("paper", 10): [(0, 105.0, 0.2)],
                                  ("paper", 600): [(0, 87.4, 0.2), (1, 87.7, 0.2)]}
    assert list(points[(2, "iwae")]) == [("paper", 10)]
    assert results.plot_budgets(args, str(png))
    one_panel = tf.io.decode_png(tf.io.read_file(str(png))).shape

    commit("l2_p600", {(2, "vae"): 86.0, (2, "iwae"): 85.0}, epochs=600)
    assert results.plot_budgets(args, str(png))
    two_panels = tf.io.decode_png(tf.io.read_file(str(png))).shape
    assert two_panels[0] == one_panel[0] and two_panels[1] == 2 * one_panel[1]


def test_only_trains_the_named_runs_and_reports_the_rest_from_what_is_committed(
        tmp_path, capsys):
    """--only=NAMES splits a set: only the named runs are trained (here: their commands
    printed by --dry_run), the others come from their committed results or show as not run
    yet; a name not in the set, or a fine-tuning run whose base is neither named nor
    trained here, is refused naming --only."""
    results = _results_module()
    common = ["--layers=2", "--ks=5", "--extras=", f"--docs={tmp_path}",
              f"--runs_dir={tmp_path / 'runs'}", "--name=t"]
    args = results.parse_args(common + ["--only=l2_iwae_k5", "--dry_run"])
    assert args.only == ["l2_iwae_k5"]
    args.train_size = 3500  # (main reads it from the data)
    out = results.run_all(args, results.plan(args))
    printed = capsys.readouterr().out
    assert out == {"l2_vae_k5": None, "l2_iwae_k5": None}
    assert "[l2_vae_k5] not run yet (not in --only)" in printed
    assert "--objective=iwae" in printed and "--objective=vae" not in printed
    # The run left out comes from its committed result when there is one.
    os.makedirs(tmp_path / "results" / "t")
    with open(results.committed(args, "l2_vae_k5")[0], "w") as f:
        json.dump({"test": {"nll_nats": 85.0}, "settings": results.settings(args)}, f)
    assert results.run_all(args, results.plan(args))["l2_vae_k5"]["test"]["nll_nats"] == 85.0

    with pytest.raises(SystemExit):
        results.parse_args(common + ["--only=l2_iwae_k50"])
    assert ("--only: no run l2_iwae_k50 in this set; its runs: l2_vae_k5, l2_iwae_k5"
            in capsys.readouterr().err)
    finetune = ["--layers=1", "--ks=5", "--extras=finetune", f"--docs={tmp_path}",
                f"--runs_dir={tmp_path / 'runs'}", "--name=f"]
    with pytest.raises(SystemExit):
        results.parse_args(finetune + ["--only=l1_iwae_k5_then_vae"])
    assert ("l1_iwae_k5_then_vae starts from l1_iwae_k5, which is not trained here: add "
            "l1_iwae_k5 to --only") in capsys.readouterr().err
    assert results.parse_args(finetune + ["--only=l1_iwae_k5,l1_iwae_k5_then_vae"]).only == [
        "l1_iwae_k5", "l1_iwae_k5_then_vae"]
