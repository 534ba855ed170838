"""Learning-rate and KL-weight schedules.

The paper's recipe (official configs): a linear warm-up of the LR factor from ``5e-4`` to ``1``
over 2000 steps, then a multistep decay whose milestones count *from the end of the warm-up*
(``SequentialLR(LinearLR, MultiStepLR, milestones=[2000])``), RE10K milestones
``[20k, 150k, 500k]``, ``gamma = 0.4``. The same schedule is written here in closed form as a
single :class:`torch.optim.lr_scheduler.LambdaLR`, which is simpler to checkpoint and resume.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

LR_DECAYS = ("constant", "multistep", "cosine")


@dataclass
class LRScheduleConfig:
    """Warm-up then decay of the learning-rate *factor* (multiplies each group's base LR).

    Attributes:
        warmup_steps: steps of linear warm-up; 0 disables it.
        warmup_start_factor: LR factor at step 0; rises linearly to 1 at ``warmup_steps``.
        decay: what follows the warm-up: ``"constant"`` (factor 1), ``"multistep"`` (multiply by
            ``gamma`` at each milestone) or ``"cosine"`` (half cosine from 1 to ``min_factor``
            over ``decay_steps``, then ``min_factor``).
        milestones: multistep milestones in steps *after the warm-up* (ascending).
        gamma: multistep factor applied at each milestone.
        decay_steps: cosine: length of the decay after the warm-up, ``> 0``.
        min_factor: cosine: final LR factor.
    """

    warmup_steps: int = 2000
    warmup_start_factor: float = 5e-4
    decay: str = "multistep"
    milestones: list[int] = field(default_factory=lambda: [20_000, 150_000, 500_000])
    gamma: float = 0.4
    decay_steps: int = 0
    min_factor: float = 0.0

    def __post_init__(self) -> None:
        if self.decay not in LR_DECAYS:
            raise ValueError(f"decay must be one of {LR_DECAYS}, got {self.decay!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 < self.warmup_start_factor <= 1.0:
            raise ValueError(f"warmup_start_factor must be in (0, 1], got {self.warmup_start_factor}")
        if list(self.milestones) != sorted(self.milestones) or any(m < 0 for m in self.milestones):
            raise ValueError(f"milestones must be ascending and >= 0, got {list(self.milestones)}")
        if self.gamma <= 0.0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")
        if self.decay == "cosine" and self.decay_steps <= 0:
            raise ValueError(f"decay_steps must be > 0 for decay='cosine', got {self.decay_steps}")
        if not 0.0 <= self.min_factor <= 1.0:
            raise ValueError(f"min_factor must be in [0, 1], got {self.min_factor}")


def lr_factor(step: int, config: LRScheduleConfig) -> float:
    """The LR factor at optimisation ``step`` (0-based: the first update uses ``lr_factor(0)``)."""
    if step < config.warmup_steps:
        progress = step / config.warmup_steps
        return config.warmup_start_factor + (1.0 - config.warmup_start_factor) * progress
    after_warmup = step - config.warmup_steps
    if config.decay == "constant":
        return 1.0
    if config.decay == "multistep":
        # bisect_right: the decay applies *at* the milestone step, like MultiStepLR
        return config.gamma ** bisect.bisect_right(list(config.milestones), after_warmup)
    progress = min(after_warmup / config.decay_steps, 1.0)
    return config.min_factor + (1.0 - config.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_lr_scheduler(optimizer: Optimizer, config: LRScheduleConfig) -> LambdaLR:
    """A ``LambdaLR`` following :func:`lr_factor`; call ``scheduler.step()`` once per optimizer step.

    The lambda is a plain closure, so ``scheduler.state_dict()`` holds only counters and can be
    checkpointed as JSON; rebuild the scheduler from the recipe and ``load_state_dict`` to resume.
    """

    def factor(step: int) -> float:
        return lr_factor(step, config)

    return LambdaLR(optimizer, lr_lambda=factor)


@dataclass
class KLWeightScheduleConfig:
    """Weight of the KL term of the scene-token posterior, as a function of the step.

    ``initial_weight`` until ``ramp_start_step``, linear to ``final_weight`` at ``ramp_end_step``,
    ``final_weight`` afterwards (``ramp_start_step == ramp_end_step`` makes it a step change). The
    paper's RE10K recipe uses a constant ``1e-10``.

    Attributes:
        initial_weight: weight before the ramp, ``>= 0``.
        final_weight: weight after the ramp, ``>= 0``.
        ramp_start_step: first step of the ramp.
        ramp_end_step: step at which ``final_weight`` is reached, ``>= ramp_start_step``.
    """

    initial_weight: float = 1e-10
    final_weight: float = 1e-10
    ramp_start_step: int = 0
    ramp_end_step: int = 0

    def __post_init__(self) -> None:
        if self.initial_weight < 0.0:
            raise ValueError(f"initial_weight must be >= 0, got {self.initial_weight}")
        if self.final_weight < 0.0:
            raise ValueError(f"final_weight must be >= 0, got {self.final_weight}")
        if self.ramp_start_step < 0:
            raise ValueError(f"ramp_start_step must be >= 0, got {self.ramp_start_step}")
        if self.ramp_end_step < self.ramp_start_step:
            raise ValueError(
                f"ramp_end_step ({self.ramp_end_step}) must be >= ramp_start_step ({self.ramp_start_step})"
            )


def kl_weight(step: int, config: KLWeightScheduleConfig) -> float:
    """The KL weight at ``step``."""
    if step < config.ramp_start_step:
        return config.initial_weight
    if step >= config.ramp_end_step:
        return config.final_weight
    progress = (step - config.ramp_start_step) / (config.ramp_end_step - config.ramp_start_step)
    return config.initial_weight + (config.final_weight - config.initial_weight) * progress
