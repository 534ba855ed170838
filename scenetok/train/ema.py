"""Exponential moving average (EMA) of a model's weights.

The EMA keeps one averaged copy per entry of ``model.state_dict()`` (parameters and persistent
buffers), so :meth:`EMA.state_dict` can be saved as a checkpoint tensor group and loaded straight
into a fresh model for evaluation or export. Floating-point entries are averaged; integer buffers
(counters) are copied.

Pass the *unwrapped* module (``ddp_model.module``), not the DDP wrapper, so names match the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class EMAConfig:
    """EMA hyper-parameters.

    Attributes:
        decay: target decay in ``[0, 1)``: ``ema = decay * ema + (1 - decay) * weights``.
        warmup: use ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the average is not
            dominated by the random initialisation early in training.
        start_step: until the EMA has seen this many updates it copies the weights instead of
            averaging them.
    """

    decay: float = 0.9999
    warmup: bool = False
    start_step: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {self.decay}")
        if self.start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {self.start_step}")


class EMA:
    """EMA of ``model``'s state dict.

    Usage::

        ema = EMA(model, EMAConfig(decay=0.9999))
        ...  optimizer.step(); ema.update(model)
        with ema.average_parameters(model):   # evaluate with EMA weights, restored afterwards
            evaluate(model)
        save_checkpoint(..., tensors={"model": model.state_dict(), "ema": ema.state_dict()},
                        state={"ema_num_updates": ema.num_updates, ...})
    """

    def __init__(self, model: nn.Module, config: EMAConfig | None = None) -> None:
        self.config = config or EMAConfig()
        self.num_updates = 0
        with torch.no_grad():
            self._shadow: dict[str, Tensor] = {
                name: value.detach().clone() for name, value in model.state_dict().items()
            }

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use (0 means copy)."""
        if self.num_updates < self.config.start_step:
            return 0.0
        if self.config.warmup:
            n = self.num_updates - self.config.start_step
            return min(self.config.decay, (1.0 + n) / (10.0 + n))
        return self.config.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights into the average (call after each optimizer step)."""
        decay = self.current_decay()
        current = model.state_dict()
        self._check_names(current)
        averaged: list[Tensor] = []
        targets: list[Tensor] = []
        for name, shadow in self._shadow.items():
            value = current[name].detach()
            if shadow.is_floating_point():
                averaged.append(shadow)
                targets.append(value.to(dtype=shadow.dtype, device=shadow.device))
            else:
                shadow.copy_(value)
        if averaged:
            # lerp(shadow, w, 1 - decay) == decay * shadow + (1 - decay) * w
            torch._foreach_lerp_(averaged, targets, 1.0 - decay)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged weights, keyed like ``model.state_dict()`` (copies)."""
        return {name: value.clone() for name, value in self._shadow.items()}

    @torch.no_grad()
    def load_state_dict(self, state_dict: Mapping[str, Tensor], num_updates: int | None = None) -> None:
        """Restore averaged weights (and the update counter used by warm-up, if given)."""
        self._check_names(state_dict)
        for name, shadow in self._shadow.items():
            shadow.copy_(state_dict[name].to(dtype=shadow.dtype, device=shadow.device))
        if num_updates is not None:
            self.num_updates = int(num_updates)

    def to(self, device: torch.device | str) -> EMA:
        """Move the averaged weights (e.g. keep them on CPU to save accelerator memory)."""
        self._shadow = {name: value.to(device) for name, value in self._shadow.items()}
        return self

    @torch.no_grad()
    def swap(self, model: nn.Module) -> None:
        """Exchange ``model``'s weights and the averaged ones in place; calling it twice restores both."""
        current = model.state_dict()
        self._check_names(current)
        for name, shadow in self._shadow.items():
            live = current[name]
            held = shadow.clone()
            shadow.copy_(live.to(dtype=shadow.dtype, device=shadow.device))
            live.copy_(held.to(dtype=live.dtype, device=live.device))

    @contextlib.contextmanager
    def average_parameters(self, model: nn.Module) -> Iterator[nn.Module]:
        """Context in which ``model`` holds the EMA weights; its own come back on exit (even on error)."""
        self.swap(model)
        try:
            yield model
        finally:
            self.swap(model)

    def _check_names(self, state_dict: Mapping[str, Tensor]) -> None:
        if state_dict.keys() != self._shadow.keys():
            missing = sorted(self._shadow.keys() - state_dict.keys())
            extra = sorted(state_dict.keys() - self._shadow.keys())
            raise KeyError(
                f"EMA and model disagree on weight names; missing from model: {missing[:5]}, "
                f"unknown to the EMA: {extra[:5]} (pass the unwrapped module, not DDP)"
            )
