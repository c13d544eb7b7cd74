"""The fused training loop: many optimizer steps in one compiled call (`TrainLoop`).

Each step's batch, binarisation, importance samples and learning rate are functions of
(seed, step) alone, so a run's numbers do not depend on how its steps are grouped into
calls, nor on whether the images live on the device (`_DeviceImages`) or on the host
(`_HostImages`).
"""

import numpy as np
import tensorflow as tf

from tfp_iwae import data
from tfp_iwae import errors
from tfp_iwae import estimators
from tfp_iwae import latent_model
from tfp_iwae import objectives
from tfp_iwae import seeds
from tfp_iwae.step import step_is_finite, step_seed

__all__ = ["TrainLoop"]

_DEFAULT_LEARNING_RATES = ((0, 1e-3),)


class TrainLoop:
    """Many optimizer steps per compiled call, with the training images on the device.

    `loop(first_step, num_steps)` runs steps first_step, ..., first_step + num_steps - 1
    inside one XLA program (a `tf.while_loop`): for step s it takes the images of batch
    s % steps_per_epoch of epoch s // steps_per_epoch in the order
    `data.epoch_permutation(seed, epoch)`, binarises them with
    `data.dynamic_binarization(x, seed, s)` (dynamic binarisation), draws the importance
    samples with `step_seed(seed, s)`, sets the learning rate of the stage holding s, and
    applies the estimator's gradients. Everything is a function of (seed, s), so a run's
    numbers do not depend on how its steps are grouped into calls.

    A step whose loss or gradients are not finite is not applied and ends the call: the
    returned `steps` counts the steps applied, so the first bad step is
    first_step + steps (with `finite` 0 and that step's bound and log weights in the
    metrics). (Inside the compiled loop updates are not guarded one by one: the call
    keeps a copy of the weights and optimizer state from its start (`_CallStart`) and,
    after a non-finite step, restores it and runs the good steps again.)

    With `resident=False` the images stay on the host: `loop(first_step, num_steps)`
    gathers each batch there (same permutation, computed by the same compiled program)
    and feeds the grey-level batches to the compiled loop, which binarises them as above:
    the same numbers, for data that should not live on the device.

    Args:
      model: an `IWAE` or any model with the members of `tfp_iwae.MODEL_MEMBERS` (built
        from the first image if its networks have no weights yet).
      optimizer: a Keras optimizer (its learning rate is set every step from
        `learning_rates`).
      num_samples: k.
      images: float32 `[N, *event_shape]` training images, intensities in [0, 1] (already
        binary for fixed binarisation; then pass `dynamic=False`).
      batch_size: examples per step; steps_per_epoch = N // batch_size (the remainder of
        each epoch's permutation is not used).
      seed: the run's int seed.
      estimator: an estimator name.
      dynamic: binarise every batch afresh (dynamic binarisation).
      learning_rates: [(first_step, learning_rate)] in increasing first_step, the first
        at 0: step s runs at the learning rate of the last entry with first_step <= s
        (default: 1e-3 throughout). From a `schedule.stages` plan:
        `[(first, lr) for first, _, lr in plan]`.
      max_steps_per_call: the largest num_steps a call takes (the host path's buffer).
      jit_compile: compile with XLA (False: a graph-mode while loop, same structure).
      resident: keep the images on the device (default).
      stages: the former name of `learning_rates` (the same list); give one of the two.
    """

    def __init__(self, model, optimizer, num_samples, images, *, batch_size, seed,
                 estimator="iwae", dynamic=True, learning_rates=None, max_steps_per_call=100,
                 jit_compile=True, resident=True, stages=None):
        learning_rates = _learning_rates(learning_rates, stages)
        images = np.asarray(images, np.float32)
        if images.ndim < 2 or len(images) < batch_size:
            raise errors.ArgumentError(
                f"`images` must be [N >= batch_size, *event_shape], got {images.shape} with "
                f"batch_size={batch_size}.")
        latent_model.check_model(model, "TrainLoop",
                                 ("prior", "encoder", "decoder", "encoder_variables",
                                  "decoder_variables"))
        latent_model.ensure_built(model, images[:1])
        self.num_samples = objectives.check_num_samples(num_samples)
        self.batch_size = int(batch_size)
        self.steps_per_epoch = len(images) // self.batch_size
        self.max_steps_per_call = objectives.check_num_samples(max_steps_per_call,
                                                               "max_steps_per_call")
        self.resident = bool(resident)
        self._seed = int(seed)
        est = estimators.get_estimator(estimator, self.num_samples)
        variables = model.decoder_variables + model.encoder_variables
        optimizer.build(variables)
        base = seeds.stateless_seed(self._seed)
        if self.resident:
            self._feed = _DeviceImages(images, self.batch_size, base)
        else:
            self._feed = _HostImages(images, self.batch_size, base, self.max_steps_per_call,
                                     jit_compile)
        self._step = _fused_step(model, optimizer, est, self.num_samples, self._seed, base,
                                 dynamic, learning_rates)
        self._call_start = _CallStart(list(variables) + list(optimizer.variables))
        self._run = tf.function(self._run_steps, jit_compile=jit_compile)

    def _run_steps(self, first, count, batches):
        """The compiled call: steps first, ..., first + count - 1 while they are finite;
        the metrics of the last one run and `steps`, the number applied."""
        self._call_start.take()

        def cond(i, finite, last):
            return tf.math.logical_and(i < count, finite)

        def body(i, finite, last):
            s = first + i
            ok, m = self._step(s, self._feed.batch(s, i, batches), i + 1 >= count)
            return i + tf.cast(ok, tf.int64), ok, m

        init = (tf.zeros([self.batch_size]), tf.zeros([self.num_samples, self.batch_size]),
                tf.constant(0., tf.float32))
        steps, finite, last = tf.while_loop(
            cond, body, (tf.constant(0, tf.int64), tf.constant(True), init))
        return dict(objectives.step_metrics(*last, finite), steps=steps)

    def __call__(self, first_step, num_steps):
        """Runs `num_steps` steps from `first_step`; returns the last applied step's
        metrics (as in `make_train_step`) and `steps`, the number of steps applied."""
        first_step, num_steps = int(first_step), int(num_steps)
        if not 1 <= num_steps <= self.max_steps_per_call:
            raise errors.ArgumentError(
                f"`num_steps` must be in [1, {self.max_steps_per_call}] (max_steps_per_call), "
                f"got {num_steps}.")
        batches = self._feed.feed(first_step, num_steps)
        out = self._run(tf.constant(first_step, tf.int64), tf.constant(num_steps, tf.int64),
                        batches)
        if float(out["finite"]) != 1.:
            # The non-finite step (first_step + steps) was applied inside the loop: back to
            # the state at the call's start, then the good steps again (the same numbers:
            # every draw is a function of (seed, step)).
            self._call_start.restore()
            if int(out["steps"]):
                self._run(tf.constant(first_step, tf.int64), out["steps"], batches)
        return out


def _learning_rates(learning_rates, stages):
    """`TrainLoop`'s learning_rates, given under that name or its former one, `stages`."""
    if stages is not None:
        if learning_rates is not None:
            raise errors.ArgumentTypeError("TrainLoop: give `learning_rates=` or its "
                                           "former name `stages=`, not both.")
        learning_rates = stages
    return _DEFAULT_LEARNING_RATES if learning_rates is None else learning_rates


def _fused_step(model, optimizer, est, num_samples, seed, base, dynamic, learning_rates):
    """`one_step(s, x_grey, reported) -> (finite, (bound, log_weights, grad_norm))`, the
    body of the compiled loop for step s on the grey batch x_grey `[batch, *event]`.

    It binarises x_grey (if `dynamic`), draws with `step_seed(seed, s)`, sets the
    learning rate of s's entry of `learning_rates` and applies the estimator's gradients
    whatever they are (see `TrainLoop`). The global gradient norm is computed only when
    `reported` (the call's last step) or when the step is not finite (it ends the call);
    otherwise it is 0.
    """
    dec_vars, enc_vars = model.decoder_variables, model.encoder_variables
    variables = dec_vars + enc_vars
    starts = tf.constant([int(s) for s, _ in learning_rates], tf.int64)
    rates = tf.constant([float(r) for _, r in learning_rates], tf.float32)

    def one_step(s, x_grey, reported):
        x = data.dynamic_binarization(x_grey, base, s) if dynamic else x_grey
        out = estimators.estimator_gradients(
            est, x, prior=model.prior, likelihood_fn=model.decoder,
            posterior_fn=model.encoder, encoder_variables=enc_vars,
            decoder_variables=dec_vars, num_samples=num_samples, seed=step_seed(seed, s))
        grads = list(out["decoder_grads"]) + list(out["encoder_grads"])
        finite = step_is_finite(grads, out["bound"])
        # The global norm only for the step the call reports (its last, or the
        # non-finite one that ends it): the other steps' norms are never read.
        grad_norm = tf.cond(tf.math.logical_or(reported, tf.math.logical_not(finite)),
                            lambda: tf.linalg.global_norm(grads),
                            lambda: tf.constant(0., tf.float32))
        stage = tf.reduce_sum(tf.cast(s >= starts, tf.int32)) - 1
        optimizer.learning_rate.assign(tf.gather(rates, stage))
        # Applied whatever `finite` says: a non-finite step ends the loop, and the
        # call then rolls the state back to its start and re-runs the good steps
        # (`TrainLoop.__call__`). Cheaper than guarding every update (a select over every
        # weight and moment in each step) for what almost never happens.
        optimizer.apply_gradients(zip(grads, variables))
        # What the call reports of its last step; `step_metrics` runs once, after the
        # loop, not in every step.
        return finite, (out["bound"], tf.stop_gradient(out["log_weights"]), grad_norm)

    return one_step


class _DeviceImages:
    """The training images in a device variable: the compiled loop gathers each step's
    batch from the current epoch's permutation, which it recomputes (into a variable)
    when a step enters a new epoch.

    `feed(first, count)` is what a call passes to the compiled loop (here a placeholder
    `[1, batch, *event]`); `batch(s, i, batches)` is step s's grey batch
    `[batch, *event]` inside it (the call's i-th step)."""

    def __init__(self, images, batch_size, base):
        self._n, self._batch, self._base = images.shape[0], batch_size, base
        self._per_epoch = len(images) // batch_size
        # The permutation of the current epoch, recomputed when a step enters a new one.
        self._order = tf.Variable(tf.zeros([self._n], tf.int32), trainable=False,
                                  name="order")
        self._order_epoch = tf.Variable(tf.constant(-1, tf.int64), trainable=False,
                                        name="order_epoch")
        self._images = tf.Variable(images, trainable=False, name="train_images")
        self._dummy = tf.zeros([1, batch_size] + list(images.shape[1:]), tf.float32)

    def feed(self, first, count):
        return self._dummy

    def batch(self, s, i, batches):
        self._ensure_order(s // self._per_epoch)
        pos = tf.cast(s % self._per_epoch, tf.int32)
        idx = tf.gather(self._order, pos * self._batch + tf.range(self._batch))
        return tf.gather(self._images, idx)

    def _ensure_order(self, epoch):
        def refresh():
            self._order.assign(data.epoch_permutation(self._base, epoch, self._n))
            self._order_epoch.assign(epoch)
            return tf.constant(True)
        tf.cond(tf.not_equal(epoch, self._order_epoch), refresh, lambda: tf.constant(False))


class _HostImages:
    """The training images on the host: `feed(first, count)` gathers the grey batches of
    steps first, ..., first + count - 1 into a `[max_steps_per_call, batch, *event]`
    Tensor (in the permutation the device path uses, computed by a compiled
    `data.epoch_permutation`), and `batch(s, i, batches)` is its i-th batch."""

    def __init__(self, images, batch_size, base, max_steps_per_call, jit_compile):
        self._images, self._batch = images, batch_size
        self._per_epoch = len(images) // batch_size
        self._max_steps = max_steps_per_call
        n = images.shape[0]
        self._order_fn = tf.function(
            lambda epoch: data.epoch_permutation(base, epoch, n), jit_compile=jit_compile)
        self._order = (None, None)  # (epoch, its permutation) last computed

    def feed(self, first, count):
        out = np.zeros((self._max_steps, self._batch) + self._images.shape[1:], np.float32)
        for i in range(count):
            epoch, pos = divmod(first + i, self._per_epoch)
            if self._order[0] != epoch:
                self._order = (epoch, self._order_fn(tf.constant(epoch, tf.int64)).numpy())
            out[i] = self._images[self._order[1][pos * self._batch:(pos + 1) * self._batch]]
        return tf.constant(out)

    def batch(self, s, i, batches):
        return batches[i]


class _CallStart:
    """The state a call changes (weights, optimizer moments, step count, learning rate)
    and its copy at the start of the call: `take()` (inside the compiled call) copies it,
    `restore()` puts the copy back after a non-finite step."""

    def __init__(self, state):
        self._state = list(state)
        self._saved = [tf.Variable(v, trainable=False, name="call_start")
                       for v in self._state]
        self.restore = tf.function(self._restore)

    def take(self):
        for saved, v in zip(self._saved, self._state):
            saved.assign(v)

    def _restore(self):
        for saved, v in zip(self._saved, self._state):
            v.assign(saved)
