"""A convolutional IWAE of your own, trained with Keras `fit` and the DReG estimator.

    python examples/conv_iwae.py                                   # Fashion-MNIST if
    python examples/conv_iwae.py --dataset=mnist_5k --epochs=2     #   installed, else
                                                                   #   the embedded digits

Everything here is tfp_iwae's public API and plain Keras: the networks are written for
`[batch, 28, 28, 1]` images (the package folds the k importance samples into the batch
for them), `fit` trains with `estimator="dreg"` (Tucker et al., 2019) at k = 5, then the
test log-likelihood is estimated with L_5000 (Burda et al., 2015), samples are drawn and
the model is exported as a SavedModel. Writes into --out: TensorBoard logs, `model.keras`,
`samples.png`, `saved_model/` and `result.json` (test L_k in nats).
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfp_iwae  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
LATENT = 16


def networks():
    """q(z|x): loc and raw scale of 16 latents from a conv net; p(x|z): 28x28x1 logits."""
    encoder = keras.Sequential([
        keras.layers.Conv2D(32, 3, 2, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 3, 2, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(2 * LATENT)], name="encoder")
    decoder = keras.Sequential([
        keras.layers.Dense(7 * 7 * 64, activation="relu"),
        keras.layers.Reshape((7, 7, 64)),
        keras.layers.Conv2DTranspose(32, 3, 2, padding="same", activation="relu"),
        keras.layers.Conv2DTranspose(1, 3, 2, padding="same")], name="decoder")
    return encoder, decoder


def as_images(x):
    return tf.reshape(x, [-1, 28, 28, 1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = "fashion_mnist" if os.path.exists(
        os.path.join(FASHION, "train-images-idx3-ubyte.gz")) else "mnist_5k"
    p.add_argument("--dataset", default=default)
    p.add_argument("--data_dir", default=FASHION if default == "fashion_mnist" else None)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--steps_per_epoch", type=int, default=0, help="0: one pass")
    p.add_argument("--batch_size", type=int, default=100)
    p.add_argument("--num_samples", type=int, default=5, help="k of training")
    p.add_argument("--estimator", default="dreg")
    p.add_argument("--eval_images", type=int, default=1000)
    p.add_argument("--eval_samples", type=int, default=5000)
    p.add_argument("--out", default="runs/conv_iwae")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)

    # Dynamically binarised training batches, fixed-binarised test images (the paper's
    # protocol), as [batch, 28, 28, 1] images.
    train = tfp_iwae.data.load(args.dataset, "train", binarization="dynamic",
                               batch_size=args.batch_size, data_dir=args.data_dir)
    train = train.map(as_images)
    test = tfp_iwae.data.load_array(args.dataset, "test", data_dir=args.data_dir)
    test = tfp_iwae.data.evaluation_pixels(test[:args.eval_images], "dynamic", seed=0)
    test = test.reshape(-1, 28, 28, 1)
    steps = args.steps_per_epoch or len(tfp_iwae.data.load_array(
        args.dataset, "train", data_dir=args.data_dir)) // args.batch_size

    keras.utils.set_random_seed(0)
    model = tfp_iwae.LatentVariableModel(*networks())
    model.compile(optimizer=tfp_iwae.make_optimizer(1e-3), estimator=args.estimator,
                  num_samples=args.num_samples, steps_per_execution=10)
    t0 = time.perf_counter()
    history = model.fit(train, epochs=args.epochs, steps_per_epoch=steps, verbose=2,
                        callbacks=[keras.callbacks.TensorBoard(os.path.join(args.out, "tb"))])
    train_seconds = time.perf_counter() - t0
    model.save(os.path.join(args.out, "model.keras"))

    t0 = time.perf_counter()
    ll = tfp_iwae.estimate_log_likelihood(model, test, args.eval_samples, seed=0)
    eval_seconds = time.perf_counter() - t0
    samples = model.sample(64, seed=0, mean=True).numpy().reshape(64, 784)
    grid = tfp_iwae.summaries.image_grid(samples, 8, 8)
    tf.io.write_file(os.path.join(args.out, "samples.png"), tf.io.encode_png(
        tf.cast(np.round(grid[..., None] * 255), tf.uint8)))
    tfp_iwae.export_saved_model(model, os.path.join(args.out, "saved_model"),
                                num_samples=100)
    result = {"dataset": args.dataset, "estimator": args.estimator, "k": args.num_samples,
              "epochs": args.epochs, "steps_per_epoch": steps,
              "train_seconds": train_seconds, "final_train_bound": history.history[
                  "bound"][-1], "test_images": len(test), "eval_samples": args.eval_samples,
              "test_log_likelihood_nats": float(np.mean(ll)),
              "test_standard_error_nats": float(np.std(ll, ddof=1) / np.sqrt(len(ll))),
              "eval_seconds": eval_seconds}
    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"{args.dataset}: test L_{args.eval_samples} = {result['test_log_likelihood_nats']:.2f}"
          f" ± {result['test_standard_error_nats']:.2f} nats on {len(test)} images; trained "
          f"{train_seconds:.0f} s, evaluated {eval_seconds:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
