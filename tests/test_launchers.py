"""End-to-end: the launchers as subprocesses on the embedded real MNIST digits."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from helpers import (FAST, ROOT, Workers, checkpoint_values, fetch, launcher_env, run,
                     tensorboard)

pytestmark = pytest.mark.slow


def test_train_logs_progress_and_writes_checkpoint_and_summaries(trained_run):
    logdir, out = trained_run
    assert "step 300/300" in out and "ex/s" in out and "ETA" in out
    assert "mnist_5k [dynamic binarisation]" in out
    lines = [l for l in out.splitlines() if l.startswith("step ")]
    first = float(lines[0].split("bound ")[1].split()[0])
    assert len(lines) == 6 and all("stage" in l and "lr" in l for l in lines)
    assert tf.train.latest_checkpoint(os.path.join(logdir, "checkpoints")).endswith("ckpt-300")
    tags = set()
    for f in glob.glob(os.path.join(logdir, "*", "events.out.tfevents*")):
        for e in tf.compat.v1.train.summary_iterator(f):
            tags |= {v.tag for v in e.summary.value}
    for tag in ("bound/objective", "bound/L_k", "bound/elbo", "posterior/ess",
                "optimizer/learning_rate", "optimizer/grad_norm", "speed/examples_per_second",
                "bound/bits_per_dim", "bound/log_likelihood", "posterior/active_units/layer1",
                "posterior/log_weights", "images/samples", "images/reconstructions",
                "estimator/encoder_snr/iwae", "estimator/encoder_snr/dreg",
                "estimator/encoder_variance/stl"):
        assert tag in tags, (tag, tags)
    assert first < -100  # the run starts far from a good model
    bpd = float(lines[0].split("nats = ")[1].split()[0])
    assert bpd == pytest.approx(-first / (784 * np.log(2)), abs=1e-4)


def test_evaluate_reports_nats_bits_and_protocol(trained_run, tmp_path):
    logdir, _ = trained_run
    out = tmp_path / "res.json"
    proc = run("evaluate.py", f"--logdir={logdir}", "--num_samples=500", "--chunk_size=77",
               "--max_images=200", f"--output={out}", "--curve_ks=1,5,50,500",
               "--progress_secs=0.001")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["dataset"] == "mnist_5k" and res["binarization"] == "dynamic"
    assert res["num_samples"] == 500 and res["images"] == 200
    on_cpu = not tf.config.list_logical_devices("GPU")
    assert res["decoder_matmuls"] == ("tensorflow" if on_cpu else "xla")  # auto
    # 300 steps from the data-mean init: well above the init's ~-220 nats, below 0.
    assert -180 < res["log_likelihood_nats"] < -80
    np.testing.assert_allclose(res["bits_per_dim"], res["nll_nats"] / (784 * np.log(2)))
    per = np.load(str(out).replace(".json", "_per_example.npy"))
    assert per.shape == (200,)
    assert "L_500" in proc.stdout and "bits/dim" in proc.stdout
    # One progress line per batch but the last (two batches of 100 images): the running
    # mean after the first batch is that batch's mean of the per-example estimates.
    progress = [l for l in proc.stdout.splitlines() if "images, mean" in l]
    assert len(progress) == 1 and progress[0].startswith("L_500: 100/200 images, mean "), \
        proc.stdout
    mean = float(progress[0].split("mean ")[1].split()[0])
    assert mean == pytest.approx(per[:100].mean(), abs=0.006)
    # The bound against k for a trained model: E[L_k] grows with k (Burda et al., thm 1),
    # and the block-averaged L_500 is the reported estimate itself.
    curve = res["bound_curve"]
    assert curve["k"] == [1, 5, 50, 500]
    assert np.all(np.diff(curve["bound_nats"]) > 0), curve
    assert curve["bound_nats"][-1] == pytest.approx(res["log_likelihood_nats"], abs=1e-9)
    assert "bound against k: L_1" in proc.stdout


@pytest.mark.parametrize("rows, pair_cols", [(4, 4), (3, 4)])
def test_sample_writes_png(trained_run, tmp_path, rows, pair_cols):
    # rows x rows samples, a gap, then rows rows of ceil(rows / 2) data|reconstruction
    # pairs (odd --rows used to crash reshaping rows^2 // 2 pairs into rows rows).
    logdir, _ = trained_run
    out = tmp_path / "s.png"
    proc = run("sample.py", f"--logdir={logdir}", f"--out={out}", f"--rows={rows}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    img = tf.io.decode_png(tf.io.read_file(str(out))).numpy()
    assert img.shape == (rows * 28, rows * 28 + 28 + pair_cols * 28, 1)


def test_sigkill_and_restart_resumes_and_matches_uninterrupted_run(tmp_path):
    args = ["--max_steps=400", "--checkpoint_every=50", "--eval_every=0", *FAST]
    ref = str(tmp_path / "ref")
    assert run("train.py", f"--logdir={ref}", *args).returncode == 0
    killed = str(tmp_path / "killed")
    env = launcher_env()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch", "train.py"),
                             f"--logdir={killed}", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        latest = tf.train.latest_checkpoint(os.path.join(killed, "checkpoints"))
        if latest and int(latest.rsplit("-", 1)[1]) >= 150:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = tf.train.latest_checkpoint(os.path.join(killed, "checkpoints"))
    killed_at = int(latest.rsplit("-", 1)[1])
    assert 150 <= killed_at < 400
    again = run("train.py", f"--logdir={killed}", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stdout
    resumed_at = int(again.stdout.split("at step ")[1].split()[0])
    assert resumed_at >= killed_at
    a = checkpoint_values(os.path.join(ref, "checkpoints", "ckpt-400"))
    b = checkpoint_values(os.path.join(killed, "checkpoints", "ckpt-400"))
    assert a.keys() == b.keys() and len(a) == 14
    for k in a:  # same seed, same data stream, same step seeds: bit-for-bit on CPU
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("flags,match", [
    (["--num_samples=0"], "--num_samples: expected an integer >= 1"),
    (["--dataset=mnsit"], "--dataset: expected one of"),
    (["--objective=iwea"], "--objective: Unknown estimator 'iwea'"),
    (["--objective=miwae(8,8)", "--num_samples=50"], r"M\*K = 64"),
    (["--batch_size=0"], "--batch_size: expected an integer >= 1"),
    (["--init_from=/nonexistent/run"], "--init_from: no checkpoint found"),
])
def test_bad_flags_exit_nonzero_naming_the_flag(tmp_path, flags, match):
    proc = run("train.py", f"--logdir={tmp_path / 'r'}", "--max_steps=1", *flags)
    assert proc.returncode != 0
    assert __import__("re").search(match, proc.stderr), proc.stderr[-2000:]


def test_logdir_with_other_model_flags_is_refused_and_untouched(trained_run):
    logdir, _ = trained_run
    before = {f: os.path.getmtime(f) for f in glob.glob(os.path.join(logdir, "checkpoints", "*"))}
    proc = run("train.py", f"--logdir={logdir}", "--max_steps=400", "--stochastic_layers=2",
               *FAST)
    assert proc.returncode != 0
    assert "--stochastic_layers=1 there vs 2 now" in proc.stderr
    after = {f: os.path.getmtime(f) for f in glob.glob(os.path.join(logdir, "checkpoints", "*"))}
    assert before == after


def test_init_from_incompatible_checkpoint_is_refused(trained_run, tmp_path):
    logdir, _ = trained_run
    proc = run("train.py", f"--logdir={tmp_path / 'two'}", "--stochastic_layers=2",
               f"--init_from={logdir}/checkpoints", "--max_steps=1", *FAST)
    assert proc.returncode != 0
    assert "--init_from" in proc.stderr and "incompatible checkpoint" in proc.stderr


def test_init_from_vae_then_iwae_fine_tuning(trained_run, tmp_path):
    # Paper sec. 5.2: continue training a trained model under another objective.
    logdir, _ = trained_run
    proc = run("train.py", f"--logdir={tmp_path / 'ft'}", "--objective=vae",
               f"--init_from={logdir}/checkpoints", "--max_steps=50", "--eval_every=0", *FAST)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "initialised model weights from" in proc.stdout
    # Only the model's weights are read, on purpose: no warning per optimizer slot, step
    # or iterator entry of the source checkpoint left unread.
    assert "could not be found" not in proc.stderr, proc.stderr[-2000:]
    assert len([l for l in proc.stdout.splitlines() if "initialised" in l]) == 1
    first = float([l for l in proc.stdout.splitlines() if l.startswith("step ")][0]
                  .split("(L_k ")[1].split(",")[0])
    assert first > -180  # starts from the trained weights, not from scratch (~-220)


REPLICATED = ["--max_steps=60", "--checkpoint_every=0", "--eval_every=0", *FAST]


@pytest.fixture(scope="module")
def mirrored_ckpt(tmp_path_factory):
    """ckpt-60 of a MirroredStrategy run on two CPU devices (`REPLICATED`)."""
    logdir = tmp_path_factory.mktemp("mirrored")
    proc = run("train.py", f"--logdir={logdir}", "--strategy=mirrored", "--cpu_devices=2",
               *REPLICATED)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "strategy mirrored (2 replica(s))" in proc.stdout
    return str(logdir / "checkpoints" / "ckpt-60")


def test_mirrored_strategy_on_two_cpu_devices_matches_single_device(tmp_path, mirrored_ckpt):
    # Two replicas each draw their shard's samples with fold_in(seed, shard); a one-device
    # run with --num_shards=2 draws the same ones, so the runs agree up to float sums
    # (which training amplifies as it goes: ~1e-6 at step 40, ~8e-3 at step 200).
    single = run("train.py", f"--logdir={tmp_path / 's'}", "--num_shards=2", *REPLICATED)
    assert single.returncode == 0, single.stderr[-3000:]
    a = checkpoint_values(mirrored_ckpt)
    b = checkpoint_values(str(tmp_path / "s" / "checkpoints" / "ckpt-60"))
    assert a.keys() == b.keys() and len(a) == 14
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)
    # ... and the shard layout matters: one shard draws different samples.
    other = run("train.py", f"--logdir={tmp_path / 'o'}", *REPLICATED)
    assert other.returncode == 0, other.stderr[-3000:]
    c = checkpoint_values(str(tmp_path / "o" / "checkpoints" / "ckpt-60"))
    assert max(np.abs(a[k] - c[k]).max() for k in a) > 1e-3


def test_batch_size_not_divisible_across_replicas_is_refused(tmp_path):
    proc = run("train.py", f"--logdir={tmp_path / 'r'}", "--strategy=mirrored",
               "--cpu_devices=2", "--batch_size=21", "--max_steps=1")
    assert proc.returncode != 0
    assert "--batch_size=21 must be divisible by the 2 replicas" in proc.stderr


def test_grouped_estimator_from_M_and_K_flags(tmp_path):
    proc = run("train.py", f"--logdir={tmp_path / 'r'}", "--objective=piwae", "--M=2", "--K=3",
               "--num_samples=6", "--max_steps=20", "--log_every=10", "--eval_every=0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "objective piwae(2,3), k=6" in proc.stdout and "step 20/20" in proc.stdout


def test_mixed_precision_run_trains_and_evaluates(tmp_path):
    logdir = str(tmp_path / "mp")
    proc = run("train.py", f"--logdir={logdir}", "--mixed_precision", "--max_steps=40",
               "--eval_every=0", *FAST)
    assert proc.returncode == 0, proc.stderr[-2000:]
    vals = checkpoint_values(tf.train.latest_checkpoint(os.path.join(logdir, "checkpoints")))
    assert all(v.dtype == np.float32 and np.all(np.isfinite(v)) for v in vals.values())
    ev = run("evaluate.py", f"--logdir={logdir}", "--num_samples=20", "--max_images=20",
             f"--output={tmp_path / 'r.json'}")
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert -250 < json.loads((tmp_path / "r.json").read_text())["log_likelihood_nats"] < -50


def test_flagfile(tmp_path):
    flagfile = tmp_path / "run.flags"
    flagfile.write_text("--max_steps=20\n--log_every=10\n--eval_every=0\n--num_samples=3\n")
    proc = run("train.py", f"--flagfile={flagfile}", f"--logdir={tmp_path / 'r'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "k=3" in proc.stdout and "step 20/20" in proc.stdout


def test_helpfull_documents_flags_with_defaults():
    proc = run("train.py", "--helpfull")
    for text in ("--num_samples", "importance samples", "(default: '5')", "--schedule",
                 "3^i passes", "--strategy", "--init_from"):
        assert text in proc.stdout, text


def test_tensorboard_server_serves_the_scalars(trained_run):
    # A real TensorBoard on localhost, read back over its HTTP API.
    logdir, _ = trained_run
    with tensorboard(logdir) as base:
        url = f"{base}/data/plugin/scalars/scalars?run=train&tag=bound/objective"
        deadline, points = time.time() + 90, None
        while time.time() < deadline:
            try:
                points = json.loads(fetch(url))
                if points:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(1)
        assert points, "TensorBoard served no scalars for run=train tag=bound/objective"
        steps = [p[1] for p in points]
        assert steps == [50, 100, 150, 200, 250, 300]
        assert all(-1000 < p[2] < 0 for p in points)
        tags = json.loads(fetch(f"{base}/data/plugin/scalars/tags"))
        assert "bound/log_likelihood" in tags["validation"]
        assert "optimizer/learning_rate" in tags["train"]


def test_multi_worker_two_processes_on_localhost_match_the_mirrored_run_bit_for_bit(
        tmp_path, mirrored_ckpt):
    # MultiWorkerMirroredStrategy with TF_CONFIG (README recipe): two worker processes on
    # loopback, one CPU replica each. The chief's checkpoint equals the two-device mirrored
    # run's exactly (the same shards, and a sum of two replicas' gradients has one
    # rounding), so the single-device comparison above covers this run too.
    (rc0, out0, err0), (rc1, _, err1) = Workers(
        ["--strategy=multi_worker", f"--logdir={tmp_path / 'mw'}", *REPLICATED],
        tmp_path).finish()
    assert rc0 == 0, err0[-3000:]
    assert "strategy multi_worker (2 replica(s))" in out0
    assert rc1 == 0, err1[-3000:]
    a = checkpoint_values(str(tmp_path / "mw" / "checkpoints" / "ckpt-60"))
    b = checkpoint_values(mirrored_ckpt)
    assert a.keys() == b.keys() and len(a) == 14
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


LOAD_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
x = tf.constant(np.load(sys.argv[2]))
out = {"log_prob": m.signatures["log_prob"](x=x)["log_prob"].numpy().tolist(),
       "h1_mean": m.signatures["encode"](x=x)["h1_mean"].numpy().tolist(),
       "sample_shape": list(m.signatures["sample"](n=tf.constant(5))["x"].shape),
       "imported": sorted(k for k in sys.modules if k.startswith(("tfp_iwae", "tensorflow_prob")))}
print(json.dumps(out))
"""


def test_export_saved_model_loads_without_tfp_iwae_and_matches_live_model(trained_run,
                                                                          tmp_path, mnist_5k):
    logdir, _ = trained_run
    out = tmp_path / "sm"
    proc = run("export.py", f"--logdir={logdir}", f"--out={out}", "--num_samples=200",
               "--seed=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    x = (mnist_5k[1][:6] > 0.5).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "load.py").write_text(LOAD_SCRIPT)
    loaded = subprocess.run([sys.executable, str(tmp_path / "load.py"), str(out),
                             str(tmp_path / "x.npy")], capture_output=True, text=True,
                            timeout=120, cwd=str(tmp_path),
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    res = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert res["imported"] == []  # plain TensorFlow: neither tfp_iwae nor TFP imported
    assert res["sample_shape"] == [5, 784]
    import tfp_iwae
    from tfp_iwae import trainer
    config = trainer.load_config(logdir)
    model = trainer.build_model(config)
    tf.train.Checkpoint(model=model.checkpointable()).read(
        tf.train.latest_checkpoint(os.path.join(logdir, "checkpoints"))).expect_partial()
    live = tfp_iwae.iwae_bound(model.log_weights(tf.constant(x), 200, seed=3)).numpy()
    np.testing.assert_allclose(res["log_prob"], live, rtol=1e-4)
    loc, _ = model.q_layers[0].parameters_for(tf.constant(x))
    np.testing.assert_allclose(res["h1_mean"], loc.numpy(), rtol=1e-4, atol=1e-5)


def test_second_process_on_a_locked_logdir_is_refused_naming_the_holder(tmp_path):
    # This test process holds the logdir's lock as a running train.py would.
    import socket
    from tfp_iwae import rundir
    logdir = tmp_path / "r"
    logdir.mkdir()
    with rundir.RunLock(str(logdir)):
        proc = run("train.py", f"--logdir={logdir}", "--max_steps=1", "--eval_every=0")
    assert proc.returncode == 2
    assert (f"is in use by PID {os.getpid()} on host '{socket.gethostname()}'"
            in proc.stderr), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert sorted(os.listdir(logdir)) == []  # nothing written: no config, no events


@pytest.mark.parametrize("script, flags, expected", [
    ("evaluate.py", ["--max_images=-1", "--num_samples=0", "--chunk_size=-2",
                     "--batch_size=0", "--seed=-1", "--fixed_binarization_seed=-3"],
     ["--max_images: expected an integer >= 0 (0: all images), got -1",
      "--num_samples: expected an integer >= 1, got 0",
      "--chunk_size: expected an integer >= 0", "--batch_size: expected an integer >= 1",
      "--seed: expected an integer >= 0, got -1", "--fixed_binarization_seed: expected"]),
    ("sample.py", ["--rows=0", "--seed=-1"],
     ["--rows: expected an integer >= 1, got 0", "--seed: expected an integer >= 0"]),
    ("export.py", ["--num_samples=-5", "--seed=-2"],
     ["--num_samples: expected an integer >= 1, got -5", "--seed: expected an integer >= 0"]),
])
def test_integer_flags_of_evaluate_sample_export_are_checked(trained_run, script, flags,
                                                            expected):
    # Every bad integer flag is named at once, before anything is read or written
    # (--max_images=-1 used to evaluate all but the last image, -1000 none, giving NaN).
    logdir = trained_run[0]
    before = sorted(os.listdir(logdir))
    proc = run(script, f"--logdir={logdir}", *flags)
    assert proc.returncode == 2, proc.stderr[-2000:]
    for text in expected:
        assert text in proc.stderr, (text, proc.stderr[-2000:])
    assert sorted(os.listdir(logdir)) == before


def test_evaluate_max_images_beyond_the_split_is_refused(trained_run, tmp_path):
    out = tmp_path / "res.json"
    out.write_text('{"earlier": true}')
    proc = run("evaluate.py", f"--logdir={trained_run[0]}", "--num_samples=2",
               "--max_images=1001", f"--output={out}")
    assert proc.returncode == 2
    assert ("--max_images: expected at most the 1000 images of the mnist_5k test split"
            in proc.stderr), proc.stderr[-2000:]
    assert out.read_text() == '{"earlier": true}'  # an earlier result is not overwritten


FASHION = "/usr/share/datasets/fashion-mnist"


@pytest.mark.skipif(not os.path.exists(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz")),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_evaluate_data_dir_overrides_the_runs_own_and_is_named_as_the_flag(tmp_path):
    # A Fashion-MNIST run (an untrained checkpoint) whose recorded data_dir has moved, as
    # on a machine the run was copied to: evaluate reads the images from --data_dir
    # instead; a --data_dir that is not there is refused naming the flag, writing nothing.
    from tfp_iwae import config as config_lib, rundir
    logdir = str(tmp_path / "run")
    config = config_lib.RunConfig(logdir=logdir, dataset="fashion_mnist",
                                  data_dir=str(tmp_path / "moved"), num_samples=2)
    model = rundir.build_model(config)
    model.log_weights(tf.zeros([1, 784]), 1, seed=0)
    ckpt = tf.train.Checkpoint(model=model.checkpointable(),
                               step=tf.Variable(3, dtype=tf.int64))
    tf.train.CheckpointManager(ckpt, rundir.checkpoint_dir(logdir), 3).save(3)
    rundir.write_config(logdir, config.__dict__)
    args = ["evaluate.py", f"--logdir={logdir}", "--num_samples=2", "--max_images=4",
            "--progress_secs=0"]
    missing = tmp_path / "elsewhere"
    proc = run(*args, f"--data_dir={missing}")
    assert proc.returncode == 2 and f"--data_dir={str(missing)!r}" in proc.stderr, \
        proc.stderr[-2000:]
    assert not glob.glob(os.path.join(logdir, "eval_*"))
    proc = run(*args, f"--data_dir={FASHION}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.load(open(os.path.join(logdir, "eval_test_k2_first4.json")))["images"] == 4


def test_export_into_a_non_empty_directory_needs_overwrite(trained_run, tmp_path):
    logdir, _ = trained_run
    out = tmp_path / "sm"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    proc = run("export.py", f"--logdir={logdir}", f"--out={out}", "--num_samples=10")
    assert proc.returncode == 2
    assert "--out" in proc.stderr and "is not empty" in proc.stderr and (
        "--overwrite" in proc.stderr), proc.stderr[-2000:]
    assert os.listdir(out) == ["notes.txt"]  # untouched
    proc = run("export.py", f"--logdir={logdir}", f"--out={out}", "--num_samples=10",
               "--overwrite")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "saved_model.pb" in os.listdir(out) and "notes.txt" not in os.listdir(out)
    assert [f for f in os.listdir(tmp_path) if f != "sm"] == []  # no temporary left
    # A directory holding a training run is never replaced, even with --overwrite.
    proc = run("export.py", f"--logdir={logdir}", f"--out={logdir}", "--overwrite")
    assert proc.returncode == 2 and "holds a training run" in proc.stderr


def test_launchers_import_the_installed_package_not_their_checkout(tmp_path):
    # No sys.path surgery in launch/: a launcher imports whichever tfp_iwae the
    # environment provides (pip install -e / pip install . / PYTHONPATH), like any user
    # script; here a stand-in package that says so when imported. (Each launcher is a
    # shim over `tfp_iwae.cli`, which imports nothing before it.)
    fake = tmp_path / "tfp_iwae"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('the environment provides this')")
    for script in ("train.py", "evaluate.py", "sample.py", "export.py"):
        env = dict(os.environ, PYTHONPATH=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "launch", script),
                               "--helpshort"], capture_output=True, text=True, timeout=120,
                              cwd=str(tmp_path), env=env)
        assert "the environment provides this" in proc.stderr, (script, proc.stderr[-1500:])


def damaged_copy(trained_run, tmp_path):
    """A copy of the trained run whose newest checkpoint (ckpt-300) is damaged."""
    import shutil
    logdir = tmp_path / "run"
    shutil.copytree(trained_run[0], logdir)
    data = glob.glob(str(logdir / "checkpoints" / "ckpt-300.data-*"))[0]
    with open(data, "r+b") as f:
        f.truncate(100)
    return logdir


@pytest.mark.parametrize("script", ["sample.py", "export.py", "evaluate.py"])
def test_a_damaged_newest_checkpoint_names_the_older_ones_and_checkpoint_reads_them(
        trained_run, tmp_path, script):
    logdir = damaged_copy(trained_run, tmp_path)
    extra = {"sample.py": [f"--out={tmp_path / 's.png'}"],
             "export.py": [f"--out={tmp_path / 'sm'}", "--num_samples=5"],
             "evaluate.py": ["--num_samples=5", "--max_images=10"]}[script]
    proc = run(script, f"--logdir={logdir}", *extra)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "ckpt-300" in proc.stderr and "ckpt-200" in proc.stderr
    assert "--checkpoint" in proc.stderr
    older = str(logdir / "checkpoints" / "ckpt-200")
    proc = run(script, f"--logdir={logdir}", f"--checkpoint={older}", *extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert older in proc.stdout


def test_a_run_moved_away_from_its_data_samples_and_exports(tmp_path):
    # A run trained on files in a data_dir that is gone (a run copied to another machine):
    # sample and export need no data (the model's weights all come from the checkpoint),
    # and evaluate says clearly which data it misses.
    import shutil
    fashion = "/usr/share/datasets/fashion-mnist"
    if not os.path.exists(os.path.join(fashion, "train-images-idx3-ubyte.gz")):
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    data_dir = tmp_path / "data"
    shutil.copytree(fashion, data_dir)
    logdir = tmp_path / "run"
    proc = run("train.py", "--dataset=fashion_mnist", f"--data_dir={data_dir}",
               f"--logdir={logdir}", "--max_steps=20", "--eval_every=0", "--noxla", *FAST)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shutil.rmtree(data_dir)
    proc = run("sample.py", f"--logdir={logdir}", f"--out={tmp_path / 's.png'}", "--rows=4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no reconstructions" in proc.stderr and "Traceback" not in proc.stderr
    assert tf.io.decode_png(tf.io.read_file(str(tmp_path / "s.png"))).shape == (112, 112, 1)
    proc = run("export.py", f"--logdir={logdir}", f"--out={tmp_path / 'sm'}",
               "--num_samples=5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run("evaluate.py", f"--logdir={logdir}", "--num_samples=5")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert str(data_dir) in proc.stderr


def test_evaluate_names_the_checkpoint_and_step_it_read(trained_run, tmp_path):
    logdir, _ = trained_run
    out = tmp_path / "r.json"
    proc = run("evaluate.py", f"--logdir={logdir}", "--num_samples=5", "--max_images=10",
               f"--output={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["checkpoint"].endswith("ckpt-300") and res["checkpoint_step"] == 300
    assert res["first_images_only"] and "(step 300)" in proc.stdout


def test_a_quick_evaluation_does_not_replace_a_full_one(trained_run, tmp_path):
    import shutil
    logdir = tmp_path / "run"
    shutil.copytree(trained_run[0], logdir)
    full = run("evaluate.py", f"--logdir={logdir}", "--num_samples=20")
    assert full.returncode == 0, full.stderr[-2000:]
    quick = run("evaluate.py", f"--logdir={logdir}", "--num_samples=20", "--max_images=20")
    assert quick.returncode == 0, quick.stderr[-2000:]
    whole = json.loads((logdir / "eval_test_k20.json").read_text())
    part = json.loads((logdir / "eval_test_k20_first20.json").read_text())
    assert whole["images"] == 1000 and part["images"] == 20
    assert not whole["first_images_only"] and part["first_images_only"]


def test_launchers_hide_cuda_probing_on_a_machine_without_a_gpu(tmp_path):
    # TensorFlow's C++ lines about CUDA (an `E0000 ... failed call to cuInit` error on a
    # CPU machine) and INFO lines printed before it reads TF_CPP_MIN_LOG_LEVEL are not
    # shown; every other stderr line is, in order.
    if glob.glob("/dev/nvidia[0-9]*"):
        pytest.skip("this machine has a GPU: the CUDA lines are kept")
    script = tmp_path / "noisy.py"
    script.write_text(
        "import os, sys\n"
        "from tfp_iwae.cli import common\n"
        "common.start()\n"
        "os.write(2, b'E0000 00:00:1796585987.274320 7798 cuda_platform.cc:52] failed "
        "call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\\n')\n"
        "os.write(2, b'I0000 00:00:1796585862.767563 6158 port.cc:153] oneDNN custom "
        "operations are on.\\n')\n"
        "os.write(2, b'first real line\\n')\n"
        "print('error: second real line', file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=launcher_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "first real line\nerror: second real line\n"
    shown = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           env=launcher_env(TFP_IWAE_SHOW_CUDA_PROBE="1"), timeout=60)
    assert "cuInit" in shown.stderr
