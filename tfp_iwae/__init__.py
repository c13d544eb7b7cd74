"""tfp_iwae: Importance Weighted Autoencoders on TensorFlow Probability.

Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders" (ICLR 2016).
All log densities and bounds are in nats; log weights have shape
`[num_samples, batch]`.

Importing `tfp_iwae` loads neither TensorFlow nor any submodule: each public name below
loads its module on first use (`tfp_iwae.IWAE`, `from tfp_iwae import iwae_bound`), so
that the command-line tools (`tfp_iwae.cli`) can quiet TensorFlow's start-up before
TensorFlow is imported.
"""

import importlib
import importlib.util

__version__ = "0.1.0"

# Each public name and the submodule that defines it (None: the name is a submodule).
_EXPORTS = {
    "Error": "errors",
    "ArgumentError": "errors",
    "ArgumentTypeError": "errors",
    "data": None, "summaries": None,
    "LatentVariableModel": "latent_model", "MODEL_MEMBERS": "latent_model",
    "check_model": "latent_model",
    "export_saved_model": "export",
    "active_units": "evaluation", "bits_per_dim": "evaluation", "bound_curve": "evaluation",
    "estimate_bound_curve": "evaluation", "estimate_log_likelihood": "evaluation",
    "evaluate_run": "run_evaluation",
    "ESTIMATOR_NAMES": "estimators", "estimator_gradients": "estimators",
    "get_estimator": "estimators", "surrogate_losses": "estimators",
    "ImportanceWeightedMarginal": "marginal",
    "IWAE": "model", "paper_architecture": "model",
    "effective_sample_size": "objectives", "iwae_bound": "objectives",
    "log_weights": "objectives", "normalized_weights": "objectives", "vae_bound": "objectives",
    "TrainLoop": "fused_loop", "make_optimizer": "schedule", "make_train_step": "step",
    "paper_schedule": "schedule",
}

__all__ = sorted(_EXPORTS, key=str.lower)


def __getattr__(name):
    """Loads a public name's module (or a submodule such as `tfp_iwae.trainer`) on first use."""
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in _EXPORTS and _EXPORTS[name] is not None:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    elif name in _EXPORTS or importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
