"""The compiled training step, the optimizer and the paper's learning-rate schedule."""


import keras
import tensorflow as tf

from tfp_iwae import estimators
from tfp_iwae import objectives
from tfp_iwae import seeds

__all__ = ["make_optimizer", "make_train_step", "paper_schedule", "PAPER_ADAM_EPSILON"]

PAPER_ADAM_EPSILON = 1e-4


def make_optimizer(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=PAPER_ADAM_EPSILON):
    """Adam with the paper's epsilon = 1e-4 (learning rate is a variable, set per stage)."""
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                                 epsilon=epsilon)


def paper_schedule(num_stages=8, base_learning_rate=1e-3):
    """[(passes, learning_rate)] for stages i = 0..7: 3^i passes at 1e-3 * 10^(-i/7)."""
    return [(3 ** i, base_learning_rate * 10. ** (-i / 7.)) for i in range(num_stages)]


def make_train_step(model, optimizer, num_samples, estimator="iwae", jit_compile=True):
    """Builds `step(x, seed) -> metrics`: one compiled update of `model` by `optimizer`.

    The k samples for the whole batch are drawn at once and every network runs one
    `[k * batch, d]` matmul per layer. The decoder's variables get the gradient of the
    decoder surrogate and the encoder's that of the estimator's encoder surrogate, from
    one forward pass (see `estimators.estimator_gradients`).

    Args:
      model: an `IWAE` (anything with `prior`, `encoder`, `decoder`,
        `encoder_variables`, `decoder_variables`).
      optimizer: a Keras optimizer (built here on the model's variables).
      num_samples: k >= 1 importance samples per example (M*K for grouped estimators).
      estimator: name from `estimators.ESTIMATOR_NAMES`.
      jit_compile: compile with XLA.

    Returns:
      A `tf.function` taking x `[batch, input_dim]` float32 and a `[2]` int32 seed, and
      returning a dict of scalars: `loss` (minus the batch-mean estimator bound),
      `bound` (batch-mean of the estimator's bound, nats), `iwae_bound`, `elbo`
      (batch-mean L_k and mean log weight), `ess` (mean effective sample size),
      `grad_norm` (global norm), `finite` (1. if loss and gradients are finite).
      Non-finite gradients are not applied.
    """
    num_samples = objectives.check_num_samples(num_samples)
    est = estimators.get_estimator(estimator, num_samples)
    dec_vars, enc_vars = model.decoder_variables, model.encoder_variables
    variables = dec_vars + enc_vars
    optimizer.build(variables)

    def step(x, seed):
        out = estimators.estimator_gradients(
            est, x, prior=model.prior, likelihood_fn=model.decoder,
            posterior_fn=model.encoder, encoder_variables=enc_vars,
            decoder_variables=dec_vars, num_samples=num_samples, seed=seed)
        grads = list(out["decoder_grads"]) + list(out["encoder_grads"])
        grad_norm = tf.linalg.global_norm(grads)
        bound = tf.reduce_mean(out["bound"])
        finite = tf.math.logical_and(tf.math.is_finite(grad_norm), tf.math.is_finite(bound))

        def apply():
            optimizer.apply_gradients(zip(grads, variables))
            return tf.constant(True)

        tf.cond(finite, apply, lambda: tf.constant(False))
        lw = tf.stop_gradient(out["log_weights"])
        return dict(loss=-bound, bound=bound,
                    iwae_bound=tf.reduce_mean(objectives.iwae_bound(lw)),
                    elbo=tf.reduce_mean(objectives.vae_bound(lw)),
                    ess=tf.reduce_mean(objectives.effective_sample_size(lw)),
                    grad_norm=grad_norm, finite=tf.cast(finite, tf.float32))

    return tf.function(step, jit_compile=jit_compile)


def step_seed(base_seed, step):
    """The stateless seed for training step `step` of a run seeded with `base_seed`."""
    return seeds.fold_in(base_seed, step)


