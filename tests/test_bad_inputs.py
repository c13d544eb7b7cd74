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
from tfp_iwae import data, estimators, memory, trainer
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
     r"^Unknown dataset name='mnist2'; known:"),
    ("negative batch size", lambda: data.load("mnist_5k", "train", batch_size=-4),
     data.DataError, r"^`batch_size=` must be a positive integer"),
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
    (np.full((3, 784), -0.5, np.float32), r"must be in \[0, 1\], found range \[-0.5, -0.5\] "
                                          r"in an array of dtype float32, used as it is"),
], ids=["data with NaN", "empty split", "intensities below 0"])
def test_data_bad_arrays(tmp_path, arr, match):
    np.savez(tmp_path / "test.npz", x=arr)
    with pytest.raises(data.DataError, match=match):
        data.load("mnist", "test", data_dir=str(tmp_path))


def test_data_missing_and_corrupt_files(tmp_path):
    with pytest.raises(data.DataError, match=r"source='files' needs an existing data_dir="):
        data.load_array("mnist", "test", data_dir=str(tmp_path / "nope"), source="files")
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(data.DataError, match=r"Could not read IDX file .*t10k-images"):
        data.load_array("mnist", "test", data_dir=str(tmp_path))


def test_integer_pixels_other_than_uint8_name_their_dtype_and_the_fix(tmp_path):
    # Only uint8 is divided by 255. int64 levels 0-255 were reported as out of [0, 1]
    # "after scaling", though nothing was scaled.
    np.savez(tmp_path / "test.npz", x=np.arange(4 * 784).reshape(4, 784) % 256)
    with pytest.raises(data.DataError) as e:
        data.load_array("mnist", "test", data_dir=str(tmp_path))
    msg = str(e.value)
    assert re.search(r"test.npz: pixel intensities must be in \[0, 1\], found range \[0, 255\] "
                     r"in an array of dtype int64, used as it is \(only uint8 0-255 is divided "
                     r"by 255\)\. Expected uint8 0-255 or float in \[0, 1\]: these look like "
                     r"0-255 levels, store them as x\.astype\(np\.uint8\)", msg), msg
    assert "after scaling" not in msg


def write_npz(path, case):
    """A file named .npz that is not a readable archive of a numeric array 'x'."""
    if case == "random bytes":
        path.write_bytes(b"\x00\x01" + np.random.RandomState(0).bytes(200))
    elif case == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros((3, 784), np.uint8))
    elif case == "truncated":
        np.savez(path, x=np.zeros((3, 784), np.uint8))
        path.write_bytes(path.read_bytes()[:100])
    elif case == "object":
        np.savez(path, x=np.array([{"pixels": 1}], dtype=object))
    elif case == "no x":
        np.savez(path, images=np.zeros((3, 784), np.uint8))


@pytest.mark.parametrize("case,match", [
    ("random bytes", r"test.npz: not a .npz archive \(it starts with bytes 0001.*a zip file "
                     r"as np.savez writes it, with an array named 'x'\)"),
    ("npy", r"test.npz: a single .npy array, not a .npz archive: save it with "
            r"np.savez\(path, x=images\)"),
    ("truncated", r"test.npz: not a readable .npz archive, corrupt or truncated"),
    ("object", r"test.npz: array 'x' is not numeric \(an object array, stored pickled\); "
               r"expected uint8 0-255 or float in \[0, 1\]"),
    ("no x", r"test.npz: expected an array named 'x', found \['images'\]"),
])
def test_a_file_that_is_not_a_npz_archive_says_what_it_is(tmp_path, case, match):
    # Random bytes used to get numpy's advice about allow_pickle=False.
    write_npz(tmp_path / "test.npz", case)
    with pytest.raises(data.DataError, match=match) as e:
        data.load_array("mnist", "test", data_dir=str(tmp_path))
    assert "allow_pickle" not in str(e.value)


def test_a_data_dir_that_does_not_exist_is_named_with_where_it_resolved(tmp_path,
                                                                        monkeypatch):
    # A relative --data_dir missing from the current directory was reported as tfds data
    # "not prepared" there, without the directory it was looked for in.
    monkeypatch.chdir(tmp_path)
    resolved = f"from the current directory {tmp_path} it resolves to {tmp_path}/data/mnist"
    for kw, lead in ((dict(download=False), r"tfds dataset 'mnist' is not prepared under "
                                            r"data_dir='data/mnist' and there are no local "
                                            r"files there"),
                     (dict(source="files"), r"source='files' needs an existing data_dir=, "
                                            r"got 'data/mnist'")):
        with pytest.raises(data.DataError, match=lead) as e:
            data.load_array("mnist", "test", data_dir="data/mnist", **kw)
        assert f"it does not exist ({resolved})" in str(e.value), str(e.value)
        assert "--" not in str(e.value)  # the library names its arguments, not flags
    (tmp_path / "file").write_text("x")
    with pytest.raises(data.DataError, match=r"^data_dir='file' is not a directory \(from the "
                                             r"current directory "):
        data.load_array("mnist", "test", data_dir="file")


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
    (["--objective=miwae", "--M=2", "--K=2", "--beta=0.5", "--num_samples=4"],
     r"--beta does not apply to --objective=miwae \(it takes M, K\)"),
    (["--dataset=fashion_mnist", "--data_dir=/nonexistent", "--nodownload"],
     r"not prepared under --data_dir='/nonexistent' and .*downloading is off "
     r"\(--nodownload\)"),
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
@pytest.mark.parametrize("value", ["-1", "nan"])
def test_evaluate_bad_progress_secs(trained_run, value):
    proc = run("evaluate.py", f"--logdir={trained_run[0]}", f"--progress_secs={value}")
    assert proc.returncode != 0
    assert re.search(r"--progress_secs: expected a finite number of seconds >= 0",
                     proc.stderr), proc.stderr[-1500:]


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
@pytest.mark.slow
def test_evaluate_curve_ks_outside_num_samples(trained_run, curve, match):
    logdir, _ = trained_run
    proc = run("evaluate.py", f"--logdir={logdir}", "--num_samples=20", "--max_images=5",
               f"--curve_ks={curve}")
    assert proc.returncode != 0
    assert re.search(match, proc.stderr), proc.stderr[-1500:]


@pytest.mark.slow
def test_evaluate_with_a_run_config_of_wrong_values_names_file_and_flag(trained_run,
                                                                        tmp_path):
    # Valid JSON, wrong type: used to pass load_config and crash building the model.
    logdir = copy_run(trained_run[0], tmp_path / "run")
    cfg = os.path.join(logdir, "run_config.json")
    text = open(cfg).read().replace('"stochastic_layers": 1', '"stochastic_layers": "two"')
    open(cfg, "w").write(text)
    proc = run("evaluate.py", f"--logdir={logdir}", "--num_samples=2", "--max_images=5")
    assert proc.returncode == 2
    assert re.search(r"run_config.json': flag 'stochastic_layers' has value 'two', "
                     r"expected int", proc.stderr), proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr


# ---- training flags and the run directory (in-process) ---------------------------------
def quiet(config):
    """Trains `config` in this process without printing; returns (result, log lines)."""
    lines = []
    return trainer.train(config, log=lines.append), lines


@pytest.mark.parametrize("lr", [float("inf"), float("-inf"), float("nan"), 0.])
def test_learning_rate_must_be_positive_and_finite(lr):
    with pytest.raises(trainer.TrainingError,
                       match=r"--learning_rate: expected a positive number \(finite\)"):
        trainer.RunConfig(learning_rate=lr).validate()


def test_step_that_cannot_fit_in_memory_is_refused_naming_the_flags(tmp_path):
    # k * batch importance samples each hold the decoder's activations (50 + 200 + 200 +
    # 784 logits + 784 log-probabilities floats for 1 layer) through the backward pass.
    assert memory.per_sample_floats(1) == 2018
    need = memory.training_step_bytes(100_000, 20, 1, xla=True)
    assert need == int(100_000 * 20 * 2018 * 4 * 1.5)  # ~22.6 GiB
    msg = memory.check_fits(100_000, 20, 1, available=8 * 2 ** 30)
    assert re.search(r"^num_samples=100000 with batch_size=20: the training step needs "
                     r"about 22.6 GiB .* only 8.0 GiB of memory is available; lower "
                     r"num_samples= or batch_size=\.$", msg), msg
    # The paper's settings need little (k=50, batch 20, 2 layers: < 100 MiB).
    assert memory.check_fits(50, 20, 2, validation_images=200, available=2 ** 30) is None
    assert memory.training_step_bytes(50, 20, 2) < 100 * 2 ** 20
    # Validation's log weights of 100 images at k can be the larger part.
    msg = memory.check_fits(20_000, 20, 1, validation_images=200, available=8 * 2 ** 30)
    assert "validation about" in msg and "set eval_every=0." in msg and "--" not in msg
    # train() refuses before creating anything (k = 10^7 exceeds any machine's memory).
    logdir = tmp_path / "r"
    with pytest.raises(trainer.TrainingError, match=r"^num_samples=10000000 with "
                                                 r"batch_size=20: .*GiB"):
        quiet(trainer.RunConfig(logdir=str(logdir), num_samples=10 ** 7))
    assert not logdir.exists()


def test_a_run_that_fails_to_start_writes_no_run_config(tmp_path):
    # --batch_size=4000 fails after the logdir check (mnist_5k has 3,500 training images).
    # It used to leave run_config.json behind, so the corrected command was refused as
    # "a run with different flags".
    logdir = tmp_path / "r"
    with pytest.raises(trainer.TrainingError, match="^batch_size=4000 exceeds the 3500"):
        quiet(trainer.RunConfig(logdir=str(logdir), batch_size=4000, max_steps=2))
    assert not (logdir / "run_config.json").exists()
    result, _ = quiet(trainer.RunConfig(logdir=str(logdir), max_steps=2, eval_every=0,
                                        log_every=0, checkpoint_every=0, xla=False))
    assert result["step"] == 2
    assert trainer.load_config(str(logdir)).batch_size == 20  # written once the run started
    assert not (logdir / "train.lock").exists()


@pytest.mark.slow
def test_checkpoint_keeps_the_model_flags_when_run_config_is_deleted(trained_run, tmp_path):
    logdir = copy_run(trained_run[0], tmp_path / "run")
    os.remove(os.path.join(logdir, "run_config.json"))
    ckdir = os.path.join(logdir, "checkpoints")
    before = {f: os.path.getmtime(os.path.join(ckdir, f)) for f in os.listdir(ckdir)}
    with pytest.raises(trainer.TrainingError, match=r"checkpoint .*ckpt-300 was written by a "
                                                 r"run with different flags \(num_samples=5 "
                                                 r"there vs 7 now\)"):
        quiet(trainer.RunConfig(logdir=logdir, num_samples=7, max_steps=400, eval_every=0))
    assert before == {f: os.path.getmtime(os.path.join(ckdir, f)) for f in os.listdir(ckdir)}
    assert not os.path.exists(os.path.join(logdir, "run_config.json"))


@pytest.mark.slow
def test_checkpoint_from_before_recorded_flags_still_resumes(trained_run, tmp_path):
    # Runs trained before checkpoints recorded their flags hold no `run_flags`: they
    # resume as before (flags checked against run_config.json only), with a note.
    from tfp_iwae import schedule
    logdir = copy_run(trained_run[0], tmp_path / "run")
    ckdir = os.path.join(logdir, "checkpoints")
    config = trainer.load_config(logdir)
    model = trainer.build_model(config)
    opt = schedule.make_optimizer()
    opt.build(model.decoder_variables + model.encoder_variables)
    iterator = iter(data.load(config.dataset, "train", binarization=config.binarization,
                              batch_size=config.batch_size, seed=config.seed))
    step = tf.Variable(0, dtype=tf.int64)
    tf.train.Checkpoint(model=model.checkpointable(), optimizer=opt, step=step).read(
        os.path.join(ckdir, "ckpt-300")).assert_existing_objects_matched().expect_partial()
    # As the versions before the fused loop wrote it: with the tf.data iterator's state.
    old = tf.train.Checkpoint(model=model.checkpointable(), optimizer=opt, iterator=iterator,
                              step=step)
    tf.train.CheckpointManager(old, ckdir + "_old", max_to_keep=1).save(checkpoint_number=300)
    shutil.rmtree(ckdir)
    os.rename(ckdir + "_old", ckdir)
    result, lines = quiet(trainer.RunConfig(logdir=logdir, max_steps=300, eval_every=0,
                                            num_samples=5, batch_size=20))
    assert result["step"] == 300
    assert any("predates checkpoints that record their model flags" in l for l in lines)
    assert any("resumed from" in l and "at step 300" in l for l in lines), lines


@pytest.mark.slow
def test_validation_log_names_the_binarisation_it_used(tmp_path):
    # Under --binarization=none validation sees the intensities: the log must not say
    # "fixed-binarised". (A one-step run with validation at that step; no XLA: for one
    # step compiling costs more than it saves.)
    for binarization, label in [("none", "not binarised (intensities)"),
                                ("fixed", "fixed-binarised")]:
        config = trainer.RunConfig(logdir=str(tmp_path / binarization), binarization=binarization,
                                   num_samples=2, eval_samples=3, eval_images=16, max_steps=1,
                                   eval_every=1, checkpoint_every=0, xla=False)
        _, lines = quiet(config)
        validation = [line for line in lines if line.startswith("validation step 1:")]
        assert len(validation) == 1, lines
        protocol = data.describe("mnist_5k", binarization)
        assert validation[0].endswith(f"[{protocol}, validation {label}]"), validation[0]
        assert "active units [" in validation[0] and "on 16 images" in validation[0]
