"""The fused training loop: many optimizer steps in one compiled call (fused_loop.TrainLoop)."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

import tfp_iwae
from helpers import checkpoint_values
from tfp_iwae import fused_loop, schedule, sources

IMAGES = sources.embedded_mnist("train")[0][:400]


def run(total, steps_per_call, *, images=IMAGES, resident=True, dynamic=True,
        learning_rates=((0, 1e-3), (23, 3e-4))):
    """Trains `total` steps in calls of `steps_per_call`; returns (weights, last output,
    optimizer)."""
    model = tfp_iwae.IWAE(1, data_mean=IMAGES.mean(0), seed=0)
    opt = schedule.make_optimizer(1e-3)
    loop = fused_loop.TrainLoop(model, opt, 3, images, batch_size=20, seed=5,
                                dynamic=dynamic, learning_rates=learning_rates,
                                max_steps_per_call=steps_per_call, resident=resident)
    s, out = 0, None
    while s < total:
        n = min(steps_per_call, total - s)
        out = loop(s, n)
        if int(out["steps"]) < n:
            return [v.numpy() for v in model.trainable_variables], out, opt, s
        s += n
    return [v.numpy() for v in model.trainable_variables], out, opt, s


@pytest.mark.slow
def test_numbers_do_not_depend_on_steps_per_call_or_where_the_images_live():
    # 50 steps cross an epoch boundary (20 steps/epoch: a new permutation) and a stage
    # boundary (step 23); every draw is a function of (seed, step) alone, so the weights
    # are bit-identical however the steps are grouped and whether the batches are
    # gathered on the device or on the host.
    a, out_a, opt_a, _ = run(50, 50)
    b, out_b, _, _ = run(50, 7)
    c, out_c, _, _ = run(50, 16, resident=False)
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    assert float(out_a["bound"]) == float(out_b["bound"]) == float(out_c["bound"])
    assert int(out_a["steps"]) == 50 and float(out_a["finite"]) == 1.
    # The stage of the last step (49 >= 23) set the learning rate.
    assert float(opt_a.learning_rate) == pytest.approx(3e-4)
    # Training moved the weights away from the initialisation and improved the bound.
    first, out_first, _, _ = run(1, 1)
    assert float(out_a["bound"]) > float(out_first["bound"]) + 5.
    assert any(np.abs(x - y).max() > 1e-3 for x, y in zip(a, first))


@pytest.mark.slow
def test_a_non_finite_step_is_not_applied_and_ends_the_call():
    # Image 0 is NaN, so the first batch holding it (in epoch 0's permutation) gives a
    # NaN bound: the call stops there, reports the steps applied, and the weights equal
    # those of a run of exactly that many steps.
    images = IMAGES.copy()
    images[0] = np.nan
    bad, out, _, start = run(40, 40, images=images, dynamic=False)
    applied = int(out["steps"])
    assert float(out["finite"]) == 0. and applied < 20
    good, _, _, _ = run(applied, 40, images=images, dynamic=False) if applied else (
        [v.numpy() for v in tfp_iwae.IWAE(1, data_mean=IMAGES.mean(0),
                                           seed=0).trainable_variables], None, None, 0)
    for x, y in zip(bad, good):
        np.testing.assert_array_equal(x, y)


def test_bad_arguments_are_named():
    model = tfp_iwae.IWAE(1, seed=0)
    with pytest.raises(ValueError, match="images") as e:
        fused_loop.TrainLoop(model, schedule.make_optimizer(), 3, IMAGES[:10], batch_size=20,
                             seed=0)
    assert isinstance(e.value, tfp_iwae.Error)  # the package's own error, a ValueError
    loop = fused_loop.TrainLoop(model, schedule.make_optimizer(), 3, IMAGES, batch_size=20,
                                seed=0, max_steps_per_call=4)
    with pytest.raises(ValueError, match="num_steps") as e:
        loop(0, 5)
    assert isinstance(e.value, tfp_iwae.Error)


def test_each_step_runs_at_its_learning_rate_and_stages_is_the_former_keyword():
    # Step s runs at the rate of the last (first_step, rate) entry with first_step <= s.
    # `stages=`, the keyword's former name, takes the same list with the same meaning.
    rates = ((0, 1e-3), (3, 3e-4))
    opt = schedule.make_optimizer(1e-2)
    loop = fused_loop.TrainLoop(tfp_iwae.IWAE(1, seed=0), opt, 2, IMAGES[:40], batch_size=20,
                                seed=0, stages=rates, jit_compile=False)
    loop(0, 3)  # steps 0..2: the first entry
    assert float(opt.learning_rate) == pytest.approx(1e-3)
    loop(3, 1)  # step 3: the second
    assert float(opt.learning_rate) == pytest.approx(3e-4)
    with pytest.raises(TypeError, match="not both") as e:
        fused_loop.TrainLoop(tfp_iwae.IWAE(1, seed=0), opt, 2, IMAGES[:40], batch_size=20,
                             seed=0, learning_rates=rates, stages=rates)
    assert isinstance(e.value, tfp_iwae.Error)


def _train(tmp_path, name, **flags):
    """trainer.train on mnist_5k, k=3, batch 20, no validation; returns (result, log lines)."""
    from tfp_iwae import trainer
    lines = []
    config = trainer.RunConfig(logdir=str(tmp_path / name), num_samples=3, batch_size=20,
                               eval_every=0, log_every=0, schedule="constant", epochs=1,
                               **flags)
    return trainer.train(config, log=lines.append), lines


@pytest.mark.slow
def test_the_training_loop_gives_the_same_weights_for_any_steps_per_call(tmp_path):
    # 40 steps with calls of at most 7 steps, checkpoints every 10 (7 divides neither 10
    # nor 40), against calls of up to 100: every draw is a function of (seed, step), and
    # each call ends at a checkpoint step, so the saved weights are bit-identical.
    a, _ = _train(tmp_path, "n7", steps_per_call=7, checkpoint_every=10, max_steps=40)
    b, _ = _train(tmp_path, "n100", steps_per_call=100, checkpoint_every=0, max_steps=40)
    assert a["step"] == b["step"] == 40
    wa, wb = checkpoint_values(a["checkpoint"]), checkpoint_values(b["checkpoint"])
    assert wa.keys() == wb.keys() and len(wa) == 14
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)
    assert sorted(os.listdir(tmp_path / "n7" / "checkpoints")) == sorted(
        [f"ckpt-{s}.{ext}" for s in (20, 30, 40) for ext in ("index", "data-00000-of-00001")]
        + ["checkpoint"])


@pytest.mark.slow
def test_the_training_loop_stops_at_a_non_finite_step_and_names_it(tmp_path, monkeypatch):
    # One training image is NaN (after the model's data mean was taken): the first step
    # whose batch holds it has a NaN bound. That step is not applied, the run stops naming
    # it, and no checkpoint holds a step at or after it.
    from tfp_iwae import data, trainer
    original = data.presented

    def with_nan(*args, **kwargs):
        images, dynamic = original(*args, **kwargs)
        images = images.copy()
        images[0] = np.nan
        return images, dynamic

    monkeypatch.setattr(data, "presented", with_nan)
    with pytest.raises(trainer.TrainingError, match=r"non-finite loss or gradient at step "
                                                 r"(\d+) \(weights not updated\)") as e:
        _train(tmp_path, "nan", binarization="none", checkpoint_every=10, steps_per_call=30)
    bad = int(re.search(r"at step (\d+)", str(e.value)).group(1))
    assert 0 <= bad < 3500 // 20  # in the first epoch, the one whose order holds image 0
    latest = tf.train.latest_checkpoint(str(tmp_path / "nan" / "checkpoints"))
    if bad >= 10:
        assert latest.endswith(f"ckpt-{bad // 10 * 10}")
        assert all(np.isfinite(v).all() for v in checkpoint_values(latest).values())
    else:
        assert latest is None
