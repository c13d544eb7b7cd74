"""Gradient estimators and bounds for importance weighted training, in one registry.

Every estimator is a function of the (stop-gradiented) log weights `log w`
`[num_samples, batch]` returning `EstimatorWeights`:

- `bound`   `[batch]`: the objective value to report, in nats;
- `decoder` `[S, batch]`: coefficients c_i; the decoder (generative model, theta) gets
  grad_theta sum_i c_i log w_i;
- `path`    `[S, batch]`: coefficients a_i of the reparameterised (pathwise) part of the
  encoder gradient, sum_i a_i (d log w_i / d z_i)(d z_i / d phi);
- `score`   `[S, batch]`: coefficients s_i of the direct (score) part of the encoder
  gradient, -sum_i s_i d log q(z_i|x; phi) / d phi with z_i held fixed;
- `path_scale` `[S, batch]` or None: r_i with a_i = c_i r_i and 0 <= r_i <= 1, when the
  pathwise coefficients are such a fraction of the decoder's (then the decoder's backward
  pass already holds c_i d log w_i / d z_i and the encoder reuses it, scaled by r_i);
  None when they are not (PIWAE with M > 1, whose a_i / c_i can exceed the float32
  range: the pathwise part then takes its own backward pass through the decoder).

Every field is computed directly, never as a product of an underflowing and an
overflowing factor: e.g. PIWAE's a_i = softmax_group(log w)_i / M is finite for every
gap between groups, whereas c_i = softmax(log w)_i underflows to 0 and a_i / c_i
overflows once a group lies ~88 nats below the best one (0 * inf = NaN).

Written as surrogates (maximised; `sg` = stop_gradient):

    decoder: sum_i sg(c_i) log w_i
    encoder: sum_i sg(a_i) [log p(x, z_i) - log q(z_i | x; sg(phi))]
             - sum_i sg(s_i) log q(sg(z_i) | x; phi)

`surrogate_losses` builds exactly these (used to check the definitions);
`estimator_gradients` obtains the same gradients with one decoder backward pass and one
encoder backward pass (two decoder passes when `path_scale` is None), by asking the tape
for d/dz and feeding a_i d log w_i / d z_i back through the encoder.

Names: `iwae`, `vae`, `stl`, `dreg`, `rws`, `miwae(M,K)`, `ciwae(beta)`, `piwae(M,K)`.
References: Burda et al. 2015 (IWAE); Roeder et al. 2017 (STL); Tucker et al. 2018
(DReG); Bornschein & Bengio 2015 (RWS); Rainforth et al. 2018 (MIWAE, CIWAE, PIWAE).
"""

import collections
import re

import tensorflow as tf

from tfp_iwae import objectives
from tfp_iwae import seeds

__all__ = ["EstimatorWeights", "Estimator", "get_estimator", "ESTIMATOR_NAMES",
           "surrogate_losses", "estimator_gradients"]

EstimatorWeights = collections.namedtuple(
    "EstimatorWeights", ["bound", "decoder", "path", "score", "path_scale"],
    defaults=(None,))

ESTIMATOR_NAMES = ("iwae", "vae", "stl", "dreg", "rws", "miwae(M,K)", "ciwae(beta)",
                   "piwae(M,K)")


class Estimator(collections.namedtuple(
        "Estimator", ["name", "weights_fn", "num_samples", "plain"])):
    """A named estimator.

    Fields: `name` (canonical, e.g. `miwae(8,8)`), `weights_fn` (log w -> EstimatorWeights),
    `num_samples` (total samples it needs, or None if any k works), `plain` (True when
    a = s = c, so one ordinary backward pass of sum c log w gives every gradient).
    """

    def __call__(self, log_weights):
        return self.weights_fn(tf.stop_gradient(log_weights))


def _ones(lw):
    return tf.ones_like(lw)


def _plain(bound, c):
    """Weights of an estimator whose encoder follows the decoder's coefficients c."""
    return EstimatorWeights(bound, c, c, c, tf.ones_like(c))


def _iwae(lw):
    return _plain(objectives.iwae_bound(lw), tf.nn.softmax(lw, axis=0))


def _vae(lw):
    return _plain(objectives.vae_bound(lw),
                  _ones(lw) / tf.cast(tf.shape(lw)[0], lw.dtype))


def _stl(lw):
    w = tf.nn.softmax(lw, axis=0)
    return EstimatorWeights(objectives.iwae_bound(lw), w, w, tf.zeros_like(lw), _ones(lw))


def _dreg(lw):
    # a_i = w~_i^2 = c_i * w~_i: both factors are <= 1, so no overflow.
    w = tf.nn.softmax(lw, axis=0)
    return EstimatorWeights(objectives.iwae_bound(lw), w, tf.square(w), tf.zeros_like(lw),
                            w)


def _rws(lw):
    # wake-p: the decoder follows the IWAE gradient; wake-q: the encoder maximises
    # sum_i w~_i log q(sg(z_i)|x), so no pathwise term and score coefficient -w~.
    w = tf.nn.softmax(lw, axis=0)
    zeros = tf.zeros_like(lw)
    return EstimatorWeights(objectives.iwae_bound(lw), w, zeros, -w, zeros)


def _grouped(lw, m, k):
    """[M*K, B] -> [M, K, B]."""
    return tf.reshape(lw, tf.concat([[m, k], tf.shape(lw)[1:]], axis=0))


def _miwae(m, k):
    def fn(lw):
        g = _grouped(lw, m, k)
        bound = tf.reduce_mean(objectives.iwae_bound(g, axis=1), axis=0)
        return _plain(bound, tf.reshape(tf.nn.softmax(g, axis=1) / m, tf.shape(lw)))
    return fn


def _ciwae(beta):
    def fn(lw):
        k = tf.cast(tf.shape(lw)[0], lw.dtype)
        bound = beta * objectives.vae_bound(lw) + (1. - beta) * objectives.iwae_bound(lw)
        return _plain(bound, beta / k + (1. - beta) * tf.nn.softmax(lw, axis=0))
    return fn


def _piwae(m, k):
    def fn(lw):
        # Decoder: IWAE over all M*K samples, c_i = softmax(lw)_i. Encoder: MIWAE(M, K),
        # whose coefficient a_i = softmax_group(lw)_i / M is used as it is, for the
        # pathwise and the score part. The ratio a_i / c_i = exp(LSE_all - LSE_group) / M
        # overflows (and c_i underflows to 0) for a group ~88 nats behind the best one,
        # so it is not used: the pathwise part gets its own backward pass (path_scale
        # None), except for M = 1 where a = c.
        g = _grouped(lw, m, k)
        c = tf.nn.softmax(lw, axis=0)
        c_enc = tf.reshape(tf.nn.softmax(g, axis=1) / m, tf.shape(lw))
        return EstimatorWeights(objectives.iwae_bound(lw), c, c_enc, c_enc,
                                _ones(lw) if m == 1 else None)
    return fn


_SIMPLE = {"iwae": (_iwae, True), "vae": (_vae, True), "stl": (_stl, False),
           "dreg": (_dreg, False), "rws": (_rws, False)}
_PATTERN = re.compile(r"^(miwae|piwae|ciwae)\(([^)]*)\)$")


def _parse_int(text, what, name):
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"Estimator {name!r}: {what} must be an integer, got {text!r}.")
    if value < 1:
        raise ValueError(f"Estimator {name!r}: {what} must be >= 1, got {value}.")
    return value


def get_estimator(name, num_samples=None):
    """Looks up an estimator by name.

    Args:
      name: one of `iwae`, `vae`, `stl`, `dreg`, `rws`, `miwae(M,K)`, `ciwae(beta)`,
        `piwae(M,K)` (spaces ignored; case-insensitive).
      num_samples: the k the caller will draw; checked against M*K for grouped
        estimators (None: no check).

    Returns:
      An `Estimator`.

    Raises:
      ValueError: unknown name (the known ones are listed), bad parameters, or
        `num_samples` != M*K.
    """
    if isinstance(name, Estimator):
        return name
    key = str(name).replace(" ", "").lower()
    if key in _SIMPLE:
        fn, plain = _SIMPLE[key]
        return Estimator(key, fn, None, plain)
    match = _PATTERN.match(key)
    if not match:
        raise ValueError(f"Unknown estimator {name!r}; known: {', '.join(ESTIMATOR_NAMES)}.")
    kind, args = match.group(1), match.group(2).split(",")
    if kind == "ciwae":
        if len(args) != 1:
            raise ValueError(f"Estimator {name!r}: ciwae takes one argument, beta in [0, 1].")
        try:
            beta = float(args[0])
        except ValueError:
            raise ValueError(f"Estimator {name!r}: beta must be a number in [0, 1].")
        if not 0. <= beta <= 1.:
            raise ValueError(f"Estimator {name!r}: beta must be in [0, 1], got {beta}.")
        return Estimator(f"ciwae({beta:g})", _ciwae(beta), None, True)
    if len(args) != 2:
        raise ValueError(f"Estimator {name!r}: {kind} takes two arguments, (M, K).")
    m = _parse_int(args[0], "M", name)
    k = _parse_int(args[1], "K", name)
    if num_samples is not None and num_samples != m * k:
        raise ValueError(f"Estimator {name!r} draws M*K = {m * k} samples per example, but "
                         f"num_samples is {num_samples}.")
    if kind == "miwae":
        return Estimator(f"miwae({m},{k})", _miwae(m, k), m * k, True)
    return Estimator(f"piwae({m},{k})", _piwae(m, k), m * k, False)


def surrogate_losses(estimator, log_weights, log_weights_path, log_q_score):
    """The estimator's defining surrogates, as losses (negated, averaged over batch).

    Args:
      estimator: a name or `Estimator`.
      log_weights: `[S, batch]` log p(x, z) - log q(z|x) with all gradients.
      log_weights_path: `[S, batch]` the same values with q's parameters stopped inside
        log q (gradient flows only through z).
      log_q_score: `[S, batch]` log q(sg(z)|x) (gradient only through q's parameters).

    Returns:
      (bound `[batch]` in nats, decoder_loss scalar, encoder_loss scalar). Differentiate
      decoder_loss w.r.t. the decoder's variables only and encoder_loss w.r.t. the
      encoder's only.
    """
    est = get_estimator(estimator)
    wts = est(log_weights)
    n = tf.cast(tf.shape(log_weights)[1], log_weights.dtype)
    dec = -tf.reduce_sum(wts.decoder * log_weights) / n
    enc = -(tf.reduce_sum(wts.path * log_weights_path)
            - tf.reduce_sum(wts.score * log_q_score)) / n
    return wts.bound, dec, enc


def estimator_gradients(estimator, x, *, prior, likelihood_fn, posterior_fn,
                        encoder_variables, decoder_variables, num_samples, seed=None):
    """Draws k samples once and returns the estimator's gradients and diagnostics.

    One forward pass, one backward pass through the decoder and one through the
    encoder. For `plain` estimators that is one ordinary gradient of sum_i c_i log w_i.
    Otherwise the tape is asked for d(sum_i c_i log w_i)/d(theta, z) with z cut from
    the encoder; the pathwise part a_i d log w_i / d z_i is that d/dz scaled by
    `path_scale` r_i (or, when the estimator gives no bounded r, a second backward pass
    of sum_i a_i log w_i to z only); it and the score coefficients s (at the cut z) are
    sent back through the encoder.

    Args:
      estimator: a name or `Estimator`.
      x: `[batch, *event]` data.
      prior, likelihood_fn: as in `log_weights`.
      posterior_fn: x -> q(z|x) (called inside the tape).
      encoder_variables, decoder_variables: the two disjoint variable lists.
      num_samples: k (must equal M*K for grouped estimators).
      seed: None, int or `[2]` stateless seed.

    Returns:
      dict with `decoder_grads`, `encoder_grads` (gradients of the loss, i.e. of minus
      the batch-mean surrogate), `bound` `[batch]` (nats), `log_weights` `[k, batch]`.
    """
    est = get_estimator(estimator, num_samples)
    num_samples = objectives.check_num_samples(num_samples)
    seed = seeds.stateless_seed(seed)
    decoder_variables, encoder_variables = list(decoder_variables), list(encoder_variables)
    with tf.GradientTape(persistent=not est.plain) as tape:
        q = posterior_fn(x)
        z = q.sample(num_samples, seed=seed)
        if not est.plain:
            # Cut z from the encoder: the tape's d/dz_cut are then partial derivatives
            # (for two layers, h2's dependence on h1 is not folded into d/dh1), and
            # log q(z_cut) carries only the score dependence on phi.
            z_cut = tf.nest.map_structure(tf.stop_gradient, z)
            tape.watch(tf.nest.flatten(z_cut))
        else:
            z_cut = z
        log_q = q.log_prob(z_cut)
        log_w = prior.log_prob(z_cut) + likelihood_fn(z_cut).log_prob(x) - log_q
        wts = est(log_w)
        n = tf.cast(tf.shape(log_w)[1], log_w.dtype)
        loss = -tf.reduce_sum(wts.decoder * log_w) / n
    if est.plain:
        grads = tape.gradient(loss, decoder_variables + encoder_variables)
        dec_grads = grads[:len(decoder_variables)]
        enc_grads = grads[len(decoder_variables):]
    else:
        flat_z, flat_cut = tf.nest.flatten(z), tf.nest.flatten(z_cut)
        if wts.path_scale is not None:
            grads = tape.gradient(loss, decoder_variables + flat_cut)
            dec_grads = grads[:len(decoder_variables)]
            r = wts.path_scale
            path_grads = [g * tf.reshape(r, tf.concat(
                [tf.shape(r), tf.ones([zi.shape.rank - 2], tf.int32)], 0))
                for g, zi in zip(grads[len(decoder_variables):], flat_z)]
        else:
            # a_i is not a bounded multiple of c_i: take d(sum_i a_i log w_i)/dz directly.
            dec_grads = tape.gradient(loss, decoder_variables)
            path_grads = tape.gradient(log_w, flat_cut, output_gradients=-wts.path / n)
        enc_grads = tape.gradient(flat_z + [log_q], encoder_variables,
                                  output_gradients=path_grads + [wts.score / n])
        del tape
    return dict(decoder_grads=dec_grads, encoder_grads=enc_grads, bound=wts.bound,
                log_weights=log_w)
