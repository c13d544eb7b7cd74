"""The `tf.distribute` strategies a training run can use (its `strategy`)."""

import tensorflow as tf

from tfp_iwae import errors

__all__ = ["STRATEGIES", "make_strategy", "is_chief"]

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name):
    """None for `default`; MirroredStrategy over local devices; MultiWorkerMirroredStrategy
    (reads the TF_CONFIG environment variable). ArgumentError for a name not in
    `STRATEGIES`."""
    if name not in STRATEGIES:
        raise errors.ArgumentError(f"`strategy=` must be one of {', '.join(STRATEGIES)}, "
                                   f"got {name!r}.")
    if name == "default":
        return None
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy):
    """True for the process that owns the logdir: the only one without a strategy or with
    a local one, else the cluster's chief (or worker 0 of a chief-less cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and
                                              resolver.task_id == 0)
