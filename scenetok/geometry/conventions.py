"""Camera-convention converters: every dataset turns its storage format into the core convention
here (OpenCV camera-to-world 4x4 extrinsics, intrinsics normalised by image width/height; see
:mod:`scenetok.types`).

Formats handled:

* RealEstate10K / pixelSplat chunk rows: 18 floats ``[fx, fy, cx, cy, 0, 0, w2c 3x4 row-major]``
  with intrinsics already normalised (:func:`re10k_rows_to_cameras`, :func:`cameras_to_re10k_rows`).
* nerfstudio / Blender camera-to-world matrices in OpenGL axes (+y up, +z back):
  :func:`opengl_to_opencv` / :func:`opencv_to_opengl` (right-multiplication by ``diag(1,-1,-1,1)``).
* pixel-unit intrinsics: :func:`normalize_intrinsics` / :func:`denormalize_intrinsics`.

Plus :func:`make_relative` (poses relative to a reference view, as the model does before encoding),
:func:`normalize_scene_scale` (an optional fixed camera spread, for captures of arbitrary world scale),
:func:`look_at` and the point (un)projection helpers the tests use to verify conventions by
reprojection. No function here modifies its inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scenetok.types import Cameras

# Right-multiplying a c2w matrix by this flips the camera's y and z axes: OpenGL <-> OpenCV.
_FLIP_YZ = (1.0, -1.0, -1.0, 1.0)


def re10k_rows_to_cameras(rows: Tensor) -> Cameras:
    """RealEstate10K camera rows ``(..., 18)`` -> :class:`Cameras` (OpenCV c2w, normalised K).

    Row layout: ``[fx, fy, cx, cy]`` normalised by width/height, two unused values, then the
    world-to-camera ``[R | t]`` matrix in row-major order.
    """
    if rows.shape[-1] != 18:
        raise ValueError(f"RE10K camera rows must have 18 values, got shape {tuple(rows.shape)}")
    rows = rows.to(torch.float64)  # invert in double: RE10K translations can be large
    fx, fy, cx, cy = rows[..., 0], rows[..., 1], rows[..., 2], rows[..., 3]
    intrinsics = torch.zeros(*rows.shape[:-1], 3, 3, dtype=rows.dtype, device=rows.device)
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2] = cx
    intrinsics[..., 1, 2] = cy
    intrinsics[..., 2, 2] = 1.0
    w2c = torch.eye(4, dtype=rows.dtype, device=rows.device).expand(*rows.shape[:-1], 4, 4).clone()
    w2c[..., :3, :4] = rows[..., 6:].reshape(*rows.shape[:-1], 3, 4)
    c2w = torch.linalg.inv(w2c)
    return Cameras(c2w.float(), intrinsics.float())


def cameras_to_re10k_rows(cameras: Cameras) -> Tensor:
    """Inverse of :func:`re10k_rows_to_cameras`: ``(..., 18)`` float32 rows (zeros in slots 4-5)."""
    c2w = cameras.extrinsics.to(torch.float64)
    intrinsics = cameras.intrinsics
    w2c = torch.linalg.inv(c2w)
    batch = cameras.shape
    rows = torch.zeros(*batch, 18, dtype=torch.float64, device=c2w.device)
    rows[..., 0] = intrinsics[..., 0, 0]
    rows[..., 1] = intrinsics[..., 1, 1]
    rows[..., 2] = intrinsics[..., 0, 2]
    rows[..., 3] = intrinsics[..., 1, 2]
    rows[..., 6:] = w2c[..., :3, :4].reshape(*batch, 12)
    return rows.float()


def opengl_to_opencv(c2w: Tensor) -> Tensor:
    """OpenGL/Blender/nerfstudio camera-to-world ``(..., 4, 4)`` -> OpenCV camera-to-world.

    The world frame is unchanged; only the camera axes flip (y up -> down, z back -> forward).
    """
    flip = torch.tensor(_FLIP_YZ, dtype=c2w.dtype, device=c2w.device)
    return c2w * flip  # scales columns = right-multiplication by diag(flip)


def opencv_to_opengl(c2w: Tensor) -> Tensor:
    """OpenCV camera-to-world ``(..., 4, 4)`` -> OpenGL camera-to-world (the flip is its own inverse)."""
    return opengl_to_opencv(c2w)


def normalize_intrinsics(intrinsics: Tensor, width: float, height: float) -> Tensor:
    """Pixel-unit intrinsics ``(..., 3, 3)`` -> normalised (``fx/W, fy/H, cx/W, cy/H``)."""
    scale = torch.tensor([1.0 / width, 1.0 / height, 1.0], dtype=intrinsics.dtype, device=intrinsics.device)
    return intrinsics * scale[:, None]


def denormalize_intrinsics(intrinsics: Tensor, width: float, height: float) -> Tensor:
    """Normalised intrinsics ``(..., 3, 3)`` -> pixel units for a ``height x width`` image."""
    scale = torch.tensor([width, height, 1.0], dtype=intrinsics.dtype, device=intrinsics.device)
    return intrinsics * scale[:, None]


def intrinsics_from_values(fx: float, fy: float, cx: float, cy: float) -> Tensor:
    """A ``(3, 3)`` float32 pinhole matrix from its four values (any units)."""
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32)


def make_relative(cameras: Cameras, ref_index: int | Tensor) -> Cameras:
    """Express every pose relative to one reference view: ``E_rel = E_ref^-1 @ E``.

    Args:
        cameras: batch shape ``(..., V)``.
        ref_index: an ``int`` view index shared by the batch, or a ``(...)`` integer tensor with one
            reference index per batch element.

    Returns:
        Cameras of the same shape; the reference view becomes the identity. Intrinsics are kept.
    """
    extrinsics = cameras.extrinsics
    if isinstance(ref_index, int):
        reference = extrinsics[..., ref_index : ref_index + 1, :, :]
    else:
        gather = ref_index.to(torch.long)[..., None, None, None].expand(*extrinsics.shape[:-3], 1, 4, 4)
        reference = torch.gather(extrinsics, -3, gather)
    relative = torch.linalg.solve(reference, extrinsics)  # = inv(reference) @ extrinsics, stabler
    return Cameras(relative, cameras.intrinsics)


def camera_spread(cameras: Cameras) -> Tensor:
    """Mean distance of the camera centres ``(..., V)`` from their centroid, ``(...)``: a scene's
    scale as its cameras see it (half the baseline for two views, 0 for one view)."""
    centers = cameras.centers
    return (centers - centers.mean(dim=-2, keepdim=True)).norm(dim=-1).mean(dim=-1)


def normalize_scene_scale(cameras: Cameras, context: Cameras, spread: float, eps: float = 1e-6) -> Cameras:
    """Scale the translations of ``cameras`` ``(B, V)`` so that the ``context`` cameras
    ``(B, V_c)`` (usually a slice of them) would have :func:`camera_spread` equal to ``spread``.

    The world is scaled about the origin, so apply it after :func:`make_relative` (the reference
    camera stays the identity) and to the context and target cameras together: the targets keep
    their place relative to the context. Rotations and intrinsics are unchanged. A scene whose
    context cameras do not move (one view, or rotation only: spread below ``eps``) is left as it
    is, since it has no scale to measure.
    """
    if spread <= 0:
        raise ValueError(f"spread must be > 0, got {spread}")
    measured = camera_spread(context)
    factor = torch.where(measured > eps, spread / measured.clamp(min=eps), torch.ones_like(measured))
    extrinsics = cameras.extrinsics.clone()
    extrinsics[..., :3, 3] = extrinsics[..., :3, 3] * factor[..., None, None]
    return Cameras(extrinsics, cameras.intrinsics)


def look_at(eye: Tensor, target: Tensor, up: Tensor | tuple[float, float, float] = (0.0, 1.0, 0.0)) -> Tensor:
    """OpenCV camera-to-world matrices ``(..., 4, 4)`` for cameras at ``eye`` looking at ``target``.

    Args:
        eye, target: ``(..., 3)`` world points.
        up: the world's up direction ``(3,)`` or ``(..., 3)``; the camera's +y (image down) points
            away from it. Must not be parallel to the viewing direction.
    """
    up = torch.as_tensor(up, dtype=eye.dtype, device=eye.device).expand_as(eye)
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.nn.functional.normalize(torch.cross(forward, up, dim=-1), dim=-1)
    down = torch.cross(forward, right, dim=-1)
    c2w = torch.zeros(*eye.shape[:-1], 4, 4, dtype=eye.dtype, device=eye.device)
    c2w[..., :3, 0] = right
    c2w[..., :3, 1] = down
    c2w[..., :3, 2] = forward
    c2w[..., :3, 3] = eye
    c2w[..., 3, 3] = 1.0
    return c2w


def project_points(cameras: Cameras, points: Tensor) -> tuple[Tensor, Tensor]:
    """Project world points into normalised image coordinates.

    Args:
        cameras: batch shape ``(...)``.
        points: ``(..., P, 3)`` world points.

    Returns:
        ``uv`` ``(..., P, 2)`` in normalised image coordinates (pixel ``(i, j)`` centre is
        ``((j + .5) / W, (i + .5) / H)``) and ``depth`` ``(..., P)`` along the optical axis.
    """
    w2c = torch.linalg.inv(cameras.extrinsics)
    camera_points = torch.einsum("...ij,...pj->...pi", w2c[..., :3, :3], points) + w2c[..., None, :3, 3]
    depth = camera_points[..., 2]
    image = torch.einsum("...ij,...pj->...pi", cameras.intrinsics, camera_points)
    return image[..., :2] / image[..., 2:3], depth


def unproject_points(cameras: Cameras, uv: Tensor, depth: Tensor) -> Tensor:
    """Inverse of :func:`project_points`: normalised ``uv`` ``(..., P, 2)`` with z-depth
    ``(..., P)`` -> world points ``(..., P, 3)``."""
    homogeneous = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)
    camera_points = torch.einsum("...ij,...pj->...pi", torch.linalg.inv(cameras.intrinsics), homogeneous)
    camera_points = camera_points * depth[..., None]
    rotation, translation = cameras.extrinsics[..., :3, :3], cameras.extrinsics[..., None, :3, 3]
    return torch.einsum("...ij,...pj->...pi", rotation, camera_points) + translation
