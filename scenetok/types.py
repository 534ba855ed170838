"""Typed containers for cameras, views and batches.

Conventions (one convention inside the core, every dataset converts at its boundary):

* ``extrinsics``: 4x4 **camera-to-world**, **OpenCV** axes (+x right, +y down, +z forward).
* ``intrinsics``: 3x3 pinhole matrix **normalised** by image size: ``fx/W, fy/H, cx/W, cy/H``.
  Normalised intrinsics do not change when an image is resized (only when it is cropped).
* images: float32 RGB in ``[0, 1]``.

Shapes use ``B`` batch, ``V`` views (frames), ``H, W`` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Cameras:
    """A batch of pinhole cameras.

    Attributes:
        extrinsics: ``(..., 4, 4)`` OpenCV camera-to-world matrices.
        intrinsics: ``(..., 3, 3)`` intrinsics normalised by image width/height.
    """

    extrinsics: Tensor
    intrinsics: Tensor

    def __post_init__(self) -> None:
        if self.extrinsics.shape[-2:] != (4, 4):
            raise ValueError(f"extrinsics must end in (4, 4), got {tuple(self.extrinsics.shape)}")
        if self.intrinsics.shape[-2:] != (3, 3):
            raise ValueError(f"intrinsics must end in (3, 3), got {tuple(self.intrinsics.shape)}")
        if self.extrinsics.shape[:-2] != self.intrinsics.shape[:-2]:
            raise ValueError(
                "extrinsics and intrinsics disagree on the batch shape: "
                f"{tuple(self.extrinsics.shape[:-2])} vs {tuple(self.intrinsics.shape[:-2])}"
            )

    @property
    def shape(self) -> torch.Size:
        """Batch shape, e.g. ``(B, V)``."""
        return self.extrinsics.shape[:-2]

    @property
    def centers(self) -> Tensor:
        """Camera centres in world space, ``(..., 3)``."""
        return self.extrinsics[..., :3, 3]

    def to(self, *args: Any, **kwargs: Any) -> Cameras:
        return Cameras(self.extrinsics.to(*args, **kwargs), self.intrinsics.to(*args, **kwargs))

    def __getitem__(self, index: Any) -> Cameras:
        """Index the batch dimensions, e.g. ``cams[:, 2:5]``."""
        if not isinstance(index, tuple):
            index = (index,)
        index = index + (slice(None),) * 2
        return Cameras(self.extrinsics[index], self.intrinsics[index])

    def flatten(self) -> Cameras:
        """``(B, V, ...)`` -> ``(B*V, ...)``."""
        return Cameras(self.extrinsics.reshape(-1, 4, 4), self.intrinsics.reshape(-1, 3, 3))

    @staticmethod
    def cat(cameras: list[Cameras], dim: int = 1) -> Cameras:
        return Cameras(
            torch.cat([c.extrinsics for c in cameras], dim=dim),
            torch.cat([c.intrinsics for c in cameras], dim=dim),
        )


@dataclass(frozen=True)
class Views:
    """A set of posed views of one scene per batch element.

    Attributes:
        images: ``(B, V, 3, H, W)`` RGB in ``[0, 1]``; ``None`` when only latents are present.
        cameras: cameras with batch shape ``(B, V)``.
        indices: ``(B, V)`` frame indices into the scene's frame list.
        latents: optional cached latents ``(B, F, C, h, w)`` of a frozen image compressor
            (already standardised); when present, the model skips encoding.
        depths: optional ``(B, V, 1, H, W)`` z-depth along the optical axis (procedural scenes only).
    """

    images: Tensor | None
    cameras: Cameras
    indices: Tensor
    latents: Tensor | None = None
    depths: Tensor | None = None

    @property
    def num_views(self) -> int:
        return int(self.cameras.shape[-1])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Views:
        """Move to ``device``; floating tensors are also cast to ``dtype`` (indices stay integer)."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype)

        return Views(
            images=move(self.images),
            cameras=self.cameras.to(device=device, dtype=dtype),
            indices=self.indices.to(device=device),
            latents=move(self.latents),
            depths=move(self.depths),
        )

    def replace(self, **changes: Any) -> Views:
        return replace(self, **changes)


@dataclass(frozen=True)
class SceneBatch:
    """What a model consumes: context views to encode, target views to render.

    Attributes:
        context: views the token compressor sees, ``V_c`` views.
        target: views the decoder must render, ``V_t`` views.
        scenes: scene keys, one per batch element.
    """

    context: Views
    target: Views
    scenes: list[str] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return int(self.context.cameras.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SceneBatch:
        return SceneBatch(self.context.to(device, dtype), self.target.to(device, dtype), self.scenes)


# --------------------------------------------------------------------------------------
# Samples (one scene, no batch dimension) and collation.
#
# Datasets return plain dicts so that torch's DataLoader workers can pickle them cheaply:
#   {"scene": str,
#    "context": {"images": (V, 3, H, W), "extrinsics": (V, 4, 4), "intrinsics": (V, 3, 3),
#                "indices": (V,), optional "latents": (F, C, h, w), optional "depths": (V, 1, H, W)},
#    "target":  {... same keys ...}}
# --------------------------------------------------------------------------------------

VIEW_KEYS = ("images", "extrinsics", "intrinsics", "indices", "latents", "depths")


def views_from_sample(sample: dict[str, Tensor], batched: bool = False) -> Views:
    """Build :class:`Views` from one sample's view dict (adds a batch dim unless ``batched``)."""
    unknown = set(sample) - set(VIEW_KEYS)
    if unknown:
        raise KeyError(f"unknown view keys {sorted(unknown)}; expected a subset of {VIEW_KEYS}")
    add = (lambda t: t) if batched else (lambda t: None if t is None else t.unsqueeze(0))
    return Views(
        images=add(sample.get("images")),
        cameras=Cameras(add(sample["extrinsics"]), add(sample["intrinsics"])),
        indices=add(sample["indices"]),
        latents=add(sample.get("latents")),
        depths=add(sample.get("depths")),
    )


def collate_scenes(samples: list[dict[str, Any]]) -> SceneBatch:
    """Stack per-scene sample dicts into a :class:`SceneBatch` (the DataLoader ``collate_fn``)."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")

    def stack(part: str) -> Views:
        out: dict[str, Tensor] = {}
        for key in VIEW_KEYS:
            values = [s[part].get(key) for s in samples]
            if all(v is None for v in values):
                continue
            if any(v is None for v in values):
                raise ValueError(f"{part}.{key} is present in some samples of the batch but not all")
            out[key] = torch.stack(values)
        return views_from_sample(out, batched=True)

    return SceneBatch(context=stack("context"), target=stack("target"), scenes=[s["scene"] for s in samples])
