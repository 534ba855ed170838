"""Rollout strategies: denoising trajectories longer than the decoder's window.

A strategy is data: a *scheduling matrix* ``S`` of shape ``(G + 1, F)`` holding the noise level of
every latent frame before / after each of the ``G`` global steps, and a *window mask* ``M`` of
shape ``(G, F)`` saying which frames the network sees at each step. The matrix is built from
integer counters ``k`` in ``{0 .. K}`` per frame (``K`` inference steps, ``k = K`` pure noise,
``k = 0`` clean) mapped through the sampler's :meth:`~scenetok.interfaces.Sampler.inference_levels`
(level ``levels[K - k]``), so the same strategy drives any noise process.

Strategies (``W`` window, ``C`` clean context frames carried into the next window, ``U``
uncertainty):

* ``full_sequence`` -- all non-clean frames in the window descend together, one level per step;
  once the window is clean it slides by ``W - C`` (clamped to the last ``W`` frames at the end).
  With ``F <= W`` this is plain joint denoising in ``K`` steps.
* ``autoregressive`` -- inside the window exactly one frame (the first non-clean one) descends at a
  time; later frames wait at noise level 1. Slides like ``full_sequence``; ``F * K`` steps.
* ``pyramid`` -- a diffusion-forcing staircase: frame ``i`` takes its first step in the global step
  in which frame ``i - 1`` completes its ``U``-th level (so neighbours stay ``U - 1`` levels
  apart), and the window slides by one frame whenever more than ``C`` of its frames are clean.
  ``U >= K`` starts each frame when its predecessor becomes clean; ``U = 0`` has no staircase
  (all window frames descend together) and slides by ``W - C`` like ``full_sequence``.

Reference step counts (F=32, W=8, C=4, K=25): full_sequence 175, autoregressive 800, pyramid (U=4)
196 -- the official implementation's numbers. One deliberate difference: the official pyramid
slides only when *exactly* ``C + 1`` frames are clean and never terminates when several frames
finish in the same step (``U = 1``); here the window slides until ``C`` clean frames remain.

Frames at level 0 inside the window are passed to the network at level 0: they act as clean
context. :func:`rollout` runs a schedule with any sampler.
"""

from __future__ import annotations

import logging
from typing import Callable, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from scenetok.interfaces import Sampler
from scenetok.sampling import standard_normal
from scenetok.sections import STRATEGIES, RenderConfig

logger = logging.getLogger(__name__)

#: ``denoise(x_window (B, Fw, ...), t_window (B, Fw) in [0, 1], frame_index (Fw,)) -> prediction``.
DenoiseFn = Callable[[Tensor, Tensor, Tensor], Tensor]


class RolloutSchedule(NamedTuple):
    """A scheduling matrix and its window mask (unpacks as ``S, M = schedule``).

    Attributes:
        noise_levels: ``(G + 1, F)`` float64 levels in ``[0, 1]``; row 0 is all ones, row ``G``
            all zeros, non-increasing down every column.
        window_mask: ``(G, F)`` bool; row ``g`` = frames the network sees at global step ``g``.
            Only those frames change between rows ``g`` and ``g + 1``.
    """

    noise_levels: Tensor
    window_mask: Tensor

    @property
    def num_steps(self) -> int:
        """``G``, the number of global steps (network calls for single-evaluation solvers)."""
        return int(self.window_mask.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.noise_levels.shape[1])


def schedule_for(settings: RenderConfig, sampler: Sampler, frames: int, max_window: int) -> RolloutSchedule:
    """The schedule of the recipe's ``render`` section for ``frames`` latent frames, with
    ``sampler``'s inference levels. ``max_window`` is the decoder's ``max_latent_frames``: the
    default window, and an upper bound for a configured one."""
    window = max_window if settings.window is None else settings.window
    if window > max_window:
        raise ValueError(f"render.window={window} exceeds the decoder's max_latent_frames={max_window}")
    context_frames = window // 2 if settings.context_frames is None else settings.context_frames
    return build_schedule(settings.strategy, frames, settings.steps, window, min(context_frames, window - 1),
                          settings.uncertainty, levels=sampler.inference_levels(settings.steps))



# --------------------------------------------------------------------------------------------
# Scheduling matrices
# --------------------------------------------------------------------------------------------


def schedule_counters(strategy: str, frames: int, steps: int, window: int, context_frames: int,
                      uncertainty: int = 4) -> tuple[Tensor, Tensor]:
    """Integer form of a schedule: counters ``(G + 1, F)`` in ``{0 .. K}`` and the ``(G, F)`` mask.

    See the module docstring for the strategies; :func:`build_schedule` maps counters to levels.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if frames < 1 or steps < 1 or window < 1:
        raise ValueError(f"frames, steps and window must be >= 1, got {frames}, {steps}, {window}")
    if uncertainty < 0:
        raise ValueError(f"uncertainty must be >= 0, got {uncertainty}")
    if frames > window and not 0 <= context_frames < window:
        raise ValueError(
            f"context_frames must be in [0, window) to slide the window, got {context_frames} with window={window}")
    width = min(window, frames)
    # U >= K: each frame starts when its predecessor becomes clean (nothing larger makes sense).
    uncertainty = min(uncertainty, steps)
    staircase = strategy == "pyramid" and uncertainty > 0

    counters = [steps] * frames
    rows, window_starts = [list(counters)], []
    start = 0  # unclamped window position; the window is clamped to the last `width` frames
    while any(counters):
        low = min(start, frames - width)
        high = low + width
        stepping = _frames_to_step(strategy, counters, low, high, steps, uncertainty)
        if not stepping:  # cannot happen for valid inputs; guards against an endless loop
            raise RuntimeError(f"{strategy} schedule stalled at {counters} (window {low}..{high - 1})")
        for index in stepping:
            counters[index] -= 1
        window_starts.append(low)
        rows.append(list(counters))
        if staircase:
            # Slide one frame at a time until only C clean frames are left in the window.
            while start < frames - width and sum(c == 0 for c in counters[start:start + width]) > context_frames:
                start += 1
        elif not any(counters[low:high]):
            start += width - context_frames

    mask = torch.zeros(len(window_starts), frames, dtype=torch.bool)
    for row, low in enumerate(window_starts):
        mask[row, low:low + width] = True
    return torch.tensor(rows, dtype=torch.long), mask


def _frames_to_step(strategy: str, counters: list[int], low: int, high: int, steps: int,
                    uncertainty: int) -> list[int]:
    """Frames in ``[low, high)`` that descend one level at this global step.

    All frames before ``low`` are clean (windows only slide past clean frames).
    """
    if strategy == "full_sequence":
        return [i for i in range(low, high) if counters[i] > 0]
    if strategy == "autoregressive":
        first = next((i for i in range(low, high) if counters[i] > 0), None)
        return [] if first is None else [first]
    # pyramid: frame i steps once its predecessor, counting this step, is U levels down.
    stepping, previous_after = [], 0  # the frame before `low` is clean
    for i in range(low, high):
        after = counters[i]
        if counters[i] > 0 and previous_after <= steps - uncertainty:
            stepping.append(i)
            after -= 1
        previous_after = after
    return stepping


def build_schedule(strategy: str, frames: int, steps: int, window: int, context_frames: int,
                   uncertainty: int = 4, levels: Tensor | None = None) -> RolloutSchedule:
    """Scheduling matrix ``S (G + 1, F)`` and window mask ``M (G, F)`` for a strategy.

    Args:
        strategy: ``"full_sequence"``, ``"autoregressive"`` or ``"pyramid"``.
        frames: latent frames ``F`` of the whole trajectory.
        steps: inference steps ``K`` per frame.
        window: frames per network call ``W``.
        context_frames: clean frames ``C`` carried into the next window (``0 <= C < W`` when
            ``F > W``).
        uncertainty: pyramid staircase spacing ``U``.
        levels: ``(K + 1,)`` levels from 1 to 0, usually ``sampler.inference_levels(K)``;
            ``None`` = uniform ``k / K``.
    """
    if levels is None:
        levels = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    levels = levels.to(torch.float64)
    if levels.shape != (steps + 1,):
        raise ValueError(f"levels must have shape ({steps + 1},), got {tuple(levels.shape)}")
    counters, mask = schedule_counters(strategy, frames, steps, window, context_frames, uncertainty)
    return RolloutSchedule(noise_levels=levels[steps - counters], window_mask=mask)


# --------------------------------------------------------------------------------------------
# The generation loop
# --------------------------------------------------------------------------------------------


def guided(cond_pred: Tensor, uncond_pred: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance ``u + s (c - u)`` (``s = 1``: the conditional prediction)."""
    return uncond_pred + scale * (cond_pred - uncond_pred)


@torch.no_grad()
def rollout(
    denoise: DenoiseFn,
    sampler: Sampler,
    shape: tuple[int, ...] | torch.Size,
    schedule: RolloutSchedule | tuple[Tensor, Tensor],
    generator: torch.Generator | None = None,
    progress: bool = False,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    noise: Tensor | None = None,
) -> Tensor:
    """Denoise a whole trajectory of latents from pure noise following ``schedule``.

    Args:
        denoise: ``denoise(x_window, t_window, frame_index) -> prediction`` with ``x_window``
            ``(B, Fw, ...)``, ``t_window`` ``(B, Fw)`` float32 levels in ``[0, 1]`` (convert with
            ``sampler.network_timesteps``; clean context frames come at 0) and ``frame_index``
            ``(Fw,)`` long, the latent indices of the window (to pick the cameras). Returns the
            sampler's target for the window, shape of ``x_window``.
        sampler: the noise process the network was trained with.
        shape: ``(B, F, ...)``, e.g. ``(B, F, C, h, w)``.
        schedule: from :func:`schedule_for` / :func:`build_schedule`, with ``F`` frames.
        generator: ``torch.Generator`` for the initial noise and stochastic solvers.
        progress: show a progress bar over the global steps.
        device, dtype: where / how to create the latents (the levels stay float32).
        noise: optional initial noise ``shape`` (then ``generator`` only feeds stochastic steps).

    Returns:
        Clean latents ``(B, F, ...)``.
    """
    levels, window_mask = schedule
    batch, frames = int(shape[0]), int(shape[1])
    if levels.shape[1] != frames or window_mask.shape != (levels.shape[0] - 1, frames):
        raise ValueError(
            f"schedule with levels {tuple(levels.shape)} / mask {tuple(window_mask.shape)} "
            f"does not fit shape {tuple(shape)}")
    if noise is not None:
        if tuple(noise.shape) != tuple(shape):
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(shape)}")
        x = noise.to(device=device, dtype=dtype, copy=True)
    else:
        x = standard_normal(tuple(shape), generator, device, dtype)
    levels = levels.to(device=x.device, dtype=torch.float32)
    windows = [row.nonzero().squeeze(1).to(x.device) for row in window_mask.cpu()]

    for step, frame_index in enumerate(tqdm(windows, desc="rollout", disable=not progress)):
        t = levels[step, frame_index].expand(batch, -1).contiguous()
        t_next = levels[step + 1, frame_index].expand(batch, -1).contiguous()

        def model_fn(x_window: Tensor, t_window: Tensor, frame_index: Tensor = frame_index) -> Tensor:
            return denoise(x_window, t_window, frame_index)

        x[:, frame_index] = sampler.denoise_step(model_fn, x[:, frame_index], t, t_next, generator)
    return x
