"""`evaluate_run`: a trained run's L_k, bits/dim and active units, written beside it (in
process, on a run directory as training leaves it)."""

import glob
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

import tfp_iwae
from tfp_iwae import data, evaluation, rundir
from tfp_iwae.config import RunConfig


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A logdir as training leaves it: run_config.json and a checkpoint at step 7 of an
    untrained 1-layer model on mnist_5k (dynamic binarisation)."""
    logdir = str(tmp_path_factory.mktemp("run"))
    config = RunConfig(logdir=logdir, num_samples=3)
    model = rundir.build_model(config, data_mean=np.full([784], 0.2, np.float32))
    model.log_weights(tf.zeros([1, 784]), 1, seed=0)  # creates the variables
    ckpt = tf.train.Checkpoint(model=model.checkpointable(),
                               step=tf.Variable(7, dtype=tf.int64))
    tf.train.CheckpointManager(ckpt, rundir.checkpoint_dir(logdir), 3).save(7)
    rundir.write_config(logdir, config.__dict__)
    return logdir


def test_evaluate_run_writes_results_and_summaries_and_returns_their_numbers(run_dir):
    seen = []
    result = tfp_iwae.evaluate_run(run_dir, num_samples=4, max_images=12, batch_size=5,
                                   curve_ks=[4, 1, 4], seed=2,
                                   progress=lambda *a: seen.append(a))
    # The results files are named by split, k and image count (the first 12 only).
    assert result.output == os.path.join(run_dir, "eval_test_k4_first12.json")
    record = json.load(open(result.output))
    assert record == result.record
    per_example = np.load(os.path.join(run_dir, "eval_test_k4_first12_per_example.npy"))
    np.testing.assert_array_equal(per_example, result.per_example)
    assert result.num_images == record["images"] == 12 and record["first_images_only"]
    assert (result.checkpoint, result.step) == (os.path.join(run_dir, "checkpoints",
                                                             "ckpt-7"), 7)
    # The numbers: mean L_k over the images, NLL = -L_k, bits/dim = NLL / (784 ln 2).
    assert result.log_likelihood == record["log_likelihood_nats"] == float(np.mean(
        per_example))
    assert result.nll == -result.log_likelihood == record["nll_nats"]
    assert result.bits_per_dim == pytest.approx(result.nll / (784 * math.log(2)))
    # L_k per image is estimate_log_likelihood's on the run's first 12 test images,
    # binarised once (seed 0), with the same draws (seed 2).
    model = rundir.restore_run(run_dir).model
    x = data.evaluation_pixels(data.load_array("mnist_5k", "test")[:12], "dynamic", 0)
    np.testing.assert_allclose(result.per_example, evaluation.estimate_log_likelihood(
        model, x, 4, batch_size=5, seed=2), rtol=0, atol=1e-4)
    # The bound curve: k sorted without repeats; L_4 from all 4 draws is the estimate.
    assert result.bound_curve["k"] == [1, 4]
    assert result.bound_curve["bound_nats"][1] == pytest.approx(result.log_likelihood,
                                                                abs=1e-4)
    # progress(images done, images total, seconds, batch estimates) after each batch.
    assert [a[:2] for a in seen] == [(5, 12), (10, 12), (12, 12)]
    assert all(a[2] >= 0 for a in seen) and seen[-1][3].shape == (2,)
    # TensorBoard: the same numbers at the checkpoint's step, tagged by k and count.
    assert result.summaries_dir == os.path.join(run_dir, "eval_test")
    assert result.summaries_error is None
    values = {(e.step, v.tag): tf.make_ndarray(v.tensor)
              for f in glob.glob(os.path.join(result.summaries_dir, "events*"))
              for e in tf.compat.v1.train.summary_iterator(f) for v in e.summary.value}
    assert values[(7, "bound/nll_k4_first12")] == pytest.approx(result.nll)
    assert values[(7, "posterior/active_units/layer1")] == result.active_units[0]


def test_evaluate_run_refuses_bad_arguments_naming_them(run_dir, tmp_path):
    missing = str(tmp_path / "no_run")
    # Checked before the run is read: a logdir that holds no run is not reached.
    for kw, match in ((dict(curve_ks=[1, 5]), r"^`curve_ks=`: each k must be in \[1, "
                                              r"num_samples=4\], got \[1, 5\]\.$"),
                      (dict(curve_ks=["x"]), r"^`curve_ks=`: expected integers"),
                      (dict(progress="often"), r"^`progress=` must be None or a callable")):
        with pytest.raises(tfp_iwae.ArgumentError, match=match):
            tfp_iwae.evaluate_run(missing, num_samples=4, **kw)
    with pytest.raises(tfp_iwae.Error, match="no run_config.json"):
        tfp_iwae.evaluate_run(missing, num_samples=4)
    # More images than the split holds: refused, nothing written.
    with pytest.raises(tfp_iwae.ArgumentError, match=r"^`max_images=`: expected at most the "
                                                     r"1000 images of the mnist_5k test split "
                                                     r"\(0: all\), got 1001\.$"):
        tfp_iwae.evaluate_run(run_dir, num_samples=2, max_images=1001)
    assert not glob.glob(os.path.join(run_dir, "eval_test_k2*"))
    # A results path that cannot be written.
    (tmp_path / "file").write_text("x")
    with pytest.raises(tfp_iwae.ArgumentError, match=r"^`output=`: cannot write results to "):
        tfp_iwae.evaluate_run(run_dir, num_samples=2, max_images=3,
                              output=str(tmp_path / "file" / "r.json"))


def test_evaluate_run_takes_numpy_ints_and_records_python_ints(run_dir, tmp_path):
    # The counts are checked and used as Python ints: a NumPy int64 k (as from an array
    # of sweep values) gives the same JSON record as the int, not a TypeError at the end.
    out = [str(tmp_path / f"{name}.json") for name in ("numpy", "python")]
    results = [tfp_iwae.evaluate_run(run_dir, num_samples=kind(3), max_images=kind(4),
                                     batch_size=kind(2), fixed_binarization_seed=kind(0),
                                     output=path)
               for kind, path in zip((np.int64, int), out)]
    records = [json.load(open(path)) for path in out]
    assert records[0]["num_samples"] == 3 and type(records[0]["num_samples"]) is int
    for key in ("num_samples", "images", "log_likelihood_nats"):
        assert records[0][key] == records[1][key]
    np.testing.assert_array_equal(results[0].per_example, results[1].per_example)
