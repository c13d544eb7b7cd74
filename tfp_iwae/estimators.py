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
import math
import re

import tensorflow as tf

from tfp_iwae import checks
from tfp_iwae import errors
from tfp_iwae import objectives
from tfp_iwae import seeds

__all__ = ["ESTIMATORS", "ESTIMATOR_NAMES", "Estimator", "EstimatorSpec", "EstimatorWeights",
           "PARAMETERS", "Parameter", "estimator_gradients", "estimator_name", "estimator_signature",
           "example_name",
           "get_estimator", "surrogate_losses"]

EstimatorWeights = collections.namedtuple(
    "EstimatorWeights", ["bound", "decoder", "path", "score", "path_scale"],
    defaults=(None,))

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


def _parse_count(text, what, name):
    """Parameter `what` (M or K) of estimator `name` from its text: an integer >= 1."""
    return checks.count(text, what, from_text=True, label=f"Estimator {name!r}: {what}")


def _parse_unit(text, what, name):
    """Parameter `what` (beta) of estimator `name` from its text: a number in [0, 1]."""
    return checks.real(text, what, lower=0., upper=1., label=f"Estimator {name!r}: {what}")


class Parameter(collections.namedtuple("Parameter", ["type", "parse", "format", "doc"])):
    """A parameter an estimator name can take: its Python `type` (int or float), `parse`
    (text, what, name) -> value (ArgumentError naming the estimator otherwise), `format`
    (value -> its text in the canonical name) and `doc` (what it means: flag help)."""


# The training command (`tfp_iwae.cli.train`) defines one flag of each name.
PARAMETERS = {
    "M": Parameter(int, _parse_count, str, "number of groups (an integer >= 1)"),
    "K": Parameter(int, _parse_count, str, "samples per group (an integer >= 1)"),
    "beta": Parameter(float, _parse_unit, "{:g}".format, "weight of the ELBO, in [0, 1]"),
}


def _groups_of(k):
    """(M, K) with M*K = k and M the largest divisor of k <= sqrt(k): 50 -> (5, 10)."""
    m = max(d for d in range(1, math.isqrt(k) + 1) if k % d == 0)
    return m, k // m


class EstimatorSpec(collections.namedtuple(
        "EstimatorSpec", ["params", "make", "plain", "num_samples", "example", "doc"])):
    """One row of `ESTIMATORS`.

    Fields: `params` (names of its parameters, keys of `PARAMETERS`), `make` (parameter
    values -> weights function), `plain` (see `Estimator`), `num_samples` (parameter
    values -> the k it needs, or None when any k works), `example` (k -> parameter values
    that fit k, e.g. for benchmarks), `doc` (one line, with the reference).
    """


# The estimator table: the only place that lists the estimators. Names, parsing, the
# launcher's flag help and the benchmark's choices are all read from it.
ESTIMATORS = {
    "iwae": EstimatorSpec((), lambda: _iwae, True, None, lambda k: (),
                          "IWAE bound L_k and its gradient (Burda et al. 2015)"),
    "vae": EstimatorSpec((), lambda: _vae, True, None, lambda k: (),
                         "ELBO averaged over k samples (Kingma & Welling 2014)"),
    "stl": EstimatorSpec((), lambda: _stl, False, None, lambda k: (),
                         "IWAE, encoder gradient without the score term (Roeder et al. 2017)"),
    "dreg": EstimatorSpec((), lambda: _dreg, False, None, lambda k: (),
                          "IWAE, doubly reparameterised encoder gradient (Tucker et al. 2018)"),
    "rws": EstimatorSpec((), lambda: _rws, False, None, lambda k: (),
                         "reweighted wake-sleep, wake-p and wake-q (Bornschein & Bengio 2015)"),
    "miwae": EstimatorSpec(("M", "K"), _miwae, True, lambda m, k: m * k, _groups_of,
                           "mean of M IWAE bounds of K samples each (Rainforth et al. 2018)"),
    "ciwae": EstimatorSpec(("beta",), _ciwae, True, None, lambda k: (0.05,),
                           "beta * ELBO + (1 - beta) * IWAE (Rainforth et al. 2018)"),
    "piwae": EstimatorSpec(("M", "K"), _piwae, False, lambda m, k: m * k, _groups_of,
                           "IWAE decoder, MIWAE(M,K) encoder (Rainforth et al. 2018)"),
}


def estimator_signature(key):
    """The name of estimator `key` with its parameters' names: "miwae" -> "miwae(M,K)"."""
    params = ESTIMATORS[key].params
    return f"{key}({','.join(params)})" if params else key


ESTIMATOR_NAMES = tuple(estimator_signature(key) for key in ESTIMATORS)

_PATTERN = re.compile(r"^([a-z_]+)(?:\(([^)]*)\))?$")
_COUNTS = {1: "one", 2: "two", 3: "three"}


def estimator_name(key, *values):
    """The canonical name of estimator `key` with parameter values: ("miwae", 8, 8) ->
    "miwae(8,8)"; ("ciwae", 0.05) -> "ciwae(0.05)"."""
    spec = ESTIMATORS[key]
    if len(values) != len(spec.params):
        raise errors.ArgumentError(f"Estimator {key!r} takes parameters "
                                   f"({', '.join(spec.params)}), got {values!r}.")
    if not values:
        return key
    text = ",".join(PARAMETERS[p].format(v) for p, v in zip(spec.params, values))
    return f"{key}({text})"


def example_name(key, num_samples):
    """A name of estimator `key` that fits `num_samples` draws, e.g. ("miwae", 50) ->
    "miwae(5,10)" (M the largest divisor <= sqrt(k)), ("ciwae", 5) -> "ciwae(0.05)"."""
    return estimator_name(key, *ESTIMATORS[key].example(num_samples))


def _check_num_samples(est, name, num_samples):
    if num_samples is not None and est.num_samples is not None and \
            num_samples != est.num_samples:
        raise errors.ArgumentError(
            f"Estimator {name!r} draws M*K = {est.num_samples} samples per example, but "
            f"num_samples is {num_samples}.")
    return est


def get_estimator(name, num_samples=None):
    """Looks up an estimator by name in `ESTIMATORS`.

    Args:
      name: one of `iwae`, `vae`, `stl`, `dreg`, `rws`, `miwae(M,K)`, `ciwae(beta)`,
        `piwae(M,K)` (spaces ignored; case-insensitive), or an `Estimator`.
      num_samples: the k the caller will draw; checked against M*K for grouped
        estimators (None: no check), for an `Estimator` passed in too.

    Returns:
      An `Estimator`.

    Raises:
      ArgumentError (a ValueError): unknown name (the known ones are listed), bad
        parameters, or `num_samples` != M*K.
    """
    if isinstance(name, Estimator):
        return _check_num_samples(name, name.name, num_samples)
    key = str(name).replace(" ", "").lower()
    match = _PATTERN.match(key)
    if not match or match.group(1) not in ESTIMATORS:
        raise errors.ArgumentError(f"Unknown estimator {name!r}; known: "
                                   f"{', '.join(ESTIMATOR_NAMES)}.")
    kind, spec = match.group(1), ESTIMATORS[match.group(1)]
    args = [] if match.group(2) is None else match.group(2).split(",")
    if len(args) != len(spec.params):
        if not spec.params:
            raise errors.ArgumentError(f"Estimator {name!r}: {kind} takes no arguments.")
        count = _COUNTS.get(len(spec.params), str(len(spec.params)))
        detail = ("beta in [0, 1]" if spec.params == ("beta",)
                  else f"({', '.join(spec.params)})")
        raise errors.ArgumentError(f"Estimator {name!r}: {kind} takes {count} argument"
                                   f"{'s' if len(spec.params) > 1 else ''}, {detail}.")
    values = [PARAMETERS[p].parse(a, p, name) for p, a in zip(spec.params, args)]
    est = Estimator(estimator_name(kind, *values), spec.make(*values),
                    spec.num_samples(*values) if spec.num_samples else None, spec.plain)
    return _check_num_samples(est, name, num_samples)


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
        fwd = _forward(tape, est, x, prior, likelihood_fn, posterior_fn, num_samples, seed)
    if est.plain:
        grads = tape.gradient(fwd.loss, decoder_variables + encoder_variables)
        dec_grads = grads[:len(decoder_variables)]
        enc_grads = grads[len(decoder_variables):]
    else:
        dec_grads, enc_grads = _split_gradients(tape, fwd, decoder_variables,
                                                encoder_variables)
        del tape
    return dict(decoder_grads=dec_grads, encoder_grads=enc_grads, bound=fwd.weights.bound,
                log_weights=fwd.log_w)


# What `estimator_gradients`' forward pass leaves for the backward passes: the samples z
# (a structure), z_cut (z itself for plain estimators, else z with its gradient to the
# encoder cut), log q(z_cut|x) and the log weights `[k, batch]`, the estimator's
# `EstimatorWeights`, the batch size n (a float) and the decoder's loss (a scalar).
_Forward = collections.namedtuple(
    "_Forward", ["z", "z_cut", "log_q", "log_w", "weights", "n", "loss"])


def _forward(tape, est, x, prior, likelihood_fn, posterior_fn, num_samples, seed):
    """The forward pass of `estimator_gradients`, recorded by `tape` (called inside it):
    k = `num_samples` samples z ~ q(z|x), their log weights and the loss
    -sum_i c_i log w_i / batch. Returns a `_Forward`."""
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
    return _Forward(z, z_cut, log_q, log_w, wts, n, loss)


def _split_gradients(tape, fwd, decoder_variables, encoder_variables):
    """(decoder grads, encoder grads) of a non-plain estimator from the persistent `tape`
    of `_forward`: the decoder's from the loss; the encoder's from the pathwise part
    a_i d log w_i / d z_i (the loss's d/dz scaled by `path_scale`, or its own backward
    pass when that is None) and the score coefficients s, sent back through the
    encoder."""
    wts, n = fwd.weights, fwd.n
    flat_z, flat_cut = tf.nest.flatten(fwd.z), tf.nest.flatten(fwd.z_cut)
    if wts.path_scale is not None:
        grads = tape.gradient(fwd.loss, decoder_variables + flat_cut)
        dec_grads = grads[:len(decoder_variables)]
        r = wts.path_scale
        path_grads = [g * tf.reshape(r, tf.concat(
            [tf.shape(r), tf.ones([zi.shape.rank - 2], tf.int32)], 0))
            for g, zi in zip(grads[len(decoder_variables):], flat_z)]
    else:
        # a_i is not a bounded multiple of c_i: take d(sum_i a_i log w_i)/dz directly.
        dec_grads = tape.gradient(fwd.loss, decoder_variables)
        path_grads = tape.gradient(fwd.log_w, flat_cut, output_gradients=-wts.path / n)
    enc_grads = tape.gradient(flat_z + [fwd.log_q], encoder_variables,
                              output_gradients=path_grads + [wts.score / n])
    return dec_grads, enc_grads
