"""Trivial novel-view baselines that put the model's numbers in context.

* ``copy_nearest``: each target view is predicted by the context image whose camera is closest
  (see :func:`camera_distance`). It is what a model that ignores the target pose can achieve
  at best when the target is near a context view; strong on dense, slow trajectories.
* ``mean_context``: every target view is predicted by the per-pixel mean of the context images,
  the best constant prediction under MSE if the target were a random context view.

Both take context views and target cameras and return ``(B, V_t, 3, H, W)`` in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scenetok.types import Cameras, Views


def rotation_angle(rotation_a: Tensor, rotation_b: Tensor) -> Tensor:
    """Geodesic angle in radians between rotations ``(..., 3, 3)`` (broadcasting), in ``[0, pi]``."""
    relative = rotation_a.transpose(-1, -2) @ rotation_b
    trace = relative.diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.arccos(((trace - 1.0) / 2.0).clamp(-1.0, 1.0))


def camera_distance(context: Cameras, target: Cameras, *, rotation_weight: float = 1.0) -> Tensor:
    """Pose distance between every target and every context camera, ``(B, V_t, V_c)``.

    ``d = |c_t - c_c| / s + rotation_weight * angle(R_t, R_c)``, where ``c`` are camera centres,
    ``angle`` is the geodesic rotation angle in radians, and ``s`` is the mean distance of the
    context centres from their centroid (1 if they coincide). Dividing by ``s`` makes the
    distance independent of the arbitrary scale of each scene's poses (RE10K is up to scale), so
    one ``rotation_weight`` works for every scene: with the default 1, turning by 1 rad (57 deg)
    costs as much as moving by the typical spread of the context cameras.

    Args:
        context: cameras with batch shape ``(B, V_c)``.
        target: cameras with batch shape ``(B, V_t)``.
    """
    if context.extrinsics.dim() != 4 or target.extrinsics.dim() != 4:
        raise ValueError(
            f"expected cameras with batch shape (B, V), got {tuple(context.shape)} and {tuple(target.shape)}"
        )
    context_centres = context.centers.double()  # (B, V_c, 3)
    target_centres = target.centers.double()  # (B, V_t, 3)
    spread = (context_centres - context_centres.mean(dim=1, keepdim=True)).norm(dim=-1).mean(dim=1)  # (B,)
    scale = torch.where(spread > 1e-8, spread, torch.ones_like(spread))
    translation = torch.cdist(target_centres, context_centres) / scale[:, None, None]
    angle = rotation_angle(
        target.extrinsics[:, :, None, :3, :3].double(), context.extrinsics[:, None, :, :3, :3].double()
    )
    return translation + rotation_weight * angle


def nearest_context_indices(context: Cameras, target: Cameras, *, rotation_weight: float = 1.0) -> Tensor:
    """Index of the nearest context camera for each target camera, ``(B, V_t)`` int64."""
    return camera_distance(context, target, rotation_weight=rotation_weight).argmin(dim=-1)


def copy_nearest_context(context: Views, target_cameras: Cameras, *, rotation_weight: float = 1.0) -> Tensor:
    """Predict each target view as the nearest context image, ``(B, V_t, 3, H, W)``."""
    images = _context_images(context)
    index = nearest_context_indices(context.cameras, target_cameras, rotation_weight=rotation_weight)
    batch = torch.arange(images.shape[0], device=images.device)[:, None]
    return images[batch, index.to(images.device)].clone()


def mean_context(context: Views, target_cameras: Cameras) -> Tensor:
    """Predict every target view as the mean context image, ``(B, V_t, 3, H, W)``."""
    images = _context_images(context)
    num_targets = int(target_cameras.shape[1])
    mean = images.mean(dim=1, keepdim=True)
    return mean.expand(-1, num_targets, -1, -1, -1).clone()


def _context_images(context: Views) -> Tensor:
    if context.images is None:
        raise ValueError("baselines need context images (Views.images is None)")
    if context.images.dim() != 5:
        raise ValueError(f"context images must be (B, V_c, 3, H, W), got {tuple(context.images.shape)}")
    return context.images


#: Baselines by the name used in reports.
BASELINES: dict[str, Callable[[Views, Cameras], Tensor]] = {
    "copy_nearest": copy_nearest_context,
    "mean_context": mean_context,
}
