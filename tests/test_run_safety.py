"""What a training run refuses and what it keeps: changed training flags on resume,
divergence, a full disk, the remains of a killed checkpoint write (in-process runs of
`trainer.train` on the embedded MNIST digits)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfp_iwae import rundir, trainer

from helpers import checkpoint_values


def config(logdir, **flags):
    """A short run: no validation, a checkpoint every 10 steps, no XLA (for 20-40 steps
    compiling costs more than it saves)."""
    base = dict(logdir=str(logdir), max_steps=20, eval_every=0, log_every=10,
                checkpoint_every=10, xla=False)
    return trainer.RunConfig(**dict(base, **flags))


def quiet(lines):
    return lines.append


def test_a_changed_learning_rate_on_resume_is_refused_and_nothing_changes(tmp_path):
    trainer.train(config(tmp_path), log=quiet([]))
    before = open(tmp_path / rundir.CONFIG_FILE).read()
    with pytest.raises(trainer.TrainingError, match=r"\(learning_rate=0\.001 there vs 0\.1 now"
                       r".* allow_changed_flags=learning_rate"):
        trainer.train(config(tmp_path, max_steps=40, learning_rate=0.1), log=quiet([]))
    assert open(tmp_path / rundir.CONFIG_FILE).read() == before
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-20")


@pytest.mark.parametrize("flag,value", [("mixed_precision", True), ("num_shards", 2)])
def test_other_trajectory_flags_are_refused_too(tmp_path, flag, value):
    trainer.train(config(tmp_path), log=quiet([]))
    with pytest.raises(trainer.TrainingError, match=f"\\({flag}=.* there vs .* now"):
        trainer.train(config(tmp_path, max_steps=40, **{flag: value}), log=quiet([]))


def test_an_allowed_change_is_logged_and_recorded_in_the_history(tmp_path):
    trainer.train(config(tmp_path), log=quiet([]))
    lines = []
    trainer.train(config(tmp_path, max_steps=40, learning_rate=5e-4,
                         allow_changed_flags="learning_rate"), log=lines.append)
    assert any("learning_rate= changed from 0.001 to 0.0005 at step 20" in l for l in lines)
    recorded = json.load(open(tmp_path / rundir.CONFIG_FILE))
    assert recorded["learning_rate"] == 5e-4
    (change,) = recorded["history"]
    assert change["step"] == 20 and change["changed"] == {"learning_rate": [1e-3, 5e-4]}
    # The same values again: no change, nothing more in the history; and the file still
    # loads as the run's config.
    trainer.train(config(tmp_path, max_steps=50, learning_rate=5e-4), log=quiet([]))
    assert len(json.load(open(tmp_path / rundir.CONFIG_FILE))["history"]) == 1
    assert rundir.load_config(str(tmp_path)).learning_rate == 5e-4


def test_allow_changed_flags_names_only_training_flags(tmp_path):
    with pytest.raises(trainer.TrainingError, match="--allow_changed_flags: expected a comma "
                       "list of learning_rate"):
        trainer.train(config(tmp_path, allow_changed_flags="batch_size"), log=quiet([]))


def test_a_diverging_run_never_replaces_the_last_good_checkpoint(tmp_path):
    # Resumed at a 100x learning rate (allowed), the bound falls by orders of magnitude
    # within a few steps: the run stops before writing a checkpoint, and the good ones,
    # with their weights, are all still there.
    trainer.train(config(tmp_path, max_steps=40, keep_checkpoints=2), log=quiet([]))
    ckpt_dir = str(tmp_path / "checkpoints")
    good = checkpoint_values(os.path.join(ckpt_dir, "ckpt-40"))
    with pytest.raises(trainer.TrainingError, match=r"training diverged before step 50.*"
                       r"last good one stays .*ckpt-40"):
        trainer.train(config(tmp_path, max_steps=200, keep_checkpoints=2, learning_rate=0.1,
                             allow_changed_flags="learning_rate"), log=quiet([]))
    state = tf.train.get_checkpoint_state(ckpt_dir)
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
        "ckpt-30", "ckpt-40"]
    after = checkpoint_values(os.path.join(ckpt_dir, "ckpt-40"))
    for k in good:
        np.testing.assert_array_equal(good[k], after[k], err_msg=k)
    # The bound each checkpoint was written at travels with it (the next run's reference).
    bound = rundir.checkpoint_value(os.path.join(ckpt_dir, "ckpt-40"), "train_bound")
    assert -400 < bound < -100


def test_stale_temp_directories_of_a_killed_write_are_removed(tmp_path):
    # TensorFlow writes a checkpoint into ckpt-N_temp/ and renames it: a kill mid-write
    # leaves the directory. The next run (holding the lock) removes those, and only those.
    ckpt_dir = tmp_path / "checkpoints"
    (ckpt_dir / "ckpt-10_temp").mkdir(parents=True)
    (ckpt_dir / "ckpt-10_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(
        b"\0" * 100)
    (ckpt_dir / "notes_temp").mkdir()  # not TensorFlow's: left alone
    lines = []
    trainer.train(config(tmp_path), log=lines.append)
    assert not (ckpt_dir / "ckpt-10_temp").exists()
    assert (ckpt_dir / "notes_temp").is_dir()
    assert any("removed" in l and "ckpt-10_temp" in l for l in lines)


def test_a_full_disk_is_reported_as_such_with_the_directory_and_free_space(tmp_path,
                                                                           monkeypatch):
    def no_space(self, checkpoint_number=None, **kwargs):
        raise tf.errors.ResourceExhaustedError(
            None, None, f"{self.directory}/ckpt-10_temp/part-00000-of-00001.data-00000-of"
                        f"-00001.tempstate123; No space left on device")

    monkeypatch.setattr(tf.train.CheckpointManager, "save", no_space)
    with pytest.raises(trainer.TrainingError) as e:
        trainer.train(config(tmp_path), log=quiet([]))
    message = str(e.value)
    assert message.startswith("disk full:") and "out of memory" not in message
    assert os.path.abspath(str(tmp_path)) in message and "MiB free there now" in message


@pytest.mark.slow
def test_the_progress_rate_counts_training_time_only(tmp_path, monkeypatch):
    # Each validation is made to take 2 s more: the examples/s of the progress line
    # after it must not count them (it used to drop several times after a validation).
    from tfp_iwae import evaluation
    real = evaluation.validate

    def slow(*args, **kwargs):
        import time
        time.sleep(2.)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "validate", slow)
    lines = []
    trainer.train(config(tmp_path, max_steps=60, log_every=20, eval_every=20, eval_images=20,
                         eval_samples=10, checkpoint_every=0), log=lines.append)
    rates = [float(l.split(" ex/s")[0].rsplit(" ", 1)[1]) for l in lines
             if l.startswith("step ")]
    # Steps 21-60 (800 examples) ran with two validations (4 s) in between: counted, the
    # rate could not exceed 200 ex/s.
    assert len(rates) == 3 and rates[-1] > 3 * 800 / 4., lines
