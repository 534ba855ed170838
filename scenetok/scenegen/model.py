"""SceneGen as one module: a frozen SceneTok (image compressor, token compressor, renderer) plus a
trainable scene generator and its token sampler.

Training sample (from any SceneTok dataset sample ``{context, target}``), as in the paper:

* anchors = the context views (the views the frozen compressor sees);
* conditioning view 0 = one random anchor view (drawn per sample); views ``1 .. Vc-1`` = the first
  target frames (other frames of the same video); every camera relative to conditioning view 0;
* target = ``token_scale * compressor(anchor latents, anchor cameras).sample()`` (frozen, no grad),
  computed on the fly;
* conditioning mask from :func:`~scenetok.scenegen.core.condition_dropout`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from scenetok.interfaces import Sampler, SceneGenerator
from scenetok.scenegen.core import (
    SceneGenConfig,
    condition_dropout,
    relative_to_first_condition,
    sample_tokens,
    training_loss,
)
from scenetok.types import Cameras, SceneBatch, Views

log = logging.getLogger(__name__)


def single_image_setup(batch: SceneBatch, scene_scale: float = 0.0) -> tuple[Views, Views, Cameras]:
    """The single-image generation protocol for a dataset batch: ``(conditioning view, anchors,
    target cameras)`` with conditioning view = context view 0, anchors = every context view (their
    cameras are the ground-truth trajectory), all cameras relative to context view 0 (and scaled
    to ``scene_scale``, the SceneTok's ``model.scene_scale``, when it is > 0)."""
    context = batch.context
    cond = Views(images=None if context.images is None else context.images[:, :1],
                 cameras=context.cameras[:, :1], indices=context.indices[:, :1],
                 latents=None if context.latents is None else context.latents[:, :1])
    views = context.num_views
    rel_cond, rel_rest = relative_to_first_condition(cond.cameras, Cameras.cat([context.cameras, batch.target.cameras]),
                                                     scene_scale, num_anchors=views)
    return cond.replace(cameras=rel_cond), context.replace(cameras=rel_rest[:, :views]), rel_rest[:, views:]


class SceneGen(nn.Module):
    """Frozen SceneTok + scene generator (see the module docstring).

    Args:
        scenetok: a trained :class:`~scenetok.model.SceneTok`; frozen here (``requires_grad``
            off, always in eval mode).
        generator: the :class:`~scenetok.interfaces.SceneGenerator` network (trainable).
        sampler: the noise process over scene tokens.
        config: the ``scenegen`` recipe node.
    """

    #: The token compressor is part of the frozen SceneTok: always frozen (read by the training loop).
    compressor_frozen = True

    def __init__(self, scenetok: nn.Module, generator: SceneGenerator, sampler: Sampler,
                 config: SceneGenConfig) -> None:
        super().__init__()
        self.scenetok = scenetok
        self.scenetok.requires_grad_(False)
        self.generator = generator
        self.sampler = sampler
        self.config = config
        max_views = type(generator).max_condition_views(generator.config)
        if config.max_condition_views > max_views:
            raise ValueError(f"scenegen.max_condition_views={config.max_condition_views} exceeds the generator's "
                             f"max_condition_views={max_views}")
        self.train(False)

    def freeze_compressor(self) -> None:
        """Nothing to do: SceneGen never trains the compressor (``train.freeze_compressor_after``
        and resumed states call this)."""

    def train(self, mode: bool = True) -> SceneGen:
        super().train(mode)
        self.scenetok.eval()  # frozen: never dropout / camera dropout / sampling modes
        return self

    # -- data -------------------------------------------------------------------------------------

    def condition_latents(self, views: Views) -> Tensor:
        """Standardised latents ``(B, V, C, h, w)`` of conditioning images (posterior means)."""
        return self.scenetok.context_latents(views, sample=False)

    @torch.no_grad()
    def target_tokens(self, anchors: Views, generator: torch.Generator | None = None) -> Tensor:
        """The frozen compressor's tokens for ``anchors`` (cameras already relative), scaled:
        ``(B, N, D)``. A posterior sample, as in the paper's training (the renderer was trained on
        samples too)."""
        distribution = self.scenetok.encode(anchors, sample=False)
        return self.config.scale(distribution.sample(generator=generator))

    def split_batch(self, batch: SceneBatch, generator: torch.Generator | None = None) -> tuple[Views, Views]:
        """``(conditioning views, anchor views)`` of a dataset batch, cameras relative to
        conditioning view 0 (see the module docstring)."""
        anchors = batch.context
        others = self.config.max_condition_views - 1
        if batch.target.num_views < others:
            raise ValueError(f"scenegen.max_condition_views={self.config.max_condition_views} needs at least "
                             f"{others} target views per sample, the dataset gives {batch.target.num_views}")
        batch_size = anchors.indices.shape[0]
        # Per sample: conditioning view 0 is a random anchor, views 1.. the first target frames.
        first = torch.randint(anchors.num_views, (batch_size, 1), generator=generator)
        rows = torch.arange(batch_size)[:, None]

        def pick(views: Views, columns: Tensor) -> Views:
            index = (rows.to(views.indices.device), columns.to(views.indices.device))
            return Views(images=None if views.images is None else views.images[index],
                         cameras=views.cameras[index], indices=views.indices[index],
                         latents=None if views.latents is None else views.latents[index])

        parts = [pick(anchors, first)]
        if others:
            parts.append(pick(batch.target, torch.arange(others).expand(batch_size, others)))
        cond = Views(
            images=None if any(p.images is None for p in parts) else torch.cat([p.images for p in parts], 1),
            cameras=Cameras.cat([p.cameras for p in parts]),
            indices=torch.cat([p.indices for p in parts], 1),
            latents=None if any(p.latents is None for p in parts) else torch.cat([p.latents for p in parts], 1),
        )
        cond_cameras, anchor_cameras = relative_to_first_condition(cond.cameras, anchors.cameras,
                                                                   self.scenetok.config.scene_scale)
        return cond.replace(cameras=cond_cameras), anchors.replace(cameras=anchor_cameras)

    # -- training ---------------------------------------------------------------------------------

    def loss(self, batch: SceneBatch, kl_weight: float = 0.0, generator: torch.Generator | None = None
             ) -> dict[str, Tensor]:
        """The SceneGen objective for one dataset batch: ``{"loss", "mse", "kl"}`` (``kl`` is 0;
        the keys match SceneTok's so the shared training loop logs both the same way)."""
        cond, anchors = self.split_batch(batch, generator)
        tokens = self.target_tokens(anchors, generator)
        with torch.no_grad():
            latents = self.condition_latents(cond)
        mask = condition_dropout(tokens.shape[0], cond.num_views, self.config.view_keep_prob,
                                 self.config.uncond_prob, generator=generator, device=tokens.device)
        mse = training_loss(self.generator, self.sampler, tokens, latents, cond.cameras, anchors.cameras, mask,
                            generator=generator)
        zero = mse.new_zeros(())
        return {"loss": mse.mean(), "mse": mse.mean().detach(), "kl": zero}

    def forward(self, batch: SceneBatch, kl_weight: float = 0.0, generator: torch.Generator | None = None
                ) -> dict[str, Tensor]:
        """The training loss (so DistributedDataParallel can wrap the module)."""
        return self.loss(batch, kl_weight=kl_weight, generator=generator)

    # -- inference --------------------------------------------------------------------------------

    @torch.no_grad()
    def generate_tokens(self, cond: Views, anchor_cameras: Cameras, *, guidance: float | None = None,
                        steps: int | None = None, generator: torch.Generator | None = None,
                        noise: Tensor | None = None, progress: bool = False) -> Tensor:
        """Scene tokens ``(B, N, D)`` in the renderer's space (unscaled) for conditioning views
        ``cond`` (images or cached latents, ``Vc`` views) and ``anchor_cameras`` ``(B, Va)``,
        both relative to conditioning view 0."""
        latents = self.condition_latents(cond)
        scaled = sample_tokens(
            self.generator, self.sampler, latents, cond.cameras, anchor_cameras,
            guidance=self.config.guidance if guidance is None else guidance,
            steps=steps if steps is not None else self.config.steps, noise=noise, generator=generator,
            progress=progress)
        return self.config.unscale(scaled)

    @torch.no_grad()
    def reconstruct(self, batch: SceneBatch, deterministic: bool = True, generator: torch.Generator | None = None,
                    guidance: float | None = None, token_steps: int | None = None, **render_kwargs: Any) -> Tensor:
        """Single-image generation for a dataset batch: condition on context view 0, anchors =
        every context camera, render the target cameras (all relative to context view 0).

        The same signature as :meth:`scenetok.model.SceneTok.reconstruct`, so the training loop's
        validation grids work unchanged. Returns ``(B, V_t, 3, H, W)``.
        """
        cond, anchors, targets = single_image_setup(batch, self.scenetok.config.scene_scale)
        tokens = self.generate_tokens(cond, anchors.cameras, guidance=guidance, steps=token_steps,
                                      generator=generator)
        return self.scenetok.render(tokens, targets, generator=generator, **render_kwargs)

    def networks(self) -> nn.ModuleDict:
        """The trained network, as checkpoints and EMA store it (the frozen SceneTok is not stored:
        it is loaded from ``scenegen.scenetok_run``)."""
        return nn.ModuleDict({"scene_generator": self.generator})

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.generator.parameters() if p.requires_grad]
