"""Noise helpers shared by every sampler (core and plugins): random draws that reproduce across
devices, the training-timestep distributions, and the shape/level checks of a solver step.

Conventions (every :class:`~scenetok.interfaces.Sampler`): ``t`` in ``[0, 1]`` with ``t = 1`` pure
noise, per-latent-frame timesteps ``(B, F)``. This is part of the public plugin API: a plugin
sampler imports these instead of re-writing them.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

TIMESTEP_DISTRIBUTIONS = ("uniform", "logit_normal", "shifted")
TIMESTEP_MODES = ("per_sample", "per_chunk", "per_frame")

#: ``model_fn(x_t, t) -> prediction`` with ``x_t (B, F, ...)`` and ``t (B, F)`` in ``[0, 1]``.
ModelFn = Callable[[Tensor, Tensor], Tensor]


def shift_timesteps(t: Tensor, shift: float) -> Tensor:
    """The timestep shift map ``t' = s t / (1 + (s - 1) t)``.

    ``s > 1`` moves mass toward noise (used for high-resolution / DL3DV models), ``s = 1`` is the
    identity; ``0`` and ``1`` are fixed points. Works for any shape and dtype.
    """
    if shift == 1.0:
        return t.clone()
    return shift * t / (1.0 + (shift - 1.0) * t)


def standard_normal(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
                    device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """``N(0, I)`` noise of ``shape`` on ``device``, drawn from ``generator`` (if given).

    The noise is drawn on the generator's device and then moved, so a CPU generator gives the same
    numbers whatever device the model runs on (reproducible renders across machines).
    """
    draw_device = generator.device if generator is not None else device
    noise = torch.randn(tuple(shape), generator=generator, device=draw_device, dtype=dtype)
    return noise.to(device) if device is not None else noise


def standard_uniform(shape: tuple[int, ...], generator: torch.Generator | None,
            device: torch.device | str | None) -> Tensor:
    """``U(0, 1)`` float32 samples, drawn like :func:`standard_normal`."""
    draw_device = generator.device if generator is not None else device
    values = torch.rand(shape, generator=generator, device=draw_device)
    return values.to(device) if device is not None else values


def draw_training_timesteps(
    batch: int,
    frames: int,
    *,
    distribution: str,
    mode: str,
    chunks: int = 2,
    shared_prob: float = 0.2,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    shift: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Training timesteps ``(B, F)`` in ``[0, 1]``.

    Args:
        batch, frames: ``B`` and ``F`` (latent frames).
        distribution: ``"uniform"`` (``U(0,1)``), ``"logit_normal"`` (``sigmoid(N(mu, sigma))``) or
            ``"shifted"`` (:func:`shift_timesteps` of ``U(0,1)`` with ``shift``).
        mode: ``"per_sample"`` (one ``t`` for all frames of a sample), ``"per_chunk"`` (``chunks``
            runs of consecutive latent frames, each with its own ``t``; frame ``f`` belongs to
            chunk ``f * chunks // F``) or ``"per_frame"`` (independent per latent frame).
        shared_prob: for ``per_chunk``/``per_frame``, the probability that a sample uses one
            shared ``t`` for all its frames anyway (the paper's 20 % fallback, which keeps plain
            joint denoising in distribution).
        generator: optional ``torch.Generator`` for reproducible draws.

    Returns:
        float32 ``(B, F)``.
    """
    if mode not in TIMESTEP_MODES:
        raise ValueError(f"timestep_mode must be one of {TIMESTEP_MODES}, got {mode!r}")
    groups = {"per_sample": 1, "per_chunk": min(chunks, frames), "per_frame": frames}[mode]
    if distribution == "uniform":
        values = standard_uniform((batch, groups), generator, device)
    elif distribution == "logit_normal":
        normal = standard_normal((batch, groups), generator, device)
        values = torch.sigmoid(logit_mean + logit_std * normal)
    elif distribution == "shifted":
        values = shift_timesteps(standard_uniform((batch, groups), generator, device), shift)
    else:
        raise ValueError(f"timesteps must be one of {TIMESTEP_DISTRIBUTIONS}, got {distribution!r}")
    if groups > 1 and shared_prob > 0:
        shared = standard_uniform((batch, 1), generator, device) < shared_prob
        values = torch.where(shared, values[:, :1], values)
    group_of_frame = torch.arange(frames, device=values.device) * groups // frames
    return values[:, group_of_frame]


def per_frame(t: Tensor, like: Tensor) -> Tensor:
    """View ``t (B, F)`` so it broadcasts against ``like (B, F, ...)``."""
    return t.reshape(tuple(t.shape) + (1,) * (like.ndim - t.ndim))


def check_step_levels(t: Tensor, t_next: Tensor) -> None:
    """Raise unless ``0 <= t_next <= t <= 1`` elementwise (denoising never adds noise)."""
    if t.shape != t_next.shape:
        raise ValueError(f"t {tuple(t.shape)} and t_next {tuple(t_next.shape)} must have the same shape")
    if bool((t_next > t).any()) or bool((t_next < 0).any()) or bool((t > 1).any()):
        raise ValueError("a denoising step needs 0 <= t_next <= t <= 1 for every frame")


def validate_timestep_fields(config: object) -> None:
    """Shared ``__post_init__`` checks for the training-timestep fields of both samplers."""
    if config.timesteps not in TIMESTEP_DISTRIBUTIONS:
        raise ValueError(f"timesteps must be one of {TIMESTEP_DISTRIBUTIONS}, got {config.timesteps!r}")
    if config.timestep_mode not in TIMESTEP_MODES:
        raise ValueError(f"timestep_mode must be one of {TIMESTEP_MODES}, got {config.timestep_mode!r}")
    if config.logit_std <= 0:
        raise ValueError(f"logit_std must be > 0, got {config.logit_std}")
    if config.shift <= 0:
        raise ValueError(f"shift must be > 0, got {config.shift}")
    if config.chunks < 1:
        raise ValueError(f"chunks must be >= 1, got {config.chunks}")
    if not 0.0 <= config.shared_prob <= 1.0:
        raise ValueError(f"shared_prob must be in [0, 1], got {config.shared_prob}")
