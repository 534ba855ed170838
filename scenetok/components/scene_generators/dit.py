"""SceneGen's generator: a DiT over scene tokens, conditioned on posed images and anchor cameras
(the paper's ``scene_generator.LightningDiT``, ``lightningdit_1p0B_1`` at the ``L`` preset).

Tokens: the ``N`` noisy (scaled) scene tokens, ``x = token_embed(tokens) + pos_embed`` with a
learned absolute position embedding (zero-initialised). Timesteps are per token; the timestep
embedding drives every adaLN (no camera in the adaLN, unlike the renderer).

Conditioning sequence (keys/values of the cross-attention), built by :meth:`condition_sequence`::

    view v  : cond_embed(latent_v) + camera_embed(camera_v)      (h/p)(w/p) tokens, or that many
              copies of the learned null token when the view is absent (camera included)
    anchors : mean over the ray-map patches of anchor_camera_embed(camera_a)   one token per anchor
    y = [view 0 | view 1 | ... | view Vmax-1 | anchors]

Fewer than ``max_condition_views`` views are padded with absent views, so a single-image call sees
the same sequence layout as training. Both camera embeddings are Plücker ray maps cut into
patches by a conv with a 2D sin-cos position table (:class:`~scenetok.nn.camera.SinCosRayPatchEmbed`).

Block (the renderer's block without RoPE)::

    sh1, sc1, g1, sh2, sc2, g2 = AdaLN(t_emb)                    # zero-initialised
    x = x + g1 * SelfAttn(modulate(norm(x), sh1, sc1))           # over scene tokens, qk-norm
    x = x + CrossAttn(q=x, kv=y)                                  # no norm, no gate, qk-norm
    x = x + g2 * SwiGLU(modulate(norm(x), sh2, sc2))
    final: sh, sc = AdaLN(t_emb); out = Linear(modulate(norm(x), sh, sc))   # -> (B, N, D)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from timm.layers import PatchEmbed
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from scenetok.components.decoders.dit import DiTBlock, FinalLayer, init_dit_weights
from scenetok.interfaces import SceneGenerator
from scenetok.nn.camera import RAY_MAP_KINDS, SinCosRayPatchEmbed, camera_patch_for_grid
from scenetok.nn.layers import TimestepEmbedder, swiglu_hidden_dim
from scenetok.nn.utils import rename_key
from scenetok.types import Cameras

logger = logging.getLogger(__name__)


class DiTSceneGenerator(SceneGenerator):
    """DiT denoiser over scene tokens (see the module docstring).

    Build arguments:
        num_tokens: scene tokens ``N`` (512 in the paper).
        token_dim: scene-token width ``D`` (64).
        in_channels: channels ``C`` of a conditioning image's latent (32, VA-VAE).
        latent_size: ``(h, w)`` of that latent (16x16 at 256 px).
    """

    @dataclass
    class Config:
        """Scene-generator configuration (defaults = the paper's ``lightningdit_1p0B_1``).

        Attributes:
            width: token width ``H``.
            depth: number of blocks.
            heads: attention heads.
            mlp_ratio: SwiGLU hidden width is ``int(2/3 * int(mlp_ratio * width))``.
            patch_size: latent cells per conditioning-image token along each axis.
            max_condition_views: conditioning-image slots in the sequence (3 in the paper).
            camera_resolution: height in pixels of the Plücker map per camera (128); its width
                follows the latent aspect ratio.
            camera_patch_size: ray-map pixels per camera token (8 for 16x16 latents);
                ``camera_resolution / camera_patch_size`` must equal ``h / patch_size``; 0 derives it.
            camera_kind: ``"plucker"`` (the paper) or ``"ray"``.
            camera_dropout: training-only probability of zeroing a sample's whole camera
                embedding, independently for the conditioning views and the anchors (0.1).
            qk_norm: RMSNorm over head dims of queries/keys in both attentions.
            norm_eps: RMSNorm epsilon.
            null_token_init_std: std of the normal init of the learned null token (the official
                code initialises it to 0; a non-zero start lets absent views differ from zeros).
            camera_bf16_rounding: compatibility switch: round both camera embeddings to bf16 (the
                anchor mean is taken first) as the official code does even in fp32 runs.
            ray_epsilon: compatibility switch: ray directions divided by ``norm + ray_epsilon``
                (official: 1e-6) instead of normalised exactly (0).
            gradient_checkpointing: recompute blocks in the backward pass to save memory.
        """

        width: int = 1536
        depth: int = 24
        heads: int = 24
        mlp_ratio: float = 4.0
        patch_size: int = 1
        max_condition_views: int = 3
        camera_resolution: int = 128
        camera_patch_size: int = 8
        camera_kind: str = "plucker"
        camera_dropout: float = 0.1
        qk_norm: bool = True
        norm_eps: float = 1e-6
        null_token_init_std: float = 0.02
        camera_bf16_rounding: bool = False
        ray_epsilon: float = 0.0
        gradient_checkpointing: bool = False

        def __post_init__(self) -> None:
            for name in ("width", "depth", "heads", "patch_size", "max_condition_views", "camera_resolution"):
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
            if self.mlp_ratio <= 0:
                raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
            if self.width % self.heads:
                raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
            if self.width % 4:
                raise ValueError(f"width must be divisible by 4 (2D sin-cos camera table), got {self.width}")
            if self.camera_kind not in RAY_MAP_KINDS:
                raise ValueError(f"camera_kind must be one of {RAY_MAP_KINDS}, got {self.camera_kind!r}")
            if self.camera_patch_size < 0:
                raise ValueError(f"camera_patch_size must be >= 0 (0 = derive), got {self.camera_patch_size}")
            if not 0.0 <= self.camera_dropout < 1.0:
                raise ValueError(f"camera_dropout must be in [0, 1), got {self.camera_dropout}")
            if self.ray_epsilon < 0:
                raise ValueError(f"ray_epsilon must be >= 0, got {self.ray_epsilon}")

    #: ``L`` = the paper's generator (``lightningdit_1p0B_1``, ~1.26 B parameters); ``B`` = the
    #: official ``lightningdit_B_1`` width; ``S`` = DiT-S width; ``T`` = tiny, for tests and the CPU
    #: rooms recipe (camera grid derived from the latent grid).
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "T": {"width": 64, "depth": 2, "heads": 4, "camera_resolution": 16, "camera_patch_size": 0},
        "S": {"width": 384, "depth": 12, "heads": 6},
        "B": {"width": 768, "depth": 12, "heads": 12},
        "L": {"width": 1536, "depth": 24, "heads": 24},
    }

    def __init__(self, config: Config, *, num_tokens: int, token_dim: int, in_channels: int,
                 latent_size: tuple[int, int] | list[int]) -> None:
        super().__init__()
        self.config = config
        self.num_tokens = int(num_tokens)
        self.token_dim = int(token_dim)
        self.in_channels = int(in_channels)
        self.latent_size = (int(latent_size[0]), int(latent_size[1]))
        h, w = self.latent_size
        p = config.patch_size
        if h % p or w % p:
            raise ValueError(f"latent size {self.latent_size} is not divisible by patch_size {p}")
        self.grid_size = (h // p, w // p)
        camera_patch = camera_patch_for_grid(config.camera_resolution, config.camera_patch_size,
                                             self.grid_size[0], "conditioning latent grid")
        map_size = (config.camera_resolution, self.grid_size[1] * camera_patch)

        self.token_embed = nn.Linear(self.token_dim, config.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, config.width))
        self.cond_embed = PatchEmbed(img_size=None, patch_size=p, in_chans=self.in_channels,
                                     embed_dim=config.width, flatten=True)
        self.camera_embed = SinCosRayPatchEmbed(config.width, camera_patch, map_size, kind=config.camera_kind,
                                                ray_epsilon=config.ray_epsilon)
        self.anchor_camera_embed = SinCosRayPatchEmbed(config.width, camera_patch, map_size,
                                                       kind=config.camera_kind, ray_epsilon=config.ray_epsilon)
        self.null_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.timestep_embed = TimestepEmbedder(config.width)
        mlp_hidden = swiglu_hidden_dim(config.width, config.mlp_ratio)
        self.blocks = nn.ModuleList(
            DiTBlock(config.width, config.heads, mlp_hidden, qk_norm=config.qk_norm, norm_eps=config.norm_eps)
            for _ in range(config.depth)
        )
        self.final_layer = FinalLayer(config.width, self.token_dim, norm_eps=config.norm_eps)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The official init: xavier-uniform Linears and patch convs (zero bias), N(0, 0.02) for the
        timestep MLP, adaLN-Zero and a zero output layer, zero position embedding. The camera convs
        keep PyTorch's default init, as in the paper."""
        init_dit_weights(self.cond_embed.proj, self.timestep_embed, self.blocks, self.final_layer,
                         extra_linears=(self.token_embed, self.cond_embed))
        nn.init.zeros_(self.pos_embed)
        nn.init.normal_(self.null_token, std=self.config.null_token_init_std)

    @classmethod
    def official_key_map(cls) -> dict[str, str | None]:
        """The official checkpoint key map (see :func:`official_key_map`); the checkpoint
        importer reaches it through the registry, by the ``scene_generator.`` prefix."""
        return official_key_map()

    @classmethod
    def max_condition_views(cls, config: Config) -> int:
        return config.max_condition_views

    # -- conditioning -----------------------------------------------------------------------------

    def _camera_dropout(self, embedding: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Zero a sample's whole camera embedding with probability ``camera_dropout`` (training),
        drawn from ``generator`` (on its device) when given."""
        if not self.training or self.config.camera_dropout == 0:
            return embedding
        draw_device = generator.device if generator is not None else embedding.device
        draw = torch.rand(embedding.shape[0], generator=generator, device=draw_device).to(embedding.device)
        keep = draw >= self.config.camera_dropout
        return embedding * keep.reshape(-1, *([1] * (embedding.ndim - 1))).to(embedding.dtype)

    def condition_sequence(self, cond_latents: Tensor, cond_cameras: Cameras, anchor_cameras: Cameras,
                           cond_mask: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """The cross-attention sequence ``y``, ``(B, Vmax * (h/p)(w/p) + Va, H)`` (see the module
        docstring); ``Vc < max_condition_views`` views are padded with absent ones."""
        if cond_latents.ndim != 5:
            raise ValueError(f"cond_latents must be (B, Vc, C, h, w), got {tuple(cond_latents.shape)}")
        batch, views, channels, h, w = cond_latents.shape
        max_views = self.config.max_condition_views
        if not 1 <= views <= max_views:
            raise ValueError(f"got {views} conditioning views; this generator takes 1 to {max_views}")
        if channels != self.in_channels or (h, w) != self.latent_size:
            raise ValueError(
                f"expected conditioning latents with {self.in_channels} channels of size {self.latent_size}, "
                f"got {channels} channels of size {(h, w)}")
        if tuple(cond_cameras.shape) != (batch, views):
            raise ValueError(f"cond_cameras must have batch shape {(batch, views)}, got {tuple(cond_cameras.shape)}")
        if anchor_cameras.extrinsics.ndim != 4 or anchor_cameras.shape[0] != batch:
            raise ValueError(f"anchor_cameras must have batch shape (B={batch}, Va), got {tuple(anchor_cameras.shape)}")
        if cond_mask is None:
            cond_mask = torch.ones(batch, views, dtype=torch.bool, device=cond_latents.device)
        if tuple(cond_mask.shape) != (batch, views):
            raise ValueError(f"cond_mask must be (B, Vc) = {(batch, views)}, got {tuple(cond_mask.shape)}")

        images = self.cond_embed(cond_latents.flatten(0, 1)).unflatten(0, (batch, views))  # (B, Vc, P, H)
        camera = self._camera_dropout(self.camera_embed(cond_cameras), generator)
        anchors = self._camera_dropout(self.anchor_camera_embed(anchor_cameras).mean(dim=2), generator)  # (B, Va, H)
        if self.config.camera_bf16_rounding:
            camera, anchors = camera.to(torch.bfloat16), anchors.to(torch.bfloat16)
        views_y = images + camera.to(images.dtype)
        if views < max_views:  # absent slots: contents are irrelevant, the mask replaces them
            views_y = torch.cat([views_y, views_y.new_zeros(batch, max_views - views, *views_y.shape[2:])], 1)
            cond_mask = torch.cat([cond_mask.to(torch.bool),
                                   cond_mask.new_zeros(batch, max_views - views, dtype=torch.bool)], 1)
        present = cond_mask.to(torch.bool)[:, :, None, None]
        views_y = torch.where(present, views_y, self.null_token.to(views_y.dtype))
        return torch.cat([views_y.flatten(1, 2), anchors.to(views_y.dtype)], dim=1)

    # -- forward ----------------------------------------------------------------------------------

    def forward(self, noisy_tokens: Tensor, timesteps: Tensor, cond_latents: Tensor, cond_cameras: Cameras,
                anchor_cameras: Cameras, cond_mask: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """Predict the sampler's target for ``noisy_tokens (B, N, D)`` at ``timesteps (B, N)``
        (network scale); see :meth:`scenetok.interfaces.SceneGenerator.forward`. Returns ``(B, N, D)``."""
        if noisy_tokens.ndim != 3 or noisy_tokens.shape[1:] != (self.num_tokens, self.token_dim):
            raise ValueError(
                f"noisy_tokens must be (B, N={self.num_tokens}, D={self.token_dim}), got {tuple(noisy_tokens.shape)}")
        batch = noisy_tokens.shape[0]
        if tuple(timesteps.shape) != (batch, self.num_tokens):
            raise ValueError(f"timesteps must be (B, N) = {(batch, self.num_tokens)}, got {tuple(timesteps.shape)}")
        if cond_latents.shape[0] != batch:
            raise ValueError(f"cond_latents has batch {cond_latents.shape[0]}, noisy_tokens {batch}")
        x = self.token_embed(noisy_tokens) + self.pos_embed
        y = self.condition_sequence(cond_latents, cond_cameras, anchor_cameras, cond_mask, generator).to(x.dtype)
        condition = self.timestep_embed(timesteps).to(x.dtype)  # (B, N, H): per-token adaLN
        for block in self.blocks:
            if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, condition, y, None, use_reentrant=False)
            else:
                x = block(x, condition, y, None)
        return self.final_layer(x, condition)


def official_key_map() -> dict[str, str | None]:
    """Ordered ``{regex: replacement}`` from the official scene-generator state dict (keys with
    the ``scene_generator.`` prefix stripped) to :class:`DiTSceneGenerator`; use with
    :func:`scenetok.nn.utils.rename_key`. ``None`` drops a key.

    ==========================================================  ====================================
    official                                                     here
    ==========================================================  ====================================
    ``model.x_embedder.*``                                       ``token_embed.*``
    ``model.pos_embed``                                          ``pos_embed``
    ``model.c_embedder.proj.*``                                  ``cond_embed.proj.*``
    ``model.null_tokens``                                        ``null_token``
    ``model.t_embedder.mlp.{0,2}.*``                             ``timestep_embed.mlp.{0,2}.*``
    ``pose_embed.model.model.proj.*``                            ``camera_embed.proj.*``
    ``anchor_pose_embed.model.model.proj.*``                     ``anchor_camera_embed.proj.*``
    ``(anchor_)pose_embed.model.model.pos_embed`` (sin-cos)      dropped (recomputed, non-persistent)
    ``model.blocks.i.norm1`` / ``attn``                          ``blocks.i.attn_norm`` / ``self_attn``
    ``model.blocks.i.attn2``                                     ``blocks.i.cross_attn``
    ``model.blocks.i.norm2`` / ``mlp``                           ``blocks.i.mlp_norm`` / ``mlp``
    ``model.blocks.i.adaLN_modulation.1.*``                      ``blocks.i.modulation.linear.*``
    ``model.final_layer.norm_final.weight``                      ``final_layer.norm.weight``
    ``model.final_layer.linear.*``                               ``final_layer.linear.*``
    ``model.final_layer.adaLN_modulation.1.*``                   ``final_layer.modulation.linear.*``
    ==========================================================  ====================================

    Every parameter has a counterpart with the same shape; an ``ema.*`` copy is not part of this
    map (strip ``ema.module.`` instead of ``scene_generator.`` to load it).
    """
    block_parts = {
        "norm1": "attn_norm", "attn": "self_attn", "attn2": "cross_attn",
        "norm2": "mlp_norm", "mlp": "mlp", r"adaLN_modulation\.1": "modulation.linear",
    }
    key_map: dict[str, str | None] = {
        r"model\.x_embedder\.(weight|bias)": r"token_embed.\1",
        r"model\.pos_embed": "pos_embed",
        r"model\.c_embedder\.proj\.(weight|bias)": r"cond_embed.proj.\1",
        r"model\.null_tokens": "null_token",
        r"model\.t_embedder\.mlp\.([02])\.(weight|bias)": r"timestep_embed.mlp.\1.\2",
        r"pose_embed\.model\.model\.proj\.(weight|bias)": r"camera_embed.proj.\1",
        r"anchor_pose_embed\.model\.model\.proj\.(weight|bias)": r"anchor_camera_embed.proj.\1",
        r"(anchor_)?pose_embed\.model\.model\.pos_embed": None,
        r"model\.final_layer\.norm_final\.weight": "final_layer.norm.weight",
        r"model\.final_layer\.linear\.(weight|bias)": r"final_layer.linear.\1",
        r"model\.final_layer\.adaLN_modulation\.1\.(weight|bias)": r"final_layer.modulation.linear.\1",
    }
    for official, ours in block_parts.items():
        key_map[rf"model\.blocks\.(\d+)\.{official}\.(.+)"] = rf"blocks.\1.{ours}.\2"
    return key_map


def load_official_state_dict(state_dict: dict[str, Tensor], prefix: str = "scene_generator.") -> dict[str, Tensor]:
    """Our state dict from an official one: keep ``prefix`` keys, strip it, rename every key with
    :func:`official_key_map` (a key without a rule raises ``KeyError`` naming it)."""
    key_map = official_key_map()
    renamed: dict[str, Tensor] = {}
    selected = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not selected:
        raise KeyError(f"no key starts with {prefix!r} (first keys: {sorted(state_dict)[:3]})")
    for key, value in selected.items():
        ours = rename_key(key, key_map)
        if ours is not None:
            renamed[ours] = value
    return renamed
