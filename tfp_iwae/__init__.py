"""tfp_iwae: Importance Weighted Autoencoders on TensorFlow Probability.

Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders" (ICLR 2016).
All log densities and bounds are in nats; log weights have shape
`[num_samples, batch]`.
"""

from tfp_iwae import data
from tfp_iwae import summaries
from tfp_iwae.evaluation import (active_units, bits_per_dim, bound_curve,
                                 estimate_bound_curve, estimate_log_likelihood)
from tfp_iwae.estimators import (ESTIMATOR_NAMES, estimator_gradients, get_estimator,
                                 surrogate_losses)
from tfp_iwae.errors import Error
from tfp_iwae.export import export_saved_model
from tfp_iwae.latent_model import MODEL_MEMBERS, LatentVariableModel, check_model
from tfp_iwae.marginal import ImportanceWeightedMarginal
from tfp_iwae.model import IWAE, paper_architecture
from tfp_iwae.objectives import (effective_sample_size, iwae_bound, log_weights,
                                 normalized_weights, vae_bound)
from tfp_iwae.training import TrainLoop, make_optimizer, make_train_step, paper_schedule

__version__ = "0.1.0"

__all__ = [
    "ESTIMATOR_NAMES", "Error", "IWAE", "LatentVariableModel", "MODEL_MEMBERS", "check_model", "TrainLoop", "active_units", "bits_per_dim", "bound_curve", "data",
    "estimate_bound_curve", "export_saved_model", "summaries",
    "estimate_log_likelihood", "ImportanceWeightedMarginal", "effective_sample_size",
    "estimator_gradients", "get_estimator", "iwae_bound", "log_weights",
    "make_optimizer", "make_train_step", "normalized_weights", "paper_architecture",
    "paper_schedule", "surrogate_losses", "vae_bound",
]
