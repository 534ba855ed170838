"""Camera paths for rendering: a smooth spline through key poses (e.g. the context views), an
orbit / look-at path around a point, and a scene's own frames.

All paths are OpenCV camera-to-world ``(N, 4, 4)`` matrices (see :mod:`scenetok.types`); the
helpers return :class:`~scenetok.types.Cameras` when intrinsics are involved.
"""

from __future__ import annotations

import math

import torch
from kornia.geometry.conversions import quaternion_to_rotation_matrix, rotation_matrix_to_quaternion
from torch import Tensor

from scenetok.geometry.conventions import look_at
from scenetok.types import Cameras


def slerp(q0: Tensor, q1: Tensor, weight: Tensor) -> Tensor:
    """Spherical linear interpolation of unit quaternions ``(..., 4)`` with ``weight`` ``(...)``
    in ``[0, 1]``; takes the short way round (``q`` and ``-q`` are the same rotation)."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    w = weight[..., None]
    # Nearly identical rotations: sin(theta) -> 0, fall back to (normalised) linear interpolation.
    small = sin_theta < 1e-6
    safe_sin = torch.where(small, torch.ones_like(sin_theta), sin_theta)
    a = torch.where(small, 1.0 - w, torch.sin((1.0 - w) * theta) / safe_sin)
    b = torch.where(small, w, torch.sin(w * theta) / safe_sin)
    return torch.nn.functional.normalize(a * q0 + b * q1, dim=-1)


def _catmull_rom(points: Tensor, segment: Tensor, local: Tensor) -> Tensor:
    """Uniform Catmull-Rom spline through ``points`` ``(K, 3)``: value at ``segment``
    (integer ``(N,)``) and local parameter ``local`` ``(N,)``; end tangents are one-sided."""
    count = points.shape[0]
    p0 = points[(segment - 1).clamp(min=0)]
    p1 = points[segment]
    p2 = points[(segment + 1).clamp(max=count - 1)]
    p3 = points[(segment + 2).clamp(max=count - 1)]
    t = local[:, None]
    t2, t3 = t * t, t * t * t
    return 0.5 * (
        2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t3
    )


def interpolate_poses(key_poses: Tensor, num_frames: int, *, smooth: bool = True) -> Tensor:
    """A path of ``num_frames`` poses through ``key_poses`` ``(K, 4, 4)`` (c2w, in order).

    Rotations are slerped between consecutive keys; translations follow a Catmull-Rom spline
    (``smooth=True``) or straight segments. The first and last frames equal the first and last keys.

    Returns:
        ``(num_frames, 4, 4)`` camera-to-world matrices.
    """
    if key_poses.ndim != 3 or key_poses.shape[-2:] != (4, 4):
        raise ValueError(f"key_poses must be (K, 4, 4), got {tuple(key_poses.shape)}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    count = key_poses.shape[0]
    poses = key_poses.to(torch.float64)
    if count == 1:
        return key_poses.expand(num_frames, 4, 4).clone()
    position = torch.linspace(0, count - 1, num_frames, dtype=torch.float64, device=key_poses.device)
    segment = position.floor().long().clamp(max=count - 2)
    local = position - segment

    quaternions = rotation_matrix_to_quaternion(poses[:, :3, :3].contiguous())
    rotations = quaternion_to_rotation_matrix(slerp(quaternions[segment], quaternions[segment + 1], local))
    translations = poses[:, :3, 3]
    if smooth:
        centres = _catmull_rom(translations, segment, local)
    else:
        centres = translations[segment] + (translations[segment + 1] - translations[segment]) * local[:, None]

    path = torch.eye(4, dtype=torch.float64, device=key_poses.device).repeat(num_frames, 1, 1)
    path[:, :3, :3] = rotations
    path[:, :3, 3] = centres
    return path.to(key_poses.dtype)


def spline_through_cameras(cameras: Cameras, num_frames: int, *, smooth: bool = True) -> Cameras:
    """A smooth path through ``cameras`` (batch shape ``(K,)``, in order, e.g. the context views).

    Intrinsics are linearly interpolated along the same parameter.
    """
    extrinsics = interpolate_poses(cameras.extrinsics, num_frames, smooth=smooth)
    count = cameras.shape[0]
    position = torch.linspace(0, count - 1, num_frames, device=cameras.intrinsics.device)
    lower = position.floor().long().clamp(max=max(count - 2, 0))
    upper = (lower + 1).clamp(max=count - 1)
    weight = (position - lower)[:, None, None]
    intrinsics = cameras.intrinsics[lower] * (1 - weight) + cameras.intrinsics[upper] * weight
    return Cameras(extrinsics, intrinsics)


def orbit(
    center: Tensor | tuple[float, float, float],
    radius: float,
    num_frames: int,
    *,
    height: float = 0.0,
    up: tuple[float, float, float] = (0.0, -1.0, 0.0),
    start_angle: float = 0.0,
    sweep: float = 2 * math.pi,
) -> Tensor:
    """Cameras on a circle around ``center``, all looking at it.

    Args:
        center: ``(3,)`` point to look at.
        radius: circle radius.
        num_frames: number of poses.
        height: offset of the circle's plane from ``center`` along ``up``.
        up: world up direction. The default ``(0, -1, 0)`` suits OpenCV-style worlds (RE10K, poses
            relative to an OpenCV camera), where +y points down.
        start_angle, sweep: angle (radians) of the first pose and the swept arc; a full circle
            does not repeat its first pose.

    Returns:
        ``(num_frames, 4, 4)`` OpenCV camera-to-world matrices.
    """
    center = torch.as_tensor(center, dtype=torch.float32)
    up_vector = torch.nn.functional.normalize(torch.as_tensor(up, dtype=torch.float32), dim=0)
    # Two axes spanning the orbit plane (orthogonal to up).
    helper = torch.tensor([1.0, 0.0, 0.0]) if abs(float(up_vector[0])) < 0.9 else torch.tensor([0.0, 0.0, 1.0])
    axis_a = torch.nn.functional.normalize(torch.cross(up_vector, helper, dim=0), dim=0)
    axis_b = torch.cross(up_vector, axis_a, dim=0)
    full_circle = abs(sweep - 2 * math.pi) < 1e-9
    angles = start_angle + sweep * torch.arange(num_frames, dtype=torch.float32) / (
        num_frames if full_circle else max(num_frames - 1, 1)
    )
    eyes = (
        center
        + radius * (torch.cos(angles)[:, None] * axis_a + torch.sin(angles)[:, None] * axis_b)
        + height * up_vector
    )
    return look_at(eyes, center.expand_as(eyes), up_vector)
