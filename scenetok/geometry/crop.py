"""The rescale-and-centre-crop shim: bring a frame of any size to a target ``H x W`` and keep its
normalised intrinsics exact.

Steps: resize so the image covers the target (``scale = max(H_out / H_in, W_out / W_in)``, the
short side relative to the target matches), then crop the centre. Resizing does not change
normalised intrinsics; the crop does. Unlike the pixelSplat/SceneTok shim, the principal point is
corrected as well, so off-centre principal points stay exact (for ``cx = cy = 0.5`` both agree).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor


@dataclass(frozen=True)
class CropPlan:
    """How a ``(height, width)`` frame maps to the target size.

    Attributes:
        resized: ``(H_s, W_s)`` size after the resize (each side >= the target side).
        offset: ``(top, left)`` pixel offset of the centre crop inside the resized image.
        output: ``(H_out, W_out)`` target size.
    """

    resized: tuple[int, int]
    offset: tuple[int, int]
    output: tuple[int, int]


def plan_crop(input_size: tuple[int, int], output_size: tuple[int, int]) -> CropPlan:
    """Plan the resize + centre crop from ``input_size`` ``(H, W)`` to ``output_size`` ``(H, W)``."""
    (in_h, in_w), (out_h, out_w) = input_size, output_size
    if min(in_h, in_w, out_h, out_w) <= 0:
        raise ValueError(f"sizes must be positive, got input {input_size} and output {output_size}")
    scale = max(out_h / in_h, out_w / in_w)
    # round, but never below the target (float error could give out_w - 1)
    resized = (max(out_h, round(in_h * scale)), max(out_w, round(in_w * scale)))
    offset = ((resized[0] - out_h) // 2, (resized[1] - out_w) // 2)
    return CropPlan(resized=resized, offset=offset, output=(out_h, out_w))


def crop_intrinsics(intrinsics: Tensor, plan: CropPlan) -> Tensor:
    """Normalised intrinsics ``(..., 3, 3)`` of the original frame -> those of the cropped frame.

    A normalised coordinate ``u`` in the resized image (width ``W_s``) lands at
    ``(u * W_s - left) / W_out`` in the crop, hence ``fx' = fx W_s / W_out`` and
    ``cx' = (cx W_s - left) / W_out`` (same for y).
    """
    (res_h, res_w), (top, left), (out_h, out_w) = plan.resized, plan.offset, plan.output
    result = intrinsics.clone()
    result[..., 0, 0] = intrinsics[..., 0, 0] * res_w / out_w
    result[..., 0, 1] = intrinsics[..., 0, 1] * res_w / out_w
    result[..., 0, 2] = (intrinsics[..., 0, 2] * res_w - left) / out_w
    result[..., 1, 1] = intrinsics[..., 1, 1] * res_h / out_h
    result[..., 1, 2] = (intrinsics[..., 1, 2] * res_h - top) / out_h
    return result


def rescale_and_crop_pil(image: Image.Image, plan: CropPlan) -> Tensor:
    """Resize (Lanczos, as the reference shim) and centre-crop a PIL image -> ``(3, H, W)`` float [0, 1]."""
    (res_h, res_w), (top, left), (out_h, out_w) = plan.resized, plan.offset, plan.output
    image = image.convert("RGB")
    if image.size != (res_w, res_h):
        image = image.resize((res_w, res_h), Image.Resampling.LANCZOS)
    image = image.crop((left, top, left + out_w, top + out_h))
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def rescale_and_crop(images: Tensor, intrinsics: Tensor, output_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """The shim on tensors: ``images`` ``(..., C, H, W)`` and normalised ``intrinsics`` ``(..., 3, 3)``
    -> images ``(..., C, H_out, W_out)`` (antialiased bilinear resize) and updated intrinsics."""
    plan = plan_crop(tuple(images.shape[-2:]), output_size)
    (res_h, res_w), (top, left), (out_h, out_w) = plan.resized, plan.offset, plan.output
    flat = images.reshape(-1, *images.shape[-3:])
    if (res_h, res_w) != tuple(images.shape[-2:]):
        flat = torch.nn.functional.interpolate(
            flat.float(), size=(res_h, res_w), mode="bilinear", antialias=True, align_corners=False
        ).clamp(0.0, 1.0)
    cropped = flat[..., top : top + out_h, left : left + out_w]
    return cropped.reshape(*images.shape[:-2], out_h, out_w), crop_intrinsics(intrinsics, plan)
