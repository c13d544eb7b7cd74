"""TensorBoard output (`tfp_iwae/summaries.py`): grouped tags, HParams, image grids, and a
real TensorBoard server reading two runs and an evaluation over HTTP."""

import dataclasses
import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.plugins.hparams import metadata as hp_metadata

from helpers import ROOT, fetch, tensorboard
from tfp_iwae import summaries, trainer


def read_tags(directory):
    """{tag: [steps]} of the events files directly in `directory`."""
    tags = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    return tags


# ---- image grids ---------------------------------------------------------------------

def test_image_grid_puts_image_i_at_row_i_div_cols_and_column_i_mod_cols():
    side, rows, cols = 3, 2, 4
    images = np.arange(rows * cols)[:, None] * 100. + np.arange(side * side)  # [8, 9]
    grid = summaries.image_grid(images, rows, cols)
    assert grid.shape == (rows * side, cols * side)
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        np.testing.assert_array_equal(
            grid[r * side:(r + 1) * side, c * side:(c + 1) * side],
            images[i].reshape(side, side))  # each tile is its image, row-major inside


def test_image_grid_rejects_a_wrong_count_or_non_square_images():
    with pytest.raises(ValueError, match="a 2 x 4 grid needs 8 images, got 7"):
        summaries.image_grid(np.zeros([7, 784]), 2, 4)
    with pytest.raises(ValueError, match="flattened square images, got 780 pixels"):
        summaries.image_grid(np.zeros([8, 780]), 2, 4)


def test_reconstruction_grid_is_rows_of_inputs_over_rows_of_their_reconstructions():
    n, cols, side = 16, 8, 28
    inputs = np.repeat(np.arange(n, dtype=np.float32)[:, None], side * side, 1)
    grid = summaries.reconstruction_grid(inputs, -inputs, cols)
    assert grid.shape == (2 * (n // cols) * side, cols * side)  # 112 x 224 pixels
    tiles = grid.reshape(2 * n // cols, side, cols, side)[:, 0, :, 0]  # one pixel per tile
    # rows: inputs 0-7, their reconstructions, inputs 8-15, theirs
    np.testing.assert_array_equal(tiles, [np.arange(8), -np.arange(8), np.arange(8, 16),
                                          -np.arange(8, 16)])
    with pytest.raises(ValueError, match="multiple of 8"):
        summaries.reconstruction_grid(inputs[:12], inputs[:12], cols)


def test_sample_command_tiles_with_the_same_grid_function():
    # tfp-iwae-sample's PNG (tfp_iwae/cli/sample.py; launch/sample.py runs it) and the
    # TensorBoard grids come from one tiling function.
    with open(os.path.join(ROOT, "tfp_iwae", "cli", "sample.py")) as f:
        source = f.read()
    assert "from tfp_iwae.summaries import image_grid as grid" in source
    assert not re.search(r"^def grid\(", source, re.M)


# ---- tags ----------------------------------------------------------------------------

def test_written_tags_are_exactly_the_documented_table(tmp_path):
    # Every writer, once, with one stochastic layer and one diagnosed estimator: each run
    # holds exactly the tags `summaries.TAGS` lists for it, at the step written.
    train, valid = tmp_path / "train", tmp_path / "validation"
    w, v = (tf.summary.create_file_writer(str(d)) for d in (train, valid))
    metrics = dict(bound=-100., iwae_bound=-99., elbo=-101., ess=2., grad_norm=3.)
    summaries.write_training(w, 10, metrics, bits_per_dim=0.18, learning_rate=1e-3,
                             examples_per_second=500., num_samples=5, objective="iwae")
    summaries.write_gradient_diagnostics(w, 10, {"iwae": {"snr": 0.1, "variance": 2.}})
    summaries.write_validation(v, 10, l_k=-99., log_likelihood=-95., bits_per_dim=0.17,
                               elbo=-101., ess=2., active_units=[20],
                               log_weights=tf.zeros([5, 3]), num_samples=5,
                               eval_samples=50, num_images=3)
    summaries.write_images(v, 10, inputs=np.zeros([16, 784]),
                           reconstructions=np.zeros([16, 784]), samples=np.ones([16, 784]))
    w.close()
    v.close()
    out = summaries.write_evaluation(str(tmp_path), "test", 7, log_likelihood=-96.,
                                     nll=96., bits_per_dim=0.177, active_units=[20],
                                     num_samples=20, num_images=4)
    assert out == str(tmp_path / "eval_test")
    documented = {}
    for run, tag, _ in summaries.TAGS:
        documented.setdefault(run.replace("<split>", "test"), set()).add(
            tag.replace("layer{}", "layer1").replace("/{}", "/iwae")
            .replace("_k<k>[_first<n>]", "_k20"))
    written = {run: read_tags(str(tmp_path / run)) for run in documented}
    assert {run: set(tags) for run, tags in written.items()} == documented
    assert all(steps == [10] for steps in written["train"].values())
    assert all(steps == [7] for steps in written["eval_test"].values())  # the checkpoint's


def test_an_evaluation_of_fewer_images_or_another_k_keeps_its_own_tags(tmp_path):
    # A full L_5000 and a quick L_1 on the first 20 images of the same checkpoint: each
    # keeps its value under its own tag (the quick one used to overwrite bound/nll).
    full = dict(log_likelihood=-86.8, nll=86.8, bits_per_dim=0.16, active_units=[20])
    quick = dict(log_likelihood=-181.4, nll=181.4, bits_per_dim=0.33, active_units=[20])
    summaries.write_evaluation(str(tmp_path), "test", 50, num_samples=5000,
                               num_images=10000, **full)
    summaries.write_evaluation(str(tmp_path), "test", 50, num_samples=1, num_images=20,
                               first=20, **quick)
    values = scalar_values(str(tmp_path / "eval_test"))
    assert values["bound/nll_k5000"] == [(50, pytest.approx(86.8))]
    assert values["bound/nll_k1_first20"] == [(50, pytest.approx(181.4))]
    assert "bound/nll" not in values
    assert summaries.evaluation_tag("bound/nll", 5000) == "bound/nll_k5000"


def test_docs_tensorboard_table_lists_every_tag_with_its_runs():
    # docs/tensorboard.md's tag table (its "## Tags" section) names every tag that
    # `summaries.TAGS` defines, with the TensorBoard runs that hold it.
    with open(os.path.join(ROOT, "docs", "tensorboard.md")) as f:
        page = f.read()
    section = page.split("\n## Tags", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip().strip("`"): line for line in section.splitlines()
            if line.startswith("| `")}
    for run, tag, _ in summaries.TAGS:
        shown = tag.replace("layer{}", "layer<i>").replace("/{}", "/<estimator>")
        assert shown in rows, shown
        assert f"`{run}`" in rows[shown], (run, rows[shown])


# ---- hparams -------------------------------------------------------------------------

def hparams_plugin_data(logdir, tag, parse):
    """`parse(content)` of every value tagged `tag` in the events files of `logdir`."""
    found = []
    for path in glob.glob(os.path.join(logdir, "events.out.tfevents*")):
        for record in tf.data.TFRecordDataset(path):
            for value in tf.compat.v1.Event.FromString(record.numpy()).summary.value:
                if value.tag == tag:
                    found.append(parse(value.metadata.plugin_data.content))
    return found


def session_start_infos(logdir):
    return hparams_plugin_data(logdir, hp_metadata.SESSION_START_INFO_TAG,
                               hp_metadata.parse_session_start_info_plugin_data)


def experiment_configs(logdir):
    return hparams_plugin_data(logdir, hp_metadata.EXPERIMENT_TAG,
                               hp_metadata.parse_experiment_plugin_data)


def scalar_values(run_dir):
    """{tag: [(step, value)]} of a TensorBoard run directory's scalars."""
    out = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents*"))):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.HasField("tensor"):
                    out.setdefault(value.tag, []).append(
                        (event.step, float(tf.make_ndarray(value.tensor))))
    return out


def test_hparams_are_written_once_per_run_with_the_flags_it_started_with(tmp_path):
    logdir = str(tmp_path / "run")
    os.makedirs(logdir)
    config = dataclasses.asdict(trainer.RunConfig(logdir=logdir, objective="dreg",
                                                  num_samples=50, stochastic_layers=2))
    assert summaries.write_hparams(logdir, config)
    # A resumed run (here with another --epochs) finds them and adds nothing.
    assert not summaries.write_hparams(logdir, dict(config, epochs=99))
    infos = session_start_infos(logdir)
    assert len(infos) == 1
    values = {k: getattr(v, v.WhichOneof("kind")) for k, v in infos[0].hparams.items()}
    assert values["objective"] == "dreg" and values["num_samples"] == 50.
    assert values["stochastic_layers"] == 2. and values["epochs"] == 10.
    assert values["init_from"] == ""  # None is written as the empty string
    assert set(values) == {h.name for h in summaries.HPARAMS}
    assert values["flag_changes"] == ""
    assert infos[0].group_name == "run"  # one HParams row per run, named by its logdir


def test_hparams_show_first_the_flags_that_tell_runs_apart(tmp_path):
    # TensorBoard orders the HParams columns by `differs`, then by name, and shows the
    # first ones: the estimator, k, layers, dataset and binarisation are marked, not
    # --epochs or --batch_size; the first metric is the paper's test NLL at k = 5000.
    logdir = str(tmp_path)
    summaries.write_hparams(logdir, dataclasses.asdict(trainer.RunConfig(logdir=logdir)))
    (experiment,) = experiment_configs(logdir)
    shown = sorted(experiment.hparam_infos, key=lambda h: (not h.differs, h.name))
    assert {h.name for h in shown[:5]} == {"objective", "num_samples", "stochastic_layers",
                                           "dataset", "binarization"}
    assert not any(h.differs for h in shown[5:])
    first = experiment.metric_infos[0]
    assert (first.name.group, first.name.tag) == ("eval_test", "bound/nll_k5000")
    assert "k=5000" in first.display_name


def test_hparams_are_rewritten_with_a_flag_change_on_resume(tmp_path):
    logdir = str(tmp_path)
    config = dataclasses.asdict(trainer.RunConfig(logdir=logdir))
    summaries.write_hparams(logdir, config)
    assert summaries.write_hparams(logdir, dict(config, learning_rate=1e-4), replace=True,
                                   flag_changes="step 60: learning_rate 0.001 -> 0.0001")
    (info,) = session_start_infos(logdir)  # the old session is gone, not shadowing
    values = {k: getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}
    assert values["learning_rate"] == pytest.approx(1e-4)
    assert values["flag_changes"] == "step 60: learning_rate 0.001 -> 0.0001"


def test_hparams_lookup_reads_a_file_cut_short_by_a_kill(tmp_path):
    logdir = str(tmp_path)
    summaries.write_hparams(logdir, dataclasses.asdict(trainer.RunConfig(logdir=logdir)))
    (path,) = glob.glob(os.path.join(logdir, "events.out.tfevents*"))
    with open(path, "ab") as f:
        f.write(b"\x30\x00\x00\x00\x00")  # the start of a record that never finished
    assert summaries.has_hparams(logdir)
    with open(path, "r+b") as f:  # a cut inside the hparams records: write them again
        f.truncate(60)
    assert not summaries.has_hparams(logdir)


# ---- experiments/results.py ----------------------------------------------------------

def test_results_runs_share_one_parent_logdir_named_in_the_tensorboard_command(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "results_script", os.path.join(ROOT, "experiments", "results.py"))
    results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results)
    args = results.parse_args([f"--runs_dir={tmp_path}"])
    args.train_size = 3500
    parent = results.tensorboard_logdir(args)
    assert parent == os.path.join(str(tmp_path), "mnist_5k")
    runs = results.plan(args)
    # 5 per architecture (VAE k=1,5,50; IWAE k=5,50), DReG k=50 for each architecture,
    # fixed binarisation, 4 fine-tuning runs
    assert len(runs) == 17
    for run in runs:
        for cmd in results.commands(args, run).values():
            logdir = next(a for a in cmd if a.startswith("--logdir=")).split("=", 1)[1]
            assert os.path.dirname(logdir) == parent, cmd


# ---- a real TensorBoard --------------------------------------------------------------



def poll(fn, timeout=90):
    """fn() until it returns something truthy (connection errors retried)."""
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (OSError, ValueError) as e:
            last = e
        time.sleep(0.5)
    raise AssertionError(f"TensorBoard did not serve the data in {timeout}s: {last!r}")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny launcher runs (VAE and IWAE objectives) under one parent logdir, and a
    test-set evaluation of the IWAE one: (parent, evaluation results, {objective: the
    run's stdout}). --noxla: for 20 steps compiling the step costs more than it saves."""
    parent = tmp_path_factory.mktemp("runs")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    procs = [subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "launch", "train.py"), f"--logdir={parent / o}",
         f"--objective={o}", "--max_steps=20", "--eval_every=20", "--eval_images=20",
         "--eval_samples=50", "--log_every=10", "--noxla"], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE) for o in ("vae", "iwae")]
    outs = {}
    for objective, p in zip(("vae", "iwae"), procs):  # the two share the machine's cores
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        outs[objective] = out
    # The HParams table's test NLL: L_5000 over the whole test split (1,000 images).
    ev = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "evaluate.py"),
                         f"--logdir={parent / 'iwae'}"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr[-3000:]
    with open(parent / "iwae" / "eval_test_k5000.json") as f:
        return parent, json.load(f), outs


@pytest.mark.slow
def test_tensorboard_serves_hparams_grouped_scalars_and_image_grids(two_runs):
    parent, evaluated, outs = two_runs
    with tensorboard(parent) as url:
        hparams = f"{url}/data/plugin/hparams"
        request = {"experimentName": "", "startIndex": 0, "sliceSize": 100,
                   "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS",
                                       "STATUS_FAILURE", "STATUS_RUNNING"],
                   "colParams": [{"metric": {"group": "eval_test", "tag": "bound/nll_k5000"},
                                  "order": "ORDER_ASC", "missingValuesFirst": False}]}

        def both_sessions_with_test_metric():
            groups = json.loads(fetch(f"{hparams}/session_groups", request))["sessionGroups"]
            return groups if len(groups) == 2 and any(
                m["name"]["group"] == "eval_test" for g in groups
                for m in g["metricValues"]) else None

        groups = poll(both_sessions_with_test_metric)
        experiment = json.loads(fetch(f"{hparams}/experiment", {"experimentName": ""}))
        # The experiment: the flags as columns, the metrics declared.
        names = {h["name"] for h in experiment["hparamInfos"]}
        assert {"objective", "num_samples", "stochastic_layers", "batch_size",
                "schedule", "learning_rate"} <= names
        metrics = [(m["name"]["group"], m["name"]["tag"]) for m in experiment["metricInfos"]]
        assert metrics[:3] == [("eval_test", "bound/nll_k5000"),
                               ("eval_test", "bound/bits_per_dim_k5000"),
                               ("validation", "bound/log_likelihood")]
        # The flags that tell runs apart come first (TensorBoard shows the first ones).
        assert {h["name"] for h in experiment["hparamInfos"][:5]} == set(
            summaries.HPARAMS_FIRST)
        # One row per run, with its own objective; sorted by test NLL, the evaluated first.
        assert [g["sessions"][0]["name"] for g in groups] == ["iwae", "vae"]
        assert [g["hparams"]["objective"] for g in groups] == ["iwae", "vae"]
        assert all(g["hparams"]["num_samples"] == 5 for g in groups)
        values = [{(m["name"]["group"], m["name"]["tag"]): m["value"]
                   for m in g["metricValues"]} for g in groups]
        assert values[0][("eval_test", "bound/nll_k5000")] == pytest.approx(
            evaluated["nll_nats"], rel=1e-6)
        assert values[0][("eval_test", "bound/bits_per_dim_k5000")] == pytest.approx(
            evaluated["bits_per_dim"], rel=1e-6)
        assert ("eval_test", "bound/nll_k5000") not in values[1]  # the VAE: not evaluated
        for objective, v in zip(["iwae", "vae"], values):
            # validation L_50 >= L_5 on the same images, on average
            assert -300 < v[("validation", "bound/L_k")] < -100
            assert v[("validation", "bound/log_likelihood")] > v[("validation", "bound/L_k")]
            # the active units the run counted at its validation step (its log line
            # "active units [n] on 20 images"), out of the 50 of layer 1
            logged = re.search(r"validation step 20: .* active units \[(\d+)\] on 20 images",
                               outs[objective])
            assert logged, outs[objective][-2000:]
            assert v[("validation", "posterior/active_units/layer1")] == int(logged.group(1))
            assert 0 <= int(logged.group(1)) <= 50

        # A grouped scalar tag.
        points = json.loads(fetch(f"{url}/data/plugin/scalars/scalars?run=vae/train"
                                  f"&tag=bound/objective"))
        assert [p[1] for p in points] == [10, 20] and all(-300 < p[2] < 0 for p in points)

        # The grids: one image per validation step, 16 inputs over their reconstructions
        # in rows of 8 (112 x 224 pixels) and 16 samples (56 x 224).
        for tag, shape in (("images/reconstructions", (112, 224, 1)),
                           ("images/samples", (56, 224, 1))):
            listing = json.loads(fetch(f"{url}/data/plugin/images/images?run=iwae/"
                                       f"validation&tag={tag}"))
            assert [im["step"] for im in listing] == [20]
            png = fetch(f"{url}/data/plugin/images/individualImage?{listing[0]['query']}")
            assert tf.io.decode_png(png).shape == shape, tag
