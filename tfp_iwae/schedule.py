"""The optimizer and its learning-rate schedule: Adam with the paper's epsilon, and the
paper's stages (Burda et al. 2015, sec. 6.1: stage i = 0..7 runs 3^i passes at
1e-3 * 10^(-i/7)) as step ranges of a run.

A plan of a run is a list of stages `(first_step, last_step_exclusive, learning_rate)`,
contiguous from step 0; steps count optimizer updates, learning rates are per update.
"""


import keras

from tfp_iwae import checks
from tfp_iwae import errors

__all__ = ["PAPER_ADAM_EPSILON", "SCHEDULES", "make_optimizer", "paper_schedule",
           "PAPER_PASSES", "stages", "stage_at"]

PAPER_ADAM_EPSILON = 1e-4
# Learning-rate schedules of a run (`schedule=`): see `stages`.
SCHEDULES = ("paper", "constant")


def make_optimizer(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=PAPER_ADAM_EPSILON):
    """Adam with the paper's epsilon = 1e-4 (learning rate is a variable, set per stage).

    Args:
      learning_rate: a finite number > 0, or a Keras `LearningRateSchedule` (or callable)
        passed to Adam as it is.
      beta_1, beta_2: Adam's moment decay rates, finite, in [0, 1).
      epsilon: Adam's denominator offset, finite, > 0.

    Raises:
      tfp_iwae.ArgumentError (a ValueError): naming the argument, for a non-number,
        NaN, inf or a value outside its range (e.g. `make_optimizer(-1)` or
        `make_optimizer(float("nan"))`).
    """
    if not (isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule)
            or callable(learning_rate)):
        learning_rate = checks.real(learning_rate, "learning_rate", lower=0, lower_open=True)
    beta_1 = checks.real(beta_1, "beta_1", lower=0, upper=1, upper_open=True)
    beta_2 = checks.real(beta_2, "beta_2", lower=0, upper=1, upper_open=True)
    epsilon = checks.real(epsilon, "epsilon", lower=0, lower_open=True)
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                                 epsilon=epsilon)


def paper_schedule(num_stages=8, base_learning_rate=1e-3):
    """[(passes, learning_rate)] for stages i = 0..7: 3^i passes at 1e-3 * 10^(-i/7)."""
    return [(3 ** i, base_learning_rate * 10. ** (-i / 7.)) for i in range(num_stages)]


PAPER_PASSES = sum(p for p, _ in paper_schedule())  # 3,280


def stages(schedule, steps_per_epoch, learning_rate, epochs, schedule_passes=0):
    """[(first_step, last_step_exclusive, learning_rate)] for a whole run.

    `schedule` is one of SCHEDULES: `paper` (`paper_schedule` from `learning_rate`; its
    own number of passes) or `constant` (`epochs` passes at `learning_rate`).

    `schedule_passes` > 0 compresses the paper's schedule to that many passes in all:
    stage i keeps its learning rate and its share 3^i / 3,280 of the steps (stage
    boundaries at round(total_steps * passes_before_stage / 3,280), so the stages add up
    to exactly `schedule_passes * steps_per_epoch` steps). With `schedule_passes=3280`
    it is the paper's schedule step for step. `tfp_iwae.ArgumentError` (a ValueError)
    naming `schedule_passes=` if a stage would get no step, or if it is given with the
    constant schedule.
    """
    if schedule_passes and schedule != "paper":
        raise errors.ArgumentError(
            f"schedule_passes={schedule_passes} compresses the paper schedule; expected "
            f"schedule=paper, got {schedule!r}.")
    schedule_passes = checks.count(schedule_passes, "schedule_passes", minimum=0)
    if schedule == "paper":
        plan = paper_schedule(base_learning_rate=learning_rate)
    else:
        plan = [(epochs, learning_rate)]
    if schedule_passes:
        return _compressed(plan, steps_per_epoch, schedule_passes)
    out, step = [], 0
    for passes, lr in plan:
        out.append((step, step + passes * steps_per_epoch, lr))
        step += passes * steps_per_epoch
    return out


def _compressed(plan, steps_per_epoch, schedule_passes):
    """`stages` of the paper's `plan` [(passes, lr)] compressed to `schedule_passes`
    passes in all (see `stages`); `errors.ArgumentError` if a stage would get no step."""
    total, out, before = schedule_passes * steps_per_epoch, [], 0
    for passes, lr in plan:
        first = round(total * before / PAPER_PASSES)
        before += passes
        last = round(total * before / PAPER_PASSES)
        if last <= first:
            fits = next(p for p in range(schedule_passes + 1, PAPER_PASSES + 1)
                        if round(p * steps_per_epoch / PAPER_PASSES) >= 1)
            raise errors.ArgumentError(
                f"schedule_passes={schedule_passes}: stage {len(out)} of the "
                f"compressed paper schedule gets no step at {steps_per_epoch} steps "
                f"per pass; expected at least {fits} passes.")
        out.append((first, last, lr))
    return out


def stage_at(plan, step):
    """(stage index, learning rate) at a step of a `stages` plan."""
    for i, (first, last, lr) in enumerate(plan):
        if first <= step < last:
            return i, lr
    return len(plan) - 1, plan[-1][2]
