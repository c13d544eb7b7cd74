"""Your own model: a user-written convolutional VAE (plain Keras networks for `[batch,
...]` images, no sample-axis reshaping, no members beyond the networks) trained through
every path of the package and evaluated by its tools."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfp_iwae
from tfp_iwae import schedule, seeds
from tfp_iwae import step as step_lib

LATENT = 8


def conv_networks(seed=1):
    """A small conv encoder (loc and raw scale of 8 latents) and decoder (28x28x1
    logits), written for [batch, ...] inputs as any Keras user would."""
    keras.utils.set_random_seed(seed)
    encoder = keras.Sequential([
        keras.layers.Conv2D(8, 3, 2, padding="same", activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(2 * LATENT)])
    decoder = keras.Sequential([
        keras.layers.Dense(14 * 14 * 8, activation="relu"),
        keras.layers.Reshape((14, 14, 8)),
        keras.layers.Conv2DTranspose(1, 3, 2, padding="same")])
    return encoder, decoder


@pytest.fixture(scope="module")
def images(mnist_5k):
    """200 binarised training digits as [200, 28, 28, 1] images."""
    x = mnist_5k[0][:200].reshape(-1, 28, 28, 1)
    return (np.random.default_rng(0).random(x.shape) < x).astype(np.float32)


def test_the_sample_axis_is_folded_for_the_networks_and_images_keep_their_shape(images):
    model = tfp_iwae.LatentVariableModel(*conv_networks())
    lw = model.log_weights(images[:4], num_samples=5, seed=1)
    assert lw.shape == (5, 4) and model.event_shape == (28, 28, 1)
    assert model.latent_shape == (LATENT,)
    # Each log weight is log p(z) + log p(x|z) - log q(z|x) of its own sample: the
    # decoder saw the k samples of the 4 images folded into one batch of 20.
    q = model.encoder(images[:4])
    z = q.sample(5, seed=seeds.stateless_seed(1))
    px = model.decoder(z)
    assert px.batch_shape == (5, 4) and px.event_shape == (28, 28, 1)
    by_hand = model.prior.log_prob(z) + px.log_prob(images[:4]) - q.log_prob(z)
    np.testing.assert_allclose(lw, by_hand, rtol=1e-5)
    assert model.sample(3, seed=0).shape == (3, 28, 28, 1)
    assert model.sample(0, seed=0).shape == (0, 28, 28, 1)


@pytest.mark.slow
def test_own_gradient_tape_loop_with_log_weights_and_iwae_bound(images):
    model = tfp_iwae.LatentVariableModel(*conv_networks())
    model.build_from(images[:1])
    opt = schedule.make_optimizer(3e-3)
    before = float(tf.reduce_mean(model.bound(images, 5, seed=9)))
    for step in range(30):
        x = images[(step % 10) * 20:(step % 10 + 1) * 20]
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(tfp_iwae.iwae_bound(model.log_weights(x, 5, seed=step)))
        variables = model.encoder_variables + model.decoder_variables
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    after = float(tf.reduce_mean(model.bound(images, 5, seed=9)))
    assert after > before + 30, (before, after)  # from ~-540 nats at init


def test_make_train_step_builds_the_networks_from_the_first_batch(images):
    model = tfp_iwae.LatentVariableModel(*conv_networks())
    assert not model.encoder_variables  # nothing built yet
    step = tfp_iwae.make_train_step(model, schedule.make_optimizer(1e-3), 5,
                                    estimator="dreg")
    out = step(images[:20], 0)
    assert np.isfinite(float(out["bound"])) and model.encoder_variables
    # A Python int seed is converted once: new values reuse the compiled step.
    for s in range(1, 4):
        step(images[20:40], s)
    assert step.experimental_get_tracing_count() == 1


def test_a_model_missing_a_member_is_told_which():
    class NoDecoder:
        prior = encoder = encoder_variables = decoder_variables = None

    with pytest.raises(TypeError, match=r"needs a model with `decoder` .*NoDecoder has no "
                                        r"`decoder`"):
        tfp_iwae.make_train_step(NoDecoder(), schedule.make_optimizer(), 5)


@pytest.mark.slow
def test_fit_takes_the_same_first_step_as_make_train_step(images):
    # The same networks, optimizer, estimator and seed: one step of Keras fit and one of
    # make_train_step give the same weights (to float32 rounding).
    a = tfp_iwae.LatentVariableModel(*conv_networks(seed=3))
    b = tfp_iwae.LatentVariableModel(*conv_networks(seed=3))
    for m in (a, b):
        m.build_from(images[:1])
    for va, vb in zip(a.variables, b.variables):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    step = tfp_iwae.make_train_step(a, schedule.make_optimizer(1e-3), 5, estimator="dreg")
    step(images[:20], step_lib.step_seed(seeds.stateless_seed(7), 0))
    b.compile(optimizer=schedule.make_optimizer(1e-3), estimator="dreg", num_samples=5,
              seed=7)
    b.fit(images[:20], batch_size=20, epochs=1, shuffle=False, verbose=0)
    assert int(b.optimizer.iterations) == 1
    for va, vb in zip(a.variables, b.variables):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_fit_reports_bounds_and_works_with_keras_callbacks(images, tmp_path):
    model = tfp_iwae.LatentVariableModel(*conv_networks())
    model.compile(optimizer=schedule.make_optimizer(1e-3), estimator="dreg", num_samples=5)
    ds = tf.data.Dataset.from_tensor_slices(images).batch(20)
    history = model.fit(ds, epochs=3, validation_data=ds.take(2), verbose=0, callbacks=[
        keras.callbacks.TensorBoard(str(tmp_path / "tb")),
        keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), monitor="val_loss",
                                        save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="loss", patience=5),
        keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    h = history.history
    for name in ("loss", "bound", "iwae_bound", "elbo", "ess", "val_iwae_bound"):
        assert len(h[name]) == 3, (name, h)
    # L_k >= ELBO; ESS in [1, k]; training improves the bound.
    assert all(lk >= elbo for lk, elbo in zip(h["iwae_bound"], h["elbo"]))
    assert all(1 <= e <= 5 for e in h["ess"]) and h["bound"][-1] > h["bound"][0]
    assert os.listdir(tmp_path / "tb")
    # evaluate gives L_k at the compiled k; a .keras file round-trips.
    result = model.evaluate(ds.take(2), verbose=0, return_dict=True)
    assert result["iwae_bound"] == pytest.approx(-result["loss"])
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.log_weights(images[:4], 5, seed=1),
                               model.log_weights(images[:4], 5, seed=1), rtol=1e-6)
    assert keras.models.load_model(str(tmp_path / "best.keras")).event_shape == (28, 28, 1)


@pytest.mark.slow
def test_the_evaluation_tools_and_export_take_the_own_model(images, tmp_path):
    model = tfp_iwae.LatentVariableModel(*conv_networks())
    model.compile(optimizer=schedule.make_optimizer(3e-3), estimator="iwae", num_samples=5)
    model.fit(images, batch_size=20, epochs=2, verbose=0)
    test = images[:20]
    # L_k: the streamed estimate is the log-mean-exp of its own log weights [k, 20] (in
    # chunks of 20 samples), and it grows with k on average (Burda et al., thm 1).
    l50, lw = tfp_iwae.estimate_log_likelihood(model, test, 50, seed=3, chunk_size=20,
                                               return_log_weights=True)
    l1 = tfp_iwae.estimate_log_likelihood(model, test, 1, seed=3)
    assert l50.shape == (20,) and lw.shape == (50, 20) and np.mean(l50) > np.mean(l1)
    np.testing.assert_allclose(l50, tfp_iwae.iwae_bound(lw).numpy(), rtol=1e-6)
    marginal = tfp_iwae.ImportanceWeightedMarginal(model, num_samples=50, seed=3)
    assert marginal.event_shape == (28, 28, 1)
    lp = marginal.log_prob(test[:4])
    assert lp.shape == (4,) and np.all(np.isfinite(lp)) and np.all(lp < 0)
    assert marginal.sample(2, seed=1).shape == (2, 28, 28, 1)
    units = tfp_iwae.active_units(model, images)
    assert len(units["counts"]) == 1 and 0 <= units["counts"][0] <= LATENT
    assert units["statistics"][0].shape == (LATENT,)
    path = str(tmp_path / "saved")
    tfp_iwae.export_saved_model(model, path, num_samples=50, seed=3)
    loaded = tf.saved_model.load(path)
    served = loaded.signatures["log_prob"](x=tf.constant(test[:4]))["log_prob"].numpy()
    assert served.shape == (4,) and np.all(np.isfinite(served))
    assert loaded.signatures["sample"](n=tf.constant(3))["x"].shape == (3, 28, 28, 1)


@pytest.mark.slow
def test_the_conv_example_runs_end_to_end(tmp_path):
    # examples/conv_iwae.py on the embedded digits with a tiny budget: fit with DReG,
    # L_100 of 20 test images, samples, .keras and SavedModel.
    import json
    import subprocess
    import sys
    from helpers import ROOT, launcher_env
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "conv_iwae.py"), "--dataset=mnist_5k",
         "--epochs=1", "--steps_per_epoch=10", "--batch_size=20", "--eval_images=20",
         "--eval_samples=100", f"--out={tmp_path}"], capture_output=True, text=True,
        env=launcher_env(), timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["estimator"] == "dreg" and result["test_images"] == 20
    assert -700 < result["test_log_likelihood_nats"] < 0
    for name in ("model.keras", "samples.png", "saved_model"):
        assert (tmp_path / name).exists(), name


@pytest.mark.slow
def test_the_fused_train_loop_trains_the_own_model(images):
    # TrainLoop (many steps per compiled call, images on the device, dynamic
    # binarisation in the program) on [N, 28, 28, 1] images: the same numbers whatever
    # the steps per call (every draw is a function of (seed, step)).
    grey = images  # already binary: binarising again leaves them as they are
    results = []
    for calls in ([10, 10], [20]):
        model = tfp_iwae.LatentVariableModel(*conv_networks(seed=5))
        loop = tfp_iwae.TrainLoop(model, schedule.make_optimizer(1e-3), 5, grey,
                                  batch_size=20, seed=0, estimator="dreg",
                                  max_steps_per_call=20)
        first = 0
        for n in calls:
            out = loop(first, n)
            assert int(out["steps"]) == n
            first += n
        results.append([v.numpy() for v in model.weights])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_keras_file_loads_compiled_as_saved_and_fit_continues_the_same(images, tmp_path):
    # get_compile_config carries the estimator, k and seed; compile_from_config rebuilds
    # the optimizer's slots in the order fit applies gradients, so that Keras restores the
    # Adam moments: one more epoch of the saved and of the loaded model gives the same
    # weights (fit's step s draws with fold_in(seed, s), s read from the optimizer).
    import warnings
    model = tfp_iwae.LatentVariableModel(*conv_networks())
    model.compile(optimizer=tfp_iwae.make_optimizer(1e-3), estimator="dreg", num_samples=7,
                  seed=3, steps_per_execution=2)
    model.fit(images[:40], batch_size=20, epochs=1, shuffle=False, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras warns when it cannot compile on load
        loaded = keras.models.load_model(path)
    settings = loaded._fit_settings
    assert (settings["estimator"].name, settings["num_samples"]) == ("dreg", 7)
    np.testing.assert_array_equal(settings["seed"], seeds.stateless_seed(3))
    assert loaded.steps_per_execution == 2 and int(loaded.optimizer.iterations) == 2
    for m in (model, loaded):
        m.fit(images[:40], batch_size=20, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(loaded.variables, model.variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_the_paper_1_layer_iwae_is_a_latent_variable_model_of_plain_keras_mlps():
    # IWAE(1) is p(z) = N(0, I) over 50 units, q(z|x) = N(loc, exp(raw)) from a 784-200-
    # 200-(50 + 50) tanh MLP and p(x|z) = Bernoulli(logits) from a 50-200-200-784 tanh
    # MLP. The same weights in two keras.Sequential MLPs (q's loc and raw-std heads side
    # by side as one Dense(100)) give LatentVariableModel the same model: its log weights
    # on the same seed (the same draws of z) equal IWAE's to float32 rounding.
    iwae = tfp_iwae.IWAE(1, seed=0)

    def mlp(out):
        return keras.Sequential([keras.layers.Dense(200, "tanh"),
                                 keras.layers.Dense(200, "tanh"), keras.layers.Dense(out)])
    encoder, decoder = mlp(100), mlp(784)
    model = tfp_iwae.LatentVariableModel(encoder, decoder)
    x = (np.random.default_rng(0).random([6, 784]) < 0.3).astype(np.float32)
    model.build_from(x)
    q, p = iwae.q_layers[0], iwae.p_x
    encoder.set_weights([np.asarray(v) for v in q.mlp.variables] + [
        np.concatenate([np.asarray(q.loc_layer.kernel), np.asarray(q.std_layer.kernel)], 1),
        np.concatenate([np.asarray(q.loc_layer.bias), np.asarray(q.std_layer.bias)])])
    decoder.set_weights([np.asarray(v) for v in p.mlp.variables + p.logits_layer.variables])
    np.testing.assert_allclose(model.log_weights(x, 7, seed=3), iwae.log_weights(x, 7, seed=3),
                               rtol=1e-6)
    assert model.latent_shape == (50,)
