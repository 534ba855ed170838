"""The paper's renderer: a LightningDiT-style video DiT that denoises target latents, conditioned
on scene tokens (cross-attention only) and target cameras (per-token adaLN only).

Tokens: ``F`` latent frames x ``P = (h/p)(w/p)`` patches, flattened frame-major, ``(B, F*P, H)``.
Per-token condition ``c = t_emb[frame] + camera_emb[frame, patch]`` drives every adaLN.

Block::

    sh1, sc1, g1, sh2, sc2, g2 = AdaLN(c)                       # zero-initialised
    x = x + g1 * SelfAttn(modulate(norm(x), sh1, sc1))           # all F*P tokens, qk-norm, 3D RoPE on q, k
    x = x + CrossAttn(q=x, kv=scene)                             # no norm, no gate, qk-norm, 3D RoPE on q
    x = x + g2 * SwiGLU(modulate(norm(x), sh2, sc2))
    final: sh, sc = AdaLN(c); out = Linear(modulate(norm(x), sh, sc)) -> unpatchify

``scene = scene_token_proj(scene_tokens)`` (the paper's ``cnd_proj``, stored with the renderer). For
classifier-free guidance a learned null token in the projected space replaces all scene tokens
(``scene_tokens=None``) or the masked ones (``token_mask``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from einops import rearrange
from timm.layers import PatchEmbed
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from scenetok.interfaces import Decoder, LatentSpec
from scenetok.nn.attention import CrossAttention, SelfAttention
from scenetok.nn.camera import RAY_MAP_KINDS, CameraPatchEmbed, camera_patch_for_grid
from scenetok.nn.layers import (
    AdaLNModulation,
    RMSNorm,
    SwiGLU,
    TimestepEmbedder,
    modulate,
    swiglu_hidden_dim,
)
from scenetok.nn.rope import RopeTable, rope_3d_axis_dims, rope_3d_table
from scenetok.types import Cameras

logger = logging.getLogger(__name__)


class DiTBlock(nn.Module):
    """One renderer block (see the module docstring).

    Args:
        width: token width ``H``.
        heads: attention heads.
        mlp_hidden: SwiGLU hidden width.
        qk_norm: RMSNorm over head dims of queries/keys in both attentions.
        norm_eps: RMSNorm epsilon.
    """

    def __init__(self, width: int, heads: int, mlp_hidden: int, qk_norm: bool = True,
                 norm_eps: float | None = 1e-6) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(width, eps=norm_eps)
        self.self_attn = SelfAttention(width, heads, qk_norm=qk_norm, norm_eps=norm_eps)
        self.cross_attn = CrossAttention(width, heads, qk_norm=qk_norm, norm_eps=norm_eps)
        self.mlp_norm = RMSNorm(width, eps=norm_eps)
        self.mlp = SwiGLU(width, mlp_hidden)
        self.modulation = AdaLNModulation(width, 6)

    def forward(self, x: Tensor, condition: Tensor, scene: Tensor, rope: RopeTable) -> Tensor:
        """``x (B, L, H)``, ``condition (B, L, H)``, ``scene (B or 1, N, H)`` -> ``(B, L, H)``."""
        shift_attn, scale_attn, gate_attn, shift_mlp, scale_mlp, gate_mlp = self.modulation(condition)
        x = x + gate_attn * self.self_attn(modulate(self.attn_norm(x), shift_attn, scale_attn), rope=rope)
        x = x + self.cross_attn(x, scene, query_rope=rope)
        return x + gate_mlp * self.mlp(modulate(self.mlp_norm(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """adaLN-modulated RMSNorm + Linear to ``p*p*C`` values per token (zero-initialised)."""

    def __init__(self, width: int, out_features: int, norm_eps: float | None = 1e-6) -> None:
        super().__init__()
        self.norm = RMSNorm(width, eps=norm_eps)
        self.linear = nn.Linear(width, out_features)
        self.modulation = AdaLNModulation(width, 2)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        shift, scale = self.modulation(condition)
        return self.linear(modulate(self.norm(x), shift, scale))


def init_dit_weights(patch_conv: nn.Conv2d, timestep_embed: nn.Module, blocks: nn.ModuleList,
                     final_layer: nn.Module, extra_linears: tuple[nn.Module, ...] = ()) -> None:
    """The DiT init both official DiTs (renderer and scene generator) use: xavier-uniform Linears
    with zero bias in the core (``extra_linears``, the timestep MLP, the blocks, the final layer),
    the patch-embedding conv initialised as the Linear over ``(C, p, p)`` it is, N(0, 0.02) for the
    timestep MLP, adaLN-Zero for every modulation and a zero output Linear."""
    for part in (*extra_linears, timestep_embed, blocks, final_layer):
        for module in part.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
    nn.init.xavier_uniform_(patch_conv.weight.view(patch_conv.weight.shape[0], -1))
    nn.init.zeros_(patch_conv.bias)
    nn.init.normal_(timestep_embed.mlp[0].weight, std=0.02)
    nn.init.normal_(timestep_embed.mlp[2].weight, std=0.02)
    for block in blocks:
        block.modulation.zero_init()
    final_layer.modulation.zero_init()
    nn.init.zeros_(final_layer.linear.weight)
    nn.init.zeros_(final_layer.linear.bias)


class DiTDecoder(Decoder):
    """Video DiT renderer over target latents.

    Build arguments:
        in_channels: target latent channels ``C`` (128 Video DC-AE, 48 Wan 2.2).
        latent_size: ``(h, w)`` of a target latent (8x8 Video DC-AE, 16x16 Wan at 256px).
        token_dim: scene-token width ``D``.
        latent_spec: the target compressor's :class:`LatentSpec`; its ``temporal_factor`` sets how
            many raw-frame ray maps are stacked per camera token and its ``frame_groups`` which
            ones. ``None`` = one raw frame per latent frame.
    """

    @dataclass
    class Config:
        """DiT renderer configuration (defaults = the paper's RE10K renderer, ``lightningdit_L_1``).

        Attributes:
            width: token width ``H``.
            depth: number of blocks.
            heads: attention heads (head width ``width / heads`` must be even and >= 6 for 3D RoPE).
            mlp_ratio: SwiGLU hidden width is ``int(2/3 * int(mlp_ratio * width))``.
            patch_size: latent cells per token along each axis.
            window: largest number of latent frames per forward pass (the rollout window).
            rope_chunks: the latent frames are split into this many equal chunks whose RoPE frame
                positions each restart at 0 (the paper's ``num_target_split``; 2 for Wan DL3DV).
            rope_theta: base of the 3D RoPE frequencies.
            camera_resolution: height in pixels of the ray map rendered per raw frame (128 in the
                paper); its width follows the latent aspect ratio.
            camera_patch_size: ray-map pixels per camera token (16 for 8x8 latents, 8 for 16x16);
                ``camera_resolution / camera_patch_size`` must equal ``h / patch_size``; 0 derives it.
            camera_kind: ``"ray"`` ([direction, origin], the paper) or ``"plucker"``.
            qk_norm: RMSNorm over head dims of queries/keys (on in the paper).
            norm_eps: RMSNorm epsilon (1e-6 in the paper's renderer).
            null_token_init_std: std of the normal init of the learned CFG null token.
            camera_legacy_channel_order: compatibility switch for the released Wan checkpoints,
                whose camera Linear was trained on features ordered ``(ph, pw, t, c)``.
            camera_bf16_rounding: compatibility switch: round the camera embedding to bf16 as the
                paper's code does even in fp32 runs (moves outputs by ~5e-4).
            gradient_checkpointing: recompute blocks in the backward pass to save memory.
        """

        width: int = 1024
        depth: int = 24
        heads: int = 16
        mlp_ratio: float = 4.0
        patch_size: int = 1
        window: int = 8
        rope_chunks: int = 1
        rope_theta: float = 10_000.0
        camera_resolution: int = 128
        camera_patch_size: int = 16
        camera_kind: str = "ray"
        qk_norm: bool = True
        norm_eps: float = 1e-6
        null_token_init_std: float = 0.02
        camera_legacy_channel_order: bool = False
        camera_bf16_rounding: bool = False
        gradient_checkpointing: bool = False

        def __post_init__(self) -> None:
            for name in ("width", "depth", "heads", "patch_size", "window", "rope_chunks",
                         "camera_resolution"):
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
            if self.mlp_ratio <= 0:
                raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
            if self.width % self.heads:
                raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
            try:
                rope_3d_axis_dims(self.width // self.heads)
            except ValueError as error:
                raise ValueError(f"heads: {error}") from None
            if self.window % self.rope_chunks:
                raise ValueError(f"window ({self.window}) must be divisible by rope_chunks ({self.rope_chunks})")
            if self.camera_kind not in RAY_MAP_KINDS:
                raise ValueError(f"camera_kind must be one of {RAY_MAP_KINDS}, got {self.camera_kind!r}")
            if self.camera_patch_size < 0:
                raise ValueError(f"camera_patch_size must be >= 0 (0 = derive), got {self.camera_patch_size}")
            if self.camera_patch_size and self.camera_resolution % self.camera_patch_size:
                raise ValueError(
                    f"camera_resolution ({self.camera_resolution}) must be a multiple of "
                    f"camera_patch_size ({self.camera_patch_size})"
                )

    #: ``B`` / ``L`` / ``XL`` = the official ``lightningdit_B_1`` / ``L_1`` (the paper's renderer)
    #: / ``XL_1``; ``S`` = DiT-S width; ``T`` = a tiny model for tests and the quickstart (its
    #: camera grid assumes 4x4 latents with patch 1).
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "T": {"width": 64, "depth": 2, "heads": 4, "camera_resolution": 16, "camera_patch_size": 4},
        "S": {"width": 384, "depth": 12, "heads": 6},
        "B": {"width": 768, "depth": 12, "heads": 12},
        "L": {"width": 1024, "depth": 24, "heads": 16},
        "XL": {"width": 1152, "depth": 28, "heads": 16},
    }

    def __init__(self, config: Config, *, in_channels: int, latent_size: tuple[int, int] | list[int],
                 token_dim: int, latent_spec: LatentSpec | None = None) -> None:
        super().__init__()
        self.config = config
        self.in_channels = int(in_channels)
        self.latent_size = (int(latent_size[0]), int(latent_size[1]))
        self.token_dim = int(token_dim)
        self.latent_spec = latent_spec or LatentSpec(channels=self.in_channels, spatial_factor=1)
        if self.latent_spec.channels != self.in_channels:
            raise ValueError(
                f"latent_spec declares {self.latent_spec.channels} channels but in_channels is {self.in_channels}"
            )
        h, w = self.latent_size
        p = config.patch_size
        if h % p or w % p:
            raise ValueError(f"latent size {self.latent_size} (dataset.image_size / the image compressor's "
                             f"spatial factor) is not divisible by decoder.patch_size {p}")
        self.grid_size = (h // p, w // p)
        self.camera_patch_size = camera_patch_for_grid(config.camera_resolution, config.camera_patch_size,
                                                       self.grid_size[0], "latent token grid")
        self.head_dim = config.width // config.heads

        self.camera_embed = CameraPatchEmbed(
            config.width, self.camera_patch_size,
            map_size=(config.camera_resolution, self.grid_size[1] * self.camera_patch_size),
            kind=config.camera_kind, frames_per_token=self.latent_spec.temporal_factor,
            legacy_channel_order=config.camera_legacy_channel_order,
        )
        self.scene_token_proj = nn.Linear(self.token_dim, config.width)
        self.null_token = nn.Parameter(torch.empty(1, 1, config.width))
        self.latent_embed = PatchEmbed(img_size=None, patch_size=p, in_chans=self.in_channels,
                                       embed_dim=config.width, flatten=True)
        self.timestep_embed = TimestepEmbedder(config.width)
        mlp_hidden = swiglu_hidden_dim(config.width, config.mlp_ratio)
        self.blocks = nn.ModuleList(
            DiTBlock(config.width, config.heads, mlp_hidden, qk_norm=config.qk_norm, norm_eps=config.norm_eps)
            for _ in range(config.depth)
        )
        self.final_layer = FinalLayer(config.width, p * p * self.in_channels, norm_eps=config.norm_eps)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The paper's init: xavier-uniform Linears (zero bias) in the DiT core, N(0, 0.02) for the
        timestep MLP, adaLN-Zero for every modulation and the output Linear. The camera embedding
        and ``scene_token_proj`` keep PyTorch's default init, as in the paper."""
        init_dit_weights(self.latent_embed.proj, self.timestep_embed, self.blocks, self.final_layer,
                         extra_linears=(self.latent_embed,))
        nn.init.normal_(self.null_token, std=self.config.null_token_init_std)

    @classmethod
    def max_latent_frames(cls, config: Config) -> int:
        return config.window

    @classmethod
    def official_key_map(cls) -> dict[str, str | None]:
        """The official checkpoint key map (see :func:`official_key_map`); the checkpoint
        importer reaches it through the registry, by the ``denoiser.`` prefix."""
        return official_key_map()

    @classmethod
    def official_scenetok_only(cls) -> dict[str, str]:
        """Parameters without an official counterpart, with how the importer fills them.

        ``null_token``: zeros (what upstream initialises its never-built null tokens to). It is
        only read by the unconditional branch of classifier-free guidance, which a guidance
        scale of 1.0 never evaluates, so an imported model reproduces the official output exactly.
        """
        return {"null_token": "zeros; used only by guidance scales != 1.0 (upstream never trained one)"}

    def scene_state(self, scene_tokens: Tensor | None, token_mask: Tensor | None, batch: int) -> Tensor:
        """Cross-attention context ``(B, N, H)``; ``(1, 1, H)`` null token when ``scene_tokens`` is None.

        One null token is exactly equivalent to ``N`` copies of it: attention over identical keys
        returns their common value.
        """
        if scene_tokens is None:
            return self.null_token
        if scene_tokens.ndim != 3 or scene_tokens.shape[0] != batch or scene_tokens.shape[2] != self.token_dim:
            raise ValueError(
                f"scene_tokens must be (B={batch}, N, D={self.token_dim}), got {tuple(scene_tokens.shape)}"
            )
        scene = self.scene_token_proj(scene_tokens)
        if token_mask is not None:
            if token_mask.shape != scene_tokens.shape[:2]:
                raise ValueError(
                    f"token_mask must be (B, N) = {tuple(scene_tokens.shape[:2])}, got {tuple(token_mask.shape)}"
                )
            scene = torch.where(token_mask[..., None].to(torch.bool), self.null_token.to(scene.dtype), scene)
        return scene

    def forward(self, noisy_latents: Tensor, timesteps: Tensor, cameras: Cameras,
                scene_tokens: Tensor | None, token_mask: Tensor | None = None) -> Tensor:
        """Predict the sampler's target.

        Args:
            noisy_latents: ``(B, F, C, h, w)`` with ``F <= window`` and ``F`` divisible by
                ``rope_chunks``.
            timesteps: ``(B, F)`` per-latent-frame timesteps in the network's scale.
            cameras: raw target-frame cameras ``(B, V)``; ``latent_spec.latent_frames(V) == F``.
            scene_tokens: ``(B, N, D)``, or ``None`` for the null-token (unconditional) branch.
            token_mask: optional ``(B, N)`` bool, ``True`` = use the null token for that token.

        Returns:
            ``(B, F, C, h, w)``.
        """
        if noisy_latents.ndim != 5:
            raise ValueError(f"noisy_latents must be (B, F, C, h, w), got {tuple(noisy_latents.shape)}")
        batch, frames, channels, h, w = noisy_latents.shape
        if channels != self.in_channels or (h, w) != self.latent_size:
            raise ValueError(
                f"expected latents with {self.in_channels} channels of size {self.latent_size}, "
                f"got {channels} channels of size {(h, w)}"
            )
        if frames > self.config.window:
            raise ValueError(f"{frames} latent frames exceed the decoder window of {self.config.window}")
        if tuple(timesteps.shape) != (batch, frames):
            raise ValueError(f"timesteps must be (B, F) = {(batch, frames)}, got {tuple(timesteps.shape)}")
        if cameras.extrinsics.ndim != 4 or cameras.shape[0] != batch:
            raise ValueError(f"cameras must have batch shape (B={batch}, V), got {tuple(cameras.shape)}")
        raw_frames = int(cameras.shape[1])
        try:
            frame_groups = self.latent_spec.frame_groups(raw_frames)
        except ValueError as error:
            raise ValueError(f"{raw_frames} target cameras do not form latent frames: {error}") from None
        if len(frame_groups) != frames:
            raise ValueError(
                f"{raw_frames} target cameras make {len(frame_groups)} latent frames under {self.latent_spec}, "
                f"but the latents have {frames}"
            )

        x = self.latent_embed(noisy_latents.flatten(0, 1)).unflatten(0, (batch, frames))  # (B, F, P, H)
        camera = self.camera_embed(cameras, frame_groups)  # (B, F, P, H)
        if self.config.camera_bf16_rounding:
            camera = camera.to(torch.bfloat16)
        time = self.timestep_embed(timesteps)  # (B, F, H)
        condition = (time[:, :, None, :] + camera.to(time.dtype)).flatten(1, 2).to(x.dtype)
        x = x.flatten(1, 2)
        rope = rope_3d_table(frames, *self.grid_size, self.head_dim, self.config.rope_theta,
                             num_chunks=self.config.rope_chunks, device=x.device)
        scene = self.scene_state(scene_tokens, token_mask, batch).to(x.dtype)

        for block in self.blocks:
            if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, condition, scene, rope, use_reentrant=False)
            else:
                x = block(x, condition, scene, rope)
        out = self.final_layer(x, condition)
        p = self.config.patch_size
        return rearrange(out, "b (f gh gw) (ph pw c) -> b f c (gh ph) (gw pw)",
                         f=frames, gh=self.grid_size[0], gw=self.grid_size[1], ph=p, pw=p)


def official_key_map() -> dict[str, str | None]:
    """Ordered ``{regex: replacement}`` from the official renderer state dict (keys with the
    ``denoiser.`` prefix stripped) to :class:`DiTDecoder`; use with
    :func:`scenetok.nn.utils.rename_key`. ``None`` drops a key.

    ==================================================  =========================================
    official                                             here
    ==================================================  =========================================
    ``pose_embed.model.model.1.weight``                  ``camera_embed.linear.weight``
    ``cnd_proj.*``                                       ``scene_token_proj.*``
    ``null_tokens`` (if present; never built upstream)   dropped (``null_token`` stays initialised)
    ``model.x_embedder.proj.*``                          ``latent_embed.proj.*``
    ``model.t_embedder.mlp.{0,2}.*``                     ``timestep_embed.mlp.{0,2}.*``
    ``model.blocks.i.norm1`` / ``attn``                  ``blocks.i.attn_norm`` / ``self_attn``
    ``model.blocks.i.attn2``                             ``blocks.i.cross_attn``
    ``model.blocks.i.norm2`` / ``mlp``                   ``blocks.i.mlp_norm`` / ``mlp``
    ``model.blocks.i.adaLN_modulation.1.*``              ``blocks.i.modulation.linear.*``
    ``model.final_layer.norm_final.weight``              ``final_layer.norm.weight``
    ``model.final_layer.linear.*``                       ``final_layer.linear.*``
    ``model.final_layer.adaLN_modulation.1.*``           ``final_layer.modulation.linear.*``
    ==================================================  =========================================

    Parameter shapes are identical on both sides (see ``tests/test_param_counts.py``); the only
    parameter without an official counterpart is ``null_token`` (the official CFG path never
    constructed its null tokens).
    """
    block_parts = {
        "norm1": "attn_norm", "attn": "self_attn", "attn2": "cross_attn",
        "norm2": "mlp_norm", "mlp": "mlp", r"adaLN_modulation\.1": "modulation.linear",
    }
    key_map: dict[str, str | None] = {
        r"pose_embed\.model\.model\.1\.weight": "camera_embed.linear.weight",
        r"cnd_proj\.(weight|bias)": r"scene_token_proj.\1",
        r"null_tokens": None,
        r"model\.x_embedder\.proj\.(weight|bias)": r"latent_embed.proj.\1",
        r"model\.t_embedder\.mlp\.([02])\.(weight|bias)": r"timestep_embed.mlp.\1.\2",
        r"model\.final_layer\.norm_final\.weight": "final_layer.norm.weight",
        r"model\.final_layer\.linear\.(weight|bias)": r"final_layer.linear.\1",
        r"model\.final_layer\.adaLN_modulation\.1\.(weight|bias)": r"final_layer.modulation.linear.\1",
    }
    for official, ours in block_parts.items():
        key_map[rf"model\.blocks\.(\d+)\.{official}\.(.+)"] = rf"blocks.\1.{ours}.\2"
    return key_map
