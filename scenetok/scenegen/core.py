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
tokens by it before rendering (:meth:`~scenetok.sections.SceneGenConfig.unscale`). The ``scenegen``
recipe section, :class:`~scenetok.sections.SceneGenConfig`, is re-exported here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scenetok.geometry.conventions import make_relative, normalize_scene_scale
from scenetok.interfaces import Sampler, SceneGenerator
from scenetok.rollout import build_schedule, guided, rollout
from scenetok.sections import SceneGenConfig
from scenetok.types import Cameras

__all__ = ["SceneGenConfig", "condition_dropout", "guided_prediction", "relative_to_first_condition",
           "sample_tokens", "training_loss"]


def relative_to_first_condition(cond_cameras: Cameras, anchor_cameras: Cameras, scene_scale: float = 0.0,
                                num_anchors: int | None = None) -> tuple[Cameras, Cameras]:
    """Express conditioning ``(B, Vc)`` and anchor ``(B, Va)`` cameras relative to conditioning
    view 0 (which becomes the identity), as the paper does for training and inference.

    With ``scene_scale`` > 0 (the SceneTok's ``model.scene_scale``) every camera is also scaled so
    that the first ``num_anchors`` anchor cameras (default: all; what the SceneTok encodes as its
    context, the rest may be a render path) have that spread.
    """
    views = int(cond_cameras.shape[1])
    joint = make_relative(Cameras.cat([cond_cameras, anchor_cameras], dim=1), 0)
    if scene_scale > 0:
        end = views + (int(anchor_cameras.shape[1]) if num_anchors is None else num_anchors)
        joint = normalize_scene_scale(joint, joint[:, views:end], scene_scale)
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
    prediction = network(noisy, sampler.network_timesteps(t), cond_latents, cond_cameras, anchor_cameras, cond_mask,
                         generator=generator)
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
