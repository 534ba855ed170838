"""SceneGen core: diffusion over the scene-token space of a frozen SceneTok.

The pieces every SceneGen entry point shares (training step, sampling, CFG), independent of the
generator network (any :class:`~scenetok.interfaces.SceneGenerator`) and of the noise process (any
:class:`~scenetok.interfaces.Sampler`; the ``N`` scene tokens play the sampler's ``F`` frames):

* :func:`relative_to_first_condition` -- every camera relative to conditioning view 0;
* :func:`condition_dropout` -- training-time conditioning mask (view 0 always kept, the others
  kept with probability ``view_keep_prob``, the whole sample dropped with ``uncond_prob`` for CFG);
* :func:`training_loss` -- one denoising loss on the frozen compressor's (scaled) tokens;
* :func:`guided_prediction` / :func:`sample_tokens` -- classifier-free guidance and the sampling
  loop, which is :func:`scenetok.rollout.rollout` with one full-sequence window over all tokens
  (the renderer's loop, not a copy).

Token scale: the generator works on ``tokens * token_scale`` (0.1 in the paper); divide sampled
tokens by it before rendering (:meth:`SceneGenConfig.unscale`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from scenetok.geometry.conventions import make_relative
from scenetok.interfaces import Sampler, SceneGenerator
from scenetok.rollout import build_schedule, guided, rollout
from scenetok.types import Cameras


@dataclass
class SceneGenConfig:
    """The ``scenegen`` recipe node.

    Attributes:
        scenetok_run: run directory of the frozen SceneTok (compressor + renderer) whose token
            space is generated; loaded once, never trained. Needed to train, evaluate, generate.
        scenetok_recipe: a SceneTok recipe (file or shipped name) that only *sizes* the generator
            when there is no trained run yet: ``scenetok validate`` / ``model summary`` of a paper-
            size SceneGen recipe. Ignored when ``scenetok_run`` is set.
        token_scale: the generator sees ``tokens * token_scale`` (the paper: 0.1).
        view_keep_prob: training: probability that conditioning view ``v > 0`` is present
            (view 0 always is; the paper: 0.5).
        uncond_prob: training: probability that a whole sample is unconditional (every view
            absent, anchors kept), which trains the CFG branch (the paper's ``cfg_train``: 0.1).
        max_condition_views: conditioning images drawn per training sample (<= the generator's
            ``max_condition_views``): view 0 is one of the anchor views, the others random frames.
        guidance: classifier-free guidance scale at inference (the paper: 3.0; 1 = off).
        steps: inference steps of the token sampler (the paper: 150).
    """

    scenetok_run: Optional[str] = None
    scenetok_recipe: Optional[str] = None
    token_scale: float = 0.1
    view_keep_prob: float = 0.5
    uncond_prob: float = 0.1
    max_condition_views: int = 3
    guidance: float = 3.0
    steps: int = 150

    def __post_init__(self) -> None:
        if self.token_scale <= 0:
            raise ValueError(f"scenegen.token_scale must be > 0, got {self.token_scale}")
        for name in ("view_keep_prob", "uncond_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"scenegen.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_condition_views < 1:
            raise ValueError(f"scenegen.max_condition_views must be >= 1, got {self.max_condition_views}")
        if self.guidance < 0:
            raise ValueError(f"scenegen.guidance must be >= 0, got {self.guidance}")
        if self.steps < 1:
            raise ValueError(f"scenegen.steps must be >= 1, got {self.steps}")

    def scale(self, tokens: Tensor) -> Tensor:
        """Compressor tokens -> the generator's space."""
        return tokens * self.token_scale

    def unscale(self, tokens: Tensor) -> Tensor:
        """Generated tokens -> the renderer's token space."""
        return tokens / self.token_scale


def relative_to_first_condition(cond_cameras: Cameras, anchor_cameras: Cameras) -> tuple[Cameras, Cameras]:
    """Express conditioning ``(B, Vc)`` and anchor ``(B, Va)`` cameras relative to conditioning
    view 0 (which becomes the identity), as the paper does for training and inference."""
    joint = make_relative(Cameras.cat([cond_cameras, anchor_cameras], dim=1), 0)
    views = int(cond_cameras.shape[1])
    return joint[:, :views], joint[:, views:]


def condition_dropout(batch: int, views: int, view_keep_prob: float, uncond_prob: float,
                      generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> Tensor:
    """Training conditioning mask ``(B, Vc)`` bool (``True`` = present).

    View 0 is always present, views ``v > 0`` independently with ``view_keep_prob``; then each
    whole sample is made unconditional (all ``False``) with ``uncond_prob``. Drawn on the
    generator's device (CPU generators give the same masks on any device).
    """
    draw_device = generator.device if generator is not None else device
    keep = torch.rand(batch, views, generator=generator, device=draw_device) < view_keep_prob
    keep[:, 0] = True
    unconditional = torch.rand(batch, 1, generator=generator, device=draw_device) < uncond_prob
    mask = keep & ~unconditional
    return mask.to(device) if device is not None else mask


def training_loss(network: SceneGenerator, sampler: Sampler, tokens: Tensor, cond_latents: Tensor,
                  cond_cameras: Cameras, anchor_cameras: Cameras, cond_mask: Tensor,
                  generator: torch.Generator | None = None) -> Tensor:
    """Per-sample denoising loss ``(B,)`` on scaled scene tokens ``(B, N, D)``.

    Cameras must already be relative to conditioning view 0. Timesteps come from the sampler
    (``(B, N)``, one per token; the paper uses ``timestep_mode: per_sample``, i.e. one level per
    scene, from the shifted distribution).
    """
    batch, num_tokens = tokens.shape[:2]
    t = sampler.sample_timesteps(batch, num_tokens, generator=generator, device=tokens.device)
    noise_device = generator.device if generator is not None else tokens.device
    noise = torch.randn(tokens.shape, generator=generator, device=noise_device, dtype=tokens.dtype).to(tokens.device)
    noisy = sampler.add_noise(tokens, noise, t)
    prediction = network(noisy, sampler.network_timesteps(t), cond_latents, cond_cameras, anchor_cameras, cond_mask)
    target = sampler.training_target(tokens, noise, t)
    return (prediction.float() - target.float()).pow(2).flatten(1).mean(1)


def guided_prediction(network: SceneGenerator, noisy_tokens: Tensor, network_timesteps: Tensor,
                      cond_latents: Tensor, cond_cameras: Cameras, anchor_cameras: Cameras,
                      cond_mask: Tensor | None, guidance: float) -> Tensor:
    """The network's prediction with classifier-free guidance ``u + s (c - u)``, where the
    unconditional branch ``u`` marks every conditioning view absent (anchors kept). ``s = 1``
    makes one conditional call."""
    conditional = network(noisy_tokens, network_timesteps, cond_latents, cond_cameras, anchor_cameras, cond_mask)
    if guidance == 1.0:
        return conditional
    absent = torch.zeros(cond_latents.shape[:2], dtype=torch.bool, device=cond_latents.device)
    unconditional = network(noisy_tokens, network_timesteps, cond_latents, cond_cameras, anchor_cameras, absent)
    return guided(conditional, unconditional, guidance)


@torch.no_grad()
def sample_tokens(network: SceneGenerator, sampler: Sampler, cond_latents: Tensor, cond_cameras: Cameras,
                  anchor_cameras: Cameras, cond_mask: Tensor | None = None, *, guidance: float = 3.0,
                  steps: int = 150, noise: Tensor | None = None,
                  generator: torch.Generator | None = None, progress: bool = False) -> Tensor:
    """Sample scaled scene tokens ``(B, N, D)`` (divide by the token scale before rendering).

    One ``full_sequence`` window over all ``N`` tokens, ``steps`` levels from the sampler's
    :meth:`~scenetok.interfaces.Sampler.inference_levels` (shifted like its training distribution
    for a shifted flow sampler), run by :func:`scenetok.rollout.rollout`. Cameras must already be
    relative to conditioning view 0. ``noise`` (``(B, N, D)``) fixes the initial noise; otherwise
    it is drawn from ``generator``.
    """
    batch = cond_latents.shape[0]
    shape = (batch, network.num_tokens, network.token_dim)
    tokens = network.num_tokens
    schedule = build_schedule("full_sequence", frames=tokens, steps=steps, window=tokens, context_frames=0,
                              levels=sampler.inference_levels(steps))

    def denoise(x: Tensor, t: Tensor, frame_index: Tensor) -> Tensor:
        return guided_prediction(network, x, sampler.network_timesteps(t), cond_latents, cond_cameras,
                                 anchor_cameras, cond_mask, guidance)

    parameter = next(network.parameters())
    return rollout(denoise, sampler, shape, schedule, generator=generator, progress=progress,
                   device=parameter.device, dtype=parameter.dtype, noise=noise)
