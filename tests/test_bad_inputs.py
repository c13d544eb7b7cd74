"""Catalogue of bad inputs across the API and the launchers, each with the error it gets.

Every case: a clear message naming what is wrong and what was expected; launchers exit
non-zero; no completed checkpoint is lost or overwritten.
"""

import glob
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

import tfp_iwae
from tfp_iwae import data, estimators
from helpers import FAST, run


# ---- library API ------------------------------------------------------------------------
API_CASES = [
    ("k = 0", lambda: tfp_iwae.IWAE(1).log_weights(tf.zeros([2, 784]), 0),
     ValueError, r"`num_samples` must be >= 1"),
    ("wrong image shape", lambda: tfp_iwae.IWAE(1).log_weights(tf.zeros([2, 28, 28]), 5),
     ValueError, r"`x` must have shape \[..., 784\]"),
    ("x outside [0, 1], Bernoulli", lambda: tfp_iwae.IWAE(1, validate_args=True).log_weights(
        tf.fill([2, 784], 2.), 5), tf.errors.InvalidArgumentError,
     r"x must be in \[0, 1\] for a Bernoulli likelihood"),
    ("x with NaN", lambda: tfp_iwae.IWAE(1, validate_args=True).log_weights(
        tf.fill([2, 784], np.nan), 5), tf.errors.InvalidArgumentError, "x must be finite"),
    ("unknown estimator", lambda: estimators.get_estimator("drag"), ValueError,
     r"Unknown estimator 'drag'; known: iwae, vae, stl, dreg, rws"),
    ("unknown dataset", lambda: data.load("mnist2", "train"), data.DataError,
     r"Unknown dataset 'mnist2' \(flag --dataset\); known:"),
    ("negative batch size", lambda: data.load("mnist_5k", "train", batch_size=-4),
     data.DataError, r"`batch_size` \(flag --batch_size\) must be a positive integer"),
    ("marginal with k = 0", lambda: tfp_iwae.ImportanceWeightedMarginal(tfp_iwae.IWAE(1), 0),
     ValueError, "`num_samples` must be >= 1"),
]


@pytest.mark.parametrize("name,fn,exc,match", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input(name, fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()


@pytest.mark.parametrize("arr,match", [
    (np.full((3, 784), np.nan, np.float32), r"test.npz: contains NaN"),
    (np.zeros((0, 784), np.float32), r"test.npz: the split is empty"),
    (np.full((3, 784), -0.5, np.float32), r"must be in \[0, 1\] after scaling"),
], ids=["data with NaN", "empty split", "intensities below 0"])
def test_data_bad_arrays(tmp_path, arr, match):
    np.savez(tmp_path / "test.npz", x=arr)
    with pytest.raises(data.DataError, match=match):
        data.load("mnist", "test", data_dir=str(tmp_path))


def test_data_missing_and_corrupt_files(tmp_path):
    with pytest.raises(data.DataError, match=r"source='files' needs an existing --data_dir"):
        data.load_array("mnist", "test", data_dir=str(tmp_path / "nope"), source="files")
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(data.DataError, match=r"Could not read IDX file .*t10k-images"):
        data.load_array("mnist", "test", data_dir=str(tmp_path))


# ---- launchers ----------------------------------------------------------------------------
LAUNCHER_CASES = [
    (["--num_samples=0"], r"--num_samples: expected an integer >= 1, got 0"),
    (["--batch_size=-5"], r"--batch_size: expected an integer >= 1, got -5"),
    (["--objective=dreg2"], r"--objective: Unknown estimator 'dreg2'"),
    (["--dataset=cifar"], r"--dataset: expected one of binarized_mnist"),
    (["--objective=piwae(4,4)", "--num_samples=5"], r"M\*K = 16 samples .* num_samples is 5"),
    (["--schedule=cosine"], r"--schedule"),
    (["--learning_rate=-1"], r"--learning_rate: expected a positive number"),
    (["--objective=miwae", "--M=2"], r"--objective=miwae needs --M and --K"),
    (["--objective=iwae", "--beta=0.5"], r"--M/--K/--beta apply to miwae, piwae and ciwae"),
    (["--dataset=fashion_mnist", "--data_dir=/nonexistent", "--nodownload"],
     r"not prepared under data_dir='/nonexistent' \(flag --data_dir\)"),
]


@pytest.mark.slow
@pytest.mark.parametrize("flags,match", LAUNCHER_CASES, ids=[" ".join(c[0]) for c in
                                                              LAUNCHER_CASES])
def test_launcher_bad_flags(tmp_path, flags, match):
    proc = run("train.py", f"--logdir={tmp_path / 'r'}", "--max_steps=1", *flags)
    assert proc.returncode != 0
    assert re.search(match, proc.stderr), proc.stderr[-1500:]


@pytest.mark.slow
def test_logdir_whose_parent_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = run("train.py", f"--logdir={tmp_path / 'file' / 'run'}", "--max_steps=1")
    assert proc.returncode != 0
    assert re.search(r"--logdir: cannot create .*file/run", proc.stderr), proc.stderr[-1500:]


@pytest.mark.slow
def test_results_path_that_cannot_be_written(trained_run, tmp_path):
    logdir, _ = trained_run
    (tmp_path / "file").write_text("x")
    proc = run("evaluate.py", f"--logdir={logdir}", "--num_samples=2", "--max_images=5",
               f"--output={tmp_path / 'file' / 'res.json'}")
    assert proc.returncode != 0
    assert "--output: cannot write results to" in proc.stderr, proc.stderr[-1500:]


def copy_run(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)


@pytest.mark.slow
def test_truncated_latest_checkpoint_falls_back_without_losing_checkpoints(trained_run,
                                                                           tmp_path):
    logdir = copy_run(trained_run[0], tmp_path / "run")
    ckdir = os.path.join(logdir, "checkpoints")
    truncate(os.path.join(ckdir, "ckpt-300.data-00000-of-00001"))
    before = sorted(os.listdir(ckdir))
    # evaluate names the bad checkpoint and exits non-zero
    proc = run("evaluate.py", f"--logdir={logdir}", "--num_samples=2", "--max_images=5")
    assert proc.returncode != 0
    assert re.search(r"checkpoint .*ckpt-300.* could not be read", proc.stderr), proc.stderr
    assert sorted(os.listdir(ckdir)) == before
    # training resumes from the newest readable checkpoint, naming the one it skipped
    proc = run("train.py", f"--logdir={logdir}", "--max_steps=300", "--eval_every=0",
               "--checkpoint_every=100", "--diagnostics_every=300", "--diagnostics_repeats=4",
               *FAST)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "warning: skipped unreadable checkpoint" in proc.stdout and "ckpt-300" in proc.stdout
    assert re.search(r"resumed from .*ckpt-200 at step 200", proc.stdout)
    assert {"ckpt-100.index", "ckpt-200.index", "ckpt-300.index"} <= set(os.listdir(ckdir))
    tf.train.load_checkpoint(os.path.join(ckdir, "ckpt-300"))  # rewritten, readable


@pytest.mark.slow
def test_all_checkpoints_corrupt_is_an_error_and_nothing_is_deleted(trained_run, tmp_path):
    logdir = copy_run(trained_run[0], tmp_path / "run")
    ckdir = os.path.join(logdir, "checkpoints")
    for f in glob.glob(os.path.join(ckdir, "*.data-*")):
        truncate(f)
    before = sorted(os.listdir(ckdir))
    proc = run("train.py", f"--logdir={logdir}", "--max_steps=400", "--eval_every=0",
               "--diagnostics_every=300", "--diagnostics_repeats=4", *FAST)
    assert proc.returncode != 0
    assert "Could not restore any checkpoint" in proc.stderr
    assert sorted(os.listdir(ckdir)) == before


@pytest.mark.slow
def test_evaluate_a_checkpoint_of_another_architecture(trained_run, tmp_path):
    logdir = copy_run(trained_run[0], tmp_path / "run")
    cfg = os.path.join(logdir, "run_config.json")
    text = open(cfg).read().replace('"stochastic_layers": 1', '"stochastic_layers": 2')
    open(cfg, "w").write(text)
    proc = run("evaluate.py", f"--logdir={logdir}", "--num_samples=2", "--max_images=5")
    assert proc.returncode != 0
    assert re.search(r"checkpoint .* could not be read \(corrupt or incompatible\)",
                     proc.stderr), proc.stderr[-1500:]


@pytest.mark.parametrize("curve, match", [
    ("1,50", r"--curve_ks: each k must be in \[1, --num_samples=20\]"),
    ("1,x", r"--curve_ks: expected integers")])
def test_evaluate_curve_ks_outside_num_samples(trained_run, curve, match):
    logdir, _ = trained_run
    proc = run("evaluate.py", f"--logdir={logdir}", "--num_samples=20", "--max_images=5",
               f"--curve_ks={curve}")
    assert proc.returncode != 0
    assert re.search(match, proc.stderr), proc.stderr[-1500:]
