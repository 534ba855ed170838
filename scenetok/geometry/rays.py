"""Per-pixel camera rays, ray maps and Plücker maps.

Pixel ``(i, j)`` of an ``H x W`` grid sits at the normalised image coordinate
``((j + 0.5) / W, (i + 0.5) / H)``; with intrinsics normalised by image size this is resolution
independent, so a 128x128 ray map describes the same camera as the full-resolution image.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scenetok.types import Cameras


def pixel_grid(height: int, width: int, device: torch.device | None = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalised pixel centres ``(H, W, 2)`` as ``(u, v)`` in ``(0, 1)``."""
    v = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    u = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], dim=-1)


def _unit(vectors: Tensor, epsilon: float) -> Tensor:
    if epsilon:
        # The official code divides by ``norm + epsilon`` (length slightly below 1).
        return vectors / (vectors.norm(dim=-1, keepdim=True) + epsilon)
    return torch.nn.functional.normalize(vectors, dim=-1)


def ray_bundle(cameras: Cameras, height: int, width: int, epsilon: float = 0.0) -> tuple[Tensor, Tensor]:
    """World-space rays through every pixel centre.

    Args:
        cameras: batch shape ``(...)``.
        epsilon: ``0`` normalises directions exactly; ``> 0`` divides them by ``norm + epsilon``
            (in camera and in world space), the official code's convention (``1e-6``), for
            bit-level parity with its checkpoints.

    Returns:
        ``origins`` and unit ``directions``, each ``(..., H, W, 3)``.
    """
    extrinsics, intrinsics = cameras.extrinsics, cameras.intrinsics
    uv = pixel_grid(height, width, device=extrinsics.device, dtype=extrinsics.dtype)
    homogeneous = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)  # (H, W, 3)
    # K^-1 [u, v, 1] in camera space (OpenCV: +z forward), then rotate into the world.
    camera_dirs = torch.einsum("...ij,hwj->...hwi", torch.linalg.inv(intrinsics), homogeneous)
    camera_dirs = _unit(camera_dirs, epsilon)
    rotation = extrinsics[..., :3, :3]
    directions = _unit(torch.einsum("...ij,...hwj->...hwi", rotation, camera_dirs), epsilon)
    origins = extrinsics[..., None, None, :3, 3].expand_as(directions)
    return origins, directions


def ray_map(cameras: Cameras, height: int, width: int, kind: str = "ray", epsilon: float = 0.0) -> Tensor:
    """Channel-first ray maps ``(..., 6, H, W)``.

    ``kind="ray"``: ``[direction(3), origin(3)]`` (the paper's SceneTok camera input);
    ``kind="plucker"``: ``[direction(3), origin x direction(3)]`` (translation-invariant moment).
    ``epsilon``: see :func:`ray_bundle`.
    """
    origins, directions = ray_bundle(cameras, height, width, epsilon)
    if kind == "ray":
        second = origins
    elif kind == "plucker":
        second = torch.cross(origins, directions, dim=-1)
    else:
        raise ValueError(f"ray map kind must be 'ray' or 'plucker', got {kind!r}")
    return torch.cat([directions, second], dim=-1).movedim(-1, -3)
