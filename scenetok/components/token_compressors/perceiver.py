"""The paper's token compressor: a dual-stream perceiver over posed context views.

Two token streams are updated in every block:

* **view tokens** ``y``: the patch-embedded latents of all ``V`` context views, concatenated
  ``(B, V*P, H)``. They attend jointly over all views (2D RoPE restarts in every view, no view
  index embedding, so the network is permutation-invariant over views and accepts any ``V``) and
  are modulated per token by their camera (adaLN from LVSM-style ray-map tokens);
* **scene queries** ``x``: ``N`` learned tokens ``(B, N, H)`` without positions. They self-attend,
  then read the views through an un-normed, ungated cross-attention whose keys carry the view
  tokens' 2D RoPE.

Block (per-token camera condition ``c``)::

    sh1, sc1, g1, sh2, sc2, g2 = AdaLN(c)
    y = y + g1 * ViewAttn(modulate(norm(y), sh1, sc1))          # joint over all views, RoPE on q, k
    x = x + SceneAttn(norm(x))
    x = x + CrossAttn(q=x, kv=y)                                 # no norm, no gate, RoPE on keys
    y = y + g2 * ViewMLP(modulate(norm(y), sh2, sc2))            # not in the last block
    x = x + SceneMLP(norm(x))

The scene queries' output goes through ``Linear(H -> 2D)`` and is read as the mean / log-variance
of a diagonal Gaussian over ``(B, N, D)`` scene tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from timm.layers import PatchEmbed
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from scenetok.interfaces import DiagonalGaussian, TokenCompressor
from scenetok.nn.attention import CrossAttention, SelfAttention
from scenetok.nn.camera import RAY_MAP_KINDS, CameraPatchEmbed, camera_patch_for_grid
from scenetok.nn.layers import AdaLNModulation, RMSNorm, SwiGLU, modulate, swiglu_hidden_dim
from scenetok.nn.rope import RopeTable, rope_2d_table
from scenetok.types import Cameras

logger = logging.getLogger(__name__)


class PerceiverBlock(nn.Module):
    """One dual-stream block (see the module docstring).

    Args:
        width: token width ``H`` of both streams.
        heads: attention heads.
        mlp_hidden: SwiGLU hidden width.
        qk_norm: RMSNorm on queries/keys of all three attentions (off in the paper).
        norm_eps: RMSNorm epsilon (``None`` = float32 machine epsilon, the paper's setting).
        last: the last block has no view-stream MLP (its output would be unused).
    """

    def __init__(self, width: int, heads: int, mlp_hidden: int, qk_norm: bool = False,
                 norm_eps: float | None = None, last: bool = False) -> None:
        super().__init__()
        self.last = last
        self.view_attn_norm = RMSNorm(width, eps=norm_eps)
        self.view_attn = SelfAttention(width, heads, qk_norm=qk_norm, norm_eps=norm_eps)
        self.scene_attn_norm = RMSNorm(width, eps=norm_eps)
        self.scene_attn = SelfAttention(width, heads, qk_norm=qk_norm, norm_eps=norm_eps)
        self.cross_attn = CrossAttention(width, heads, qk_norm=qk_norm, norm_eps=norm_eps)
        if not last:
            self.view_mlp_norm = RMSNorm(width, eps=norm_eps)
            self.view_mlp = SwiGLU(width, mlp_hidden)
        self.scene_mlp_norm = RMSNorm(width, eps=norm_eps)
        self.scene_mlp = SwiGLU(width, mlp_hidden)
        # Always 6 chunks (also in the last block, which uses 3) to keep the paper's weight shapes.
        self.camera_modulation = AdaLNModulation(width, 6)

    def forward(self, scene: Tensor, views: Tensor, camera: Tensor,
                view_rope: RopeTable | None) -> tuple[Tensor, Tensor | None]:
        """``scene (B, N, H)``, ``views (B, V*P, H)``, ``camera (B, V*P, H)`` -> updated streams
        (the view stream is ``None`` after the last block)."""
        shift_attn, scale_attn, gate_attn, shift_mlp, scale_mlp, gate_mlp = self.camera_modulation(camera)
        views = views + gate_attn * self.view_attn(
            modulate(self.view_attn_norm(views), shift_attn, scale_attn), rope=view_rope
        )
        scene = scene + self.scene_attn(self.scene_attn_norm(scene))
        scene = scene + self.cross_attn(scene, views, key_rope=view_rope)
        if self.last:
            out_views = None
        else:
            out_views = views + gate_mlp * self.view_mlp(
                modulate(self.view_mlp_norm(views), shift_mlp, scale_mlp)
            )
        scene = scene + self.scene_mlp(self.scene_mlp_norm(scene))
        return scene, out_views


class PerceiverCompressor(TokenCompressor):
    """Dual-stream perceiver compressing posed context-view latents into ``N`` scene tokens.

    Build arguments:
        in_channels: latent channels ``C`` of the context image compressor (32 for VA-VAE).
        latent_size: ``(h, w)`` of one context latent (16x16 for 256px VA-VAE).

    Forward: ``latents (B, V, C, h, w)`` + cameras ``(B, V)`` -> :class:`DiagonalGaussian` over
    ``(B, N, D)``. Any ``V >= 1``; the result does not depend on the order of the views.
    """

    @dataclass
    class Config:
        """Perceiver compressor configuration (defaults = the paper's RE10K compressor).

        Attributes:
            width: token width ``H`` of both streams.
            depth: number of dual-stream blocks.
            heads: attention heads (``width / heads`` must be a multiple of 4 for 2D RoPE).
            mlp_ratio: SwiGLU hidden width is ``int(2/3 * int(mlp_ratio * width))``.
            num_tokens: number of scene tokens ``N``.
            token_dim: scene-token width ``D``.
            patch_size: latent cells per view token along each axis (conv patch embedding).
            camera_resolution: height in pixels of the ray map rendered per view (128 in the paper);
                its width follows the latent aspect ratio.
            camera_patch_size: ray-map pixels per camera token (16 in the paper). The camera-token
                grid must equal the view-token grid: ``camera_resolution / camera_patch_size ==
                h / patch_size``; 0 derives it from that equation.
            camera_kind: ``"ray"`` ([direction, origin], the paper) or ``"plucker"``.
            scene_token_init_std: std of the normal init of the learned scene queries (5.0: the
                paper's "large" init keeps the queries distinct from the start).
            rope_theta: base of the 2D RoPE frequencies.
            qk_norm: RMSNorm over head dims of queries/keys (off in the paper).
            norm_eps: RMSNorm epsilon; ``None`` = float32 machine epsilon (torch's default, the
                paper's setting).
            gradient_checkpointing: recompute blocks in the backward pass to save memory.
        """

        width: int = 768
        depth: int = 12
        heads: int = 12
        mlp_ratio: float = 4.0
        num_tokens: int = 512
        token_dim: int = 64
        patch_size: int = 2
        camera_resolution: int = 128
        camera_patch_size: int = 16
        camera_kind: str = "ray"
        scene_token_init_std: float = 5.0
        rope_theta: float = 10_000.0
        qk_norm: bool = False
        norm_eps: Optional[float] = None
        gradient_checkpointing: bool = False

        def __post_init__(self) -> None:
            for name in ("width", "depth", "heads", "num_tokens", "token_dim", "patch_size",
                         "camera_resolution"):
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
            if self.mlp_ratio <= 0:
                raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
            if self.width % self.heads or (self.width // self.heads) % 4:
                raise ValueError(
                    f"width ({self.width}) / heads ({self.heads}) must be an integer head width "
                    "divisible by 4 (2D RoPE splits it over two axes of rotation pairs)"
                )
            if self.camera_kind not in RAY_MAP_KINDS:
                raise ValueError(f"camera_kind must be one of {RAY_MAP_KINDS}, got {self.camera_kind!r}")
            if self.camera_patch_size < 0:
                raise ValueError(f"camera_patch_size must be >= 0 (0 = derive), got {self.camera_patch_size}")
            if self.camera_patch_size and self.camera_resolution % self.camera_patch_size:
                raise ValueError(
                    f"camera_resolution ({self.camera_resolution}) must be a multiple of "
                    f"camera_patch_size ({self.camera_patch_size})"
                )

    #: ``L`` = the paper's compressor (the official ``mv_B1``); ``B`` = the official ``mv_S1``;
    #: ``XL`` = the official ``mv_L1``; ``T`` = a tiny model for tests and the quickstart (its
    #: camera grid assumes a 4x4 view-token grid, e.g. 8x8 latents with patch 2).
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "T": {"width": 64, "depth": 2, "heads": 4, "num_tokens": 32, "token_dim": 16,
              "camera_resolution": 16, "camera_patch_size": 4},
        "S": {"width": 384, "depth": 6, "heads": 6},
        "B": {"width": 512, "depth": 8, "heads": 8},
        "L": {"width": 768, "depth": 12, "heads": 12},
        "XL": {"width": 1024, "depth": 24, "heads": 16},
    }

    def __init__(self, config: Config, *, in_channels: int, latent_size: tuple[int, int] | list[int]) -> None:
        super().__init__()
        self.config = config
        self.in_channels = int(in_channels)
        self.latent_size = (int(latent_size[0]), int(latent_size[1]))
        h, w = self.latent_size
        p = config.patch_size
        if h % p or w % p:
            raise ValueError(f"latent size {self.latent_size} (dataset.image_size / the image compressor's "
                             f"spatial factor) is not divisible by token_compressor.patch_size {p}")
        self.grid_size = (h // p, w // p)
        self.camera_patch_size = camera_patch_for_grid(config.camera_resolution, config.camera_patch_size,
                                                       self.grid_size[0], "view-token grid")
        self.head_dim = config.width // config.heads

        self.scene_queries = nn.Parameter(torch.empty(1, config.num_tokens, config.width))
        self.view_embed = PatchEmbed(img_size=None, patch_size=p, in_chans=in_channels,
                                     embed_dim=config.width, flatten=True)
        self.camera_embed = CameraPatchEmbed(
            config.width, self.camera_patch_size,
            map_size=(config.camera_resolution, self.grid_size[1] * self.camera_patch_size),
            kind=config.camera_kind,
        )
        mlp_hidden = swiglu_hidden_dim(config.width, config.mlp_ratio)
        self.blocks = nn.ModuleList(
            PerceiverBlock(config.width, config.heads, mlp_hidden, qk_norm=config.qk_norm,
                           norm_eps=config.norm_eps, last=i == config.depth - 1)
            for i in range(config.depth)
        )
        self.out_proj = nn.Linear(config.width, 2 * config.token_dim)
        # Everything else keeps PyTorch's default init, as in the paper.
        nn.init.normal_(self.scene_queries, std=config.scene_token_init_std)

    @classmethod
    def token_shape(cls, config: Config) -> tuple[int, int]:
        return config.num_tokens, config.token_dim

    @classmethod
    def official_key_map(cls) -> dict[str, str | None]:
        """The official checkpoint key map (see :func:`official_key_map`); the checkpoint
        importer reaches it through the registry, by the ``compressor.`` prefix."""
        return official_key_map()

    def forward(self, latents: Tensor, cameras: Cameras) -> DiagonalGaussian:
        """``latents (B, V, C, h, w)``, cameras ``(B, V)`` -> Gaussian over ``(B, N, D)``."""
        if latents.ndim != 5:
            raise ValueError(f"latents must be (B, V, C, h, w), got {tuple(latents.shape)}")
        batch, views, channels, h, w = latents.shape
        if channels != self.in_channels or (h, w) != self.latent_size:
            raise ValueError(
                f"expected latents with {self.in_channels} channels of size {self.latent_size}, "
                f"got {channels} channels of size {(h, w)}"
            )
        if tuple(cameras.shape) != (batch, views):
            raise ValueError(f"cameras of shape {tuple(cameras.shape)} do not match latents (B, V) = {(batch, views)}")

        view_tokens = self.view_embed(latents.flatten(0, 1)).unflatten(0, (batch, views)).flatten(1, 2)
        camera_tokens = self.camera_embed(cameras).flatten(1, 2).to(view_tokens.dtype)  # (B, V*P, H)
        # The same 2D positions in every view: views are a set, not a sequence.
        cos, sin = rope_2d_table(*self.grid_size, self.head_dim, self.config.rope_theta, device=latents.device)
        view_rope = (cos.repeat(views, 1), sin.repeat(views, 1))

        scene = self.scene_queries.expand(batch, -1, -1)
        streams: tuple[Tensor, Tensor | None] = (scene, view_tokens)
        for block in self.blocks:
            if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                streams = checkpoint(block, *streams, camera_tokens, view_rope, use_reentrant=False)
            else:
                streams = block(*streams, camera_tokens, view_rope)
        mean, logvar = self.out_proj(streams[0]).chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)


def official_key_map() -> dict[str, str | None]:
    """Ordered ``{regex: replacement}`` from the official ``MVAECompressor`` state dict (keys with
    the ``compressor.`` prefix stripped) to :class:`PerceiverCompressor`; use with
    :func:`scenetok.nn.utils.rename_key`. ``None`` drops a key.

    ============================================  ==========================================
    official                                       here
    ============================================  ==========================================
    ``scene_tokens``                               ``scene_queries``
    ``y_embed.proj.*``                             ``view_embed.proj.*``
    ``pose_embed.model.model.1.weight``            ``camera_embed.linear.weight``
    ``feat_rope.freqs_cos/sin`` (buffers)          dropped (RoPE is recomputed per call)
    ``aggregate.i.norm1`` / ``attn1``              ``blocks.i.view_attn_norm`` / ``view_attn``
    ``aggregate.i.norm2`` / ``attn2``              ``blocks.i.scene_attn_norm`` / ``scene_attn``
    ``aggregate.i.attn3``                          ``blocks.i.cross_attn``
    ``aggregate.i.norm3`` / ``mlp1``               ``blocks.i.view_mlp_norm`` / ``view_mlp``
    ``aggregate.i.norm4`` / ``mlp2``               ``blocks.i.scene_mlp_norm`` / ``scene_mlp``
    ``aggregate.i.adaLN_modulation.1.*``           ``blocks.i.camera_modulation.linear.*``
    ``out_proj.0.*``                               ``out_proj.*``
    ============================================  ==========================================

    Parameter shapes are identical on both sides (see ``tests/test_param_counts.py``). The
    official checkpoint may hold more scene tokens than the model (the paper seeds a 1024-token
    model from 512-token weights by copying the first rows); that is the importer's business.
    """
    block_parts = {
        "norm1": "view_attn_norm", "attn1": "view_attn",
        "norm2": "scene_attn_norm", "attn2": "scene_attn",
        "attn3": "cross_attn",
        "norm3": "view_mlp_norm", "mlp1": "view_mlp",
        "norm4": "scene_mlp_norm", "mlp2": "scene_mlp",
        r"adaLN_modulation\.1": "camera_modulation.linear",
    }
    key_map: dict[str, str | None] = {
        r"scene_tokens": "scene_queries",
        r"y_embed\.proj\.(weight|bias)": r"view_embed.proj.\1",
        r"pose_embed\.model\.model\.1\.weight": "camera_embed.linear.weight",
        r"feat_rope\.freqs_(cos|sin)": None,
        r"out_proj\.0\.(weight|bias)": r"out_proj.\1",
    }
    for official, ours in block_parts.items():
        key_map[rf"aggregate\.(\d+)\.{official}\.(.+)"] = rf"blocks.\1.{ours}.\2"
    return key_map
