"""Gradient-estimator diagnostics: variance and signal-to-noise ratio from repeated draws."""

import numpy as np
import tensorflow as tf

from tfp_iwae import checks
from tfp_iwae import errors
from tfp_iwae import estimators
from tfp_iwae import seeds

__all__ = ["gradient_statistics", "make_gradient_sampler"]


def make_gradient_sampler(model, estimator, num_samples, group="encoder", jit_compile=True):
    """A compiled `f(x, seed) -> flat gradient [P]` of one parameter group.

    group: `encoder` or `decoder` (all of that network's variables).
    """
    est = estimators.get_estimator(estimator, num_samples)
    if group not in ("encoder", "decoder"):
        raise errors.ArgumentError(f"`group` must be 'encoder' or 'decoder', got "
                                   f"{group!r}.")

    def fn(x, seed):
        out = estimators.estimator_gradients(
            est, x, prior=model.prior, likelihood_fn=model.decoder,
            posterior_fn=model.encoder, encoder_variables=model.encoder_variables,
            decoder_variables=model.decoder_variables, num_samples=num_samples, seed=seed)
        grads = out[f"{group}_grads"]
        return tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0)

    return tf.function(fn, jit_compile=jit_compile)


def gradient_statistics(sampler, x, repeats=20, seed=0):
    """Per-parameter mean and variance of a gradient estimator over `repeats` draws.

    Returns dict of floats: `snr` (mean over parameters of |E g| / std g), `variance`
    (mean per-parameter variance), `mean_norm` (norm of the averaged gradient), computed
    in float64 from `repeats` independent stateless draws on the same batch x.
    """
    repeats = checks.count(repeats, "repeats", minimum=2,
                           description="draws on the batch, to estimate a variance")
    base = seeds.stateless_seed(seed)
    g = np.stack([sampler(x, seeds.fold_in(base, r)).numpy().astype(np.float64)
                  for r in range(repeats)])
    mean, std = g.mean(0), g.std(0, ddof=1)
    ok = std > 0
    return {"snr": float(np.mean(np.abs(mean[ok]) / std[ok])) if ok.any() else float("nan"),
            "variance": float(np.mean(std ** 2)), "mean_norm": float(np.linalg.norm(mean))}
