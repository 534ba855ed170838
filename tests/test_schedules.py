"""LR and KL-weight schedules."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch.optim.lr_scheduler import LinearLR, MultiStepLR, SequentialLR

from scenetok.checkpoint import flatten_state
from scenetok.train.schedules import (
    KLWeightScheduleConfig,
    LRScheduleConfig,
    build_lr_scheduler,
    kl_weight,
    lr_factor,
)


def lrs_over(scheduler, optimizer, steps: int) -> list[float]:
    values = []
    for _ in range(steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def make_optimizer(lr: float = 1e-4) -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def test_matches_the_official_sequential_lr():
    """Same LR per step as SequentialLR(LinearLR(5e-4, 20), MultiStepLR([30, 50], 0.4), milestones=[20])."""
    config = LRScheduleConfig(
        warmup_steps=20, warmup_start_factor=5e-4, decay="multistep", milestones=[30, 50], gamma=0.4
    )
    optimizer = make_optimizer()
    ours = lrs_over(build_lr_scheduler(optimizer, config), optimizer, 90)

    reference_optimizer = make_optimizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's deprecation chatter
        reference = SequentialLR(
            reference_optimizer,
            [
                LinearLR(reference_optimizer, start_factor=5e-4, total_iters=20),
                MultiStepLR(reference_optimizer, [30, 50], 0.4),
            ],
            milestones=[20],
        )
        theirs = lrs_over(reference, reference_optimizer, 90)
    assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-12)
    # and the shape is what the paper describes
    assert ours[0] == pytest.approx(1e-4 * 5e-4)
    assert ours[20] == pytest.approx(1e-4) and ours[49] == pytest.approx(1e-4)
    assert ours[50] == pytest.approx(4e-5) and ours[70] == pytest.approx(1.6e-5)


def test_constant_and_cosine():
    constant = LRScheduleConfig(warmup_steps=4, warmup_start_factor=0.25, decay="constant")
    assert [lr_factor(s, constant) for s in range(6)] == pytest.approx(
        [0.25, 0.4375, 0.625, 0.8125, 1.0, 1.0]
    )
    cosine = LRScheduleConfig(warmup_steps=0, decay="cosine", decay_steps=10, min_factor=0.1)
    assert lr_factor(0, cosine) == pytest.approx(1.0)
    assert lr_factor(5, cosine) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(10, cosine) == pytest.approx(0.1) and lr_factor(1000, cosine) == pytest.approx(0.1)
    values = [lr_factor(s, cosine) for s in range(12)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_scheduler_state_is_json_and_resumes():
    config = LRScheduleConfig(warmup_steps=5, decay="cosine", decay_steps=20)
    optimizer = make_optimizer()
    scheduler = build_lr_scheduler(optimizer, config)
    lrs_over(scheduler, optimizer, 7)
    skeleton, tensors = flatten_state(scheduler.state_dict())
    assert not tensors
    state = json.loads(json.dumps(skeleton))
    expected = lrs_over(scheduler, optimizer, 5)

    resumed_optimizer = make_optimizer()
    resumed = build_lr_scheduler(resumed_optimizer, config)
    resumed.load_state_dict(state)
    # the optimizer's own state_dict carries the current lr in a real resume
    resumed_optimizer.param_groups[0]["lr"] = resumed.get_last_lr()[0]
    assert lrs_over(resumed, resumed_optimizer, 5) == expected


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"decay": "linear"}, "decay"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"warmup_start_factor": 0.0}, "warmup_start_factor"),
        ({"milestones": [5, 2]}, "milestones"),
        ({"decay": "cosine", "decay_steps": 0}, "decay_steps"),
        ({"gamma": 0.0}, "gamma"),
    ],
)
def test_lr_config_validation_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        LRScheduleConfig(**overrides)


def test_kl_weight_schedule():
    config = KLWeightScheduleConfig(
        initial_weight=0.0, final_weight=1e-4, ramp_start_step=10, ramp_end_step=20
    )
    assert kl_weight(0, config) == 0.0 and kl_weight(9, config) == 0.0
    assert kl_weight(10, config) == 0.0
    assert kl_weight(15, config) == pytest.approx(5e-5)
    assert kl_weight(20, config) == pytest.approx(1e-4) and kl_weight(10_000, config) == pytest.approx(1e-4)
    step_change = KLWeightScheduleConfig(
        initial_weight=1.0, final_weight=2.0, ramp_start_step=5, ramp_end_step=5
    )
    assert [kl_weight(s, step_change) for s in (4, 5, 6)] == [1.0, 2.0, 2.0]
    assert kl_weight(123, KLWeightScheduleConfig()) == 1e-10  # the paper's constant
    with pytest.raises(ValueError, match="ramp_end_step"):
        KLWeightScheduleConfig(ramp_start_step=5, ramp_end_step=4)
    with pytest.raises(ValueError, match="final_weight"):
        KLWeightScheduleConfig(final_weight=-1.0)
