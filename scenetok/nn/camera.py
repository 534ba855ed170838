"""LVSM-style camera tokens: ray maps cut into patches and linearly embedded, one token per
view-token (compressor) or per video-token (renderer).

For video autoencoders one latent frame covers several raw frames; their ray maps are stacked
per latent frame before patching (``temporal grouping``), so each camera token describes every
raw frame its latent token stands for. A causal first frame that has a latent frame to itself
(Wan) is zero-padded *after* it to the full group size, as the paper's code does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from scenetok.geometry.rays import ray_map
from scenetok.types import Cameras

RAY_MAP_KINDS = ("ray", "plucker")
RAY_CHANNELS = 6


def group_frames(frames: Tensor, groups: Sequence[Sequence[int]], group_size: int) -> Tensor:
    """Stack raw frames per latent frame: ``(B, V, ...)`` -> ``(B, F, group_size, ...)``.

    Args:
        frames: per-frame tensors (e.g. ray maps ``(B, V, 6, H, W)``).
        groups: for each latent frame, the raw-frame indices it covers (from
            :meth:`scenetok.interfaces.LatentSpec.frame_groups`).
        group_size: frames per latent frame; shorter groups are padded with zeros after their
            frames.
    """
    num_frames = frames.shape[1]
    for group in groups:
        if not 0 < len(group) <= group_size:
            raise ValueError(f"frame group {list(group)} does not fit a group size of {group_size}")
        if min(group) < 0 or max(group) >= num_frames:
            raise ValueError(f"frame group {list(group)} indexes outside {num_frames} frames")
    if all(len(g) == group_size for g in groups) and [i for g in groups for i in g] == list(range(num_frames)):
        return frames.unflatten(1, (len(groups), group_size))  # common case: no gather, no copy
    # Index `num_frames` points at an appended all-zero frame, used for padding.
    padded = torch.cat([frames, frames.new_zeros(frames[:, :1].shape)], dim=1)
    index = torch.tensor(
        [list(g) + [num_frames] * (group_size - len(g)) for g in groups], device=frames.device
    )
    return padded[:, index]


class CameraPatchEmbed(nn.Module):
    """Ray maps -> camera tokens: pixel-unshuffle by ``patch_size``, then a bias-free Linear.

    The Linear's input features are ordered ``(t, ph, pw, c)`` (raw frame within the group, patch
    row, patch column, ray channel), as in the paper's LVSM embedding.

    Args:
        width: output token width ``H``.
        patch_size: ray-map pixels per token along each axis.
        map_size: ``(height, width)`` of the ray maps in pixels (multiples of ``patch_size``).
        kind: ``"ray"`` ([direction, origin]) or ``"plucker"`` ([direction, origin x direction]).
        frames_per_token: raw frames stacked per latent frame (the target compressor's
            ``temporal_factor``; 1 for image latents).
        legacy_channel_order: reproduce the released Wan checkpoints' bug (feature order
            ``(ph, pw, t, c)`` instead of ``(t, ph, pw, c)``); only for loading those weights.
    """

    def __init__(self, width: int, patch_size: int, map_size: tuple[int, int], kind: str = "ray",
                 frames_per_token: int = 1, legacy_channel_order: bool = False) -> None:
        super().__init__()
        if kind not in RAY_MAP_KINDS:
            raise ValueError(f"camera kind must be one of {RAY_MAP_KINDS}, got {kind!r}")
        if map_size[0] % patch_size or map_size[1] % patch_size:
            raise ValueError(f"ray-map size {tuple(map_size)} is not divisible by the camera patch {patch_size}")
        self.patch_size = patch_size
        self.map_size = (int(map_size[0]), int(map_size[1]))
        self.kind = kind
        self.frames_per_token = frames_per_token
        self.legacy_channel_order = legacy_channel_order
        self.linear = nn.Linear(frames_per_token * RAY_CHANNELS * patch_size**2, width, bias=False)

    @property
    def grid_size(self) -> tuple[int, int]:
        """Camera tokens per latent frame along each axis."""
        return self.map_size[0] // self.patch_size, self.map_size[1] // self.patch_size

    def embed_ray_maps(self, ray_maps: Tensor) -> Tensor:
        """``(B, F, t, 6, H_r, W_r)`` grouped ray maps -> ``(B, F, (H_r/p)(W_r/p), H)`` tokens."""
        pattern = "b f t c (gh ph) (gw pw) -> b f (gh gw) ({})".format(
            "ph pw t c" if self.legacy_channel_order else "t ph pw c"
        )
        patches = rearrange(ray_maps, pattern, ph=self.patch_size, pw=self.patch_size)
        return self.linear(patches.to(self.linear.weight.dtype))

    def forward(self, cameras: Cameras, frame_groups: Sequence[Sequence[int]] | None = None) -> Tensor:
        """Camera tokens for raw-frame cameras.

        Args:
            cameras: batch shape ``(B, V)``.
            frame_groups: raw frames per latent frame (``F`` groups); ``None`` = one frame each.

        Returns:
            ``(B, F, (H_r/p)(W_r/p), H)``.
        """
        if cameras.extrinsics.ndim != 4:
            raise ValueError(f"cameras must have batch shape (B, V), got {tuple(cameras.shape)}")
        # Ray maps in at least float32: directions of nearby pixels differ by ~1e-3.
        dtype = torch.promote_types(cameras.extrinsics.dtype, torch.float32)
        rays = ray_map(cameras.to(dtype=dtype), *self.map_size, kind=self.kind)  # (B, V, 6, H_r, W_r)
        if frame_groups is None:
            if self.frames_per_token != 1:
                raise ValueError(f"{self.frames_per_token} frames per token need explicit frame groups")
            grouped = rays.unsqueeze(2)
        else:
            grouped = group_frames(rays, frame_groups, self.frames_per_token)
        return self.embed_ray_maps(grouped)


def camera_patch_for_grid(camera_resolution: int, camera_patch_size: int, grid_rows: int, grid_name: str) -> int:
    """The ray-map patch size that gives one camera token per token of a ``grid_rows``-row grid.

    ``camera_patch_size=0`` derives it (``camera_resolution / grid_rows``), so a recipe can swap
    image compressors with different spatial factors without re-tuning the camera embedding;
    an explicit value is checked against the grid.
    """
    if camera_patch_size == 0:
        if camera_resolution % grid_rows:
            raise ValueError(
                f"camera_resolution {camera_resolution} is not divisible by the {grid_rows} rows of the "
                f"{grid_name}; choose a camera_resolution that is a multiple of {grid_rows}"
            )
        return camera_resolution // grid_rows
    if camera_resolution // camera_patch_size != grid_rows:
        raise ValueError(
            f"camera grid does not align with the {grid_name}: camera_resolution {camera_resolution} / "
            f"camera_patch_size {camera_patch_size} = {camera_resolution // camera_patch_size} rows, but the "
            f"{grid_name} has {grid_rows} rows (set camera_patch_size: 0 to derive it)"
        )
    return camera_patch_size


def sincos_patch_positions(map_size: tuple[int, int], patch_size: int) -> tuple[Tensor, Tensor]:
    """Row and column positions ``(gh,)``, ``(gw,)`` of the camera tokens of a sin-cos patch embedding.

    They reproduce the table the paper's SceneGen camera embedding crops (diffusers ``PatchEmbed``
    with ``pos_embed_max_size`` given in *pixels*, ``M = max(map_size)``): position ``i`` of the
    ``M``-long table is ``i * (map_h / p) / M``, and the ``gh x gw`` token grid is its centre crop
    (for a 128-pixel map with patch 8: ``7 + k / 8``, not ``0 .. 15``). Only the crop is computed,
    so the ``M^2 x H`` table is never materialised.
    """
    rows, cols = map_size[0] // patch_size, map_size[1] // patch_size
    table = max(map_size)
    base = map_size[0] // patch_size
    step = torch.arange(table, dtype=torch.float32) / (table / base)
    top, left = (table - rows) // 2, (table - cols) // 2
    return step[top:top + rows], step[left:left + cols]


class SinCosRayPatchEmbed(nn.Module):
    """Ray maps -> camera tokens: a conv patch embedding (with bias) plus a fixed 2D sin-cos
    position table, the SceneGen camera embedding (diffusers ``PatchEmbed`` layout: ``proj`` is the
    conv; the first half of the channels encodes the column, the second the row, each ``[sin, cos]``).

    The table is a non-persistent buffer (the official checkpoints carry a 128^2-row copy that
    importers drop).

    Args:
        width: output token width ``H`` (divisible by 4).
        patch_size: ray-map pixels per token along each axis.
        map_size: ``(height, width)`` of the ray maps in pixels (multiples of ``patch_size``).
        kind: ``"ray"`` or ``"plucker"`` (the paper's SceneGen).
        ray_epsilon: direction normalisation, see :func:`scenetok.geometry.rays.ray_bundle`.
    """

    def __init__(self, width: int, patch_size: int, map_size: tuple[int, int], kind: str = "plucker",
                 ray_epsilon: float = 0.0) -> None:
        super().__init__()
        if kind not in RAY_MAP_KINDS:
            raise ValueError(f"camera kind must be one of {RAY_MAP_KINDS}, got {kind!r}")
        if map_size[0] % patch_size or map_size[1] % patch_size:
            raise ValueError(f"ray-map size {tuple(map_size)} is not divisible by the camera patch {patch_size}")
        if width % 4:
            raise ValueError(f"a 2D sin-cos table needs a width divisible by 4, got {width}")
        self.patch_size = patch_size
        self.map_size = (int(map_size[0]), int(map_size[1]))
        self.kind = kind
        self.ray_epsilon = ray_epsilon
        self.proj = nn.Conv2d(RAY_CHANNELS, width, kernel_size=patch_size, stride=patch_size)
        rows, cols = sincos_patch_positions(self.map_size, patch_size)
        grid = torch.stack(torch.meshgrid(cols, rows, indexing="xy"))  # [column, row] coordinates
        if grid.device.type == "meta":  # building on the meta device: no values to compute
            table = torch.empty(1, len(rows) * len(cols), width)
        else:
            from diffusers.models.embeddings import get_2d_sincos_pos_embed_from_grid  # lazy: ~1 s import

            table = get_2d_sincos_pos_embed_from_grid(width, grid, output_type="pt").float()[None]
        self.register_buffer("pos_embed", table, persistent=False)

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.map_size[0] // self.patch_size, self.map_size[1] // self.patch_size

    def forward(self, cameras: Cameras) -> Tensor:
        """Cameras with batch shape ``(B, V)`` -> tokens ``(B, V, gh * gw, H)`` (float32 or wider)."""
        if cameras.extrinsics.ndim != 4:
            raise ValueError(f"cameras must have batch shape (B, V), got {tuple(cameras.shape)}")
        dtype = torch.promote_types(cameras.extrinsics.dtype, torch.float32)
        rays = ray_map(cameras.to(dtype=dtype), *self.map_size, kind=self.kind, epsilon=self.ray_epsilon)
        tokens = self.proj(rays.flatten(0, 1).to(self.proj.weight.dtype)).flatten(2).transpose(1, 2)
        return (tokens + self.pos_embed.to(tokens.dtype)).unflatten(0, tuple(cameras.shape))
