"""The paper's learning-rate schedule and its compression to a smaller budget.

Paper (Burda et al. 2015, sec. 6.1): stages i = 0..7 of 3^i passes at 1e-3 * 10^(-i/7),
3,280 passes in all. `--schedule_passes=P` keeps each stage's learning rate and its share
3^i / 3,280 of the P * steps_per_epoch steps.
"""

import pytest

from tfp_iwae import ArgumentError, schedule
from tfp_iwae.config import RunConfig, TrainingError


def test_paper_schedule_has_the_papers_stages():
    plan = schedule.stages("paper", steps_per_epoch=3000, learning_rate=1e-3, epochs=1)
    assert [last - first for first, last, _ in plan] == [3 ** i * 3000 for i in range(8)]
    assert [lr for _, _, lr in plan] == pytest.approx([1e-3 * 10 ** (-i / 7)
                                                       for i in range(8)])
    assert schedule.PAPER_PASSES == 3280 and plan[-1][1] == 3280 * 3000


def test_compression_to_the_full_budget_is_the_paper_schedule():
    full = schedule.stages("paper", 3000, 1e-3, 1)
    assert schedule.stages("paper", 3000, 1e-3, 1, schedule_passes=3280) == full


@pytest.mark.parametrize("passes,steps_per_epoch", [(10, 3000), (30, 3000), (7, 2999)])
def test_compressed_stages_keep_shares_and_learning_rates(passes, steps_per_epoch):
    plan = schedule.stages("paper", steps_per_epoch, 1e-3, 1, schedule_passes=passes)
    total = passes * steps_per_epoch
    # contiguous, starting at 0, ending exactly at the budget
    assert plan[0][0] == 0 and plan[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(plan, plan[1:]))
    for i, (first, last, lr) in enumerate(plan):
        assert last - first >= 1
        # each stage's length is its share 3^i/3280 of the steps, to within rounding
        assert abs((last - first) - total * 3 ** i / 3280) <= 1
        assert lr == pytest.approx(1e-3 * 10 ** (-i / 7))
    # the learning rate changes exactly at each stage's first step
    assert schedule.stage_at(plan, plan[3][0] - 1)[0] == 2
    assert schedule.stage_at(plan, plan[3][0]) == (3, plan[3][2])


def test_a_budget_too_small_for_stage_zero_is_refused_with_the_smallest_that_fits():
    # 100 steps per pass: stage 0 (1/3280 of the steps) needs round(P*100/3280) >= 1
    with pytest.raises(ValueError, match=r"^schedule_passes=10: stage 0 .* at least 17") as e:
        schedule.stages("paper", 100, 1e-3, 1, schedule_passes=10)
    assert isinstance(e.value, ArgumentError)  # a tfp_iwae.Error and a ValueError
    schedule.stages("paper", 100, 1e-3, 1, schedule_passes=17)


def test_schedule_passes_needs_the_paper_schedule():
    with pytest.raises(TrainingError, match="--schedule_passes: expected 0 unless "
                                            "--schedule=paper"):
        RunConfig(schedule="constant", schedule_passes=10).validate()
    with pytest.raises(TrainingError, match="--schedule_passes: expected an integer >= 0"):
        RunConfig(schedule_passes=-1).validate()
    with pytest.raises(ValueError, match="^schedule_passes=10 compresses"):
        schedule.stages("constant", 100, 1e-3, 5, schedule_passes=10)
