"""Write any dataset's scenes as nerfstudio ``transforms.json`` folders (``scenetok data export``),
optionally in another world frame.

Output, readable by the ``transforms`` dataset::

    <out>/<split>/<scene>/transforms.json      # per-frame pixel intrinsics, OpenGL camera-to-world
    <out>/<split>/<scene>/images/frame_0000.png ...

Scene keys and frame order are kept, so an evaluation index made on the source dataset selects the
same views of the export. ``scale`` and ``offset`` move every camera to ``scale * centre + offset``
(rotations unchanged): the same scene as another structure-from-motion run would report it, which
is how the world-scale sensitivity of a model (and ``model.scene_scale``) is measured. Images are
written as 8-bit PNGs at the dataset's image size.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from scenetok.geometry.conventions import denormalize_intrinsics, opencv_to_opengl
from scenetok.render_io import write_frames

log = logging.getLogger(__name__)


def check_move(scale: float, offset: Sequence[float]) -> None:
    """Refuse a world move that is not a finite positive ``scale`` and three finite ``offset`` values."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale}")
    if len(offset) != 3 or not all(math.isfinite(v) for v in offset):
        raise ValueError(f"offset must be three finite numbers, got {list(offset)}")


def moved_extrinsics(extrinsics: torch.Tensor, scale: float, offset: Sequence[float]) -> torch.Tensor:
    """Camera-to-world ``(..., 4, 4)`` in a world scaled by ``scale`` about the origin, then shifted
    by ``offset`` ``(3,)``: centres become ``scale * c + offset``, rotations are kept."""
    check_move(scale, offset)
    moved = extrinsics.clone()
    moved[..., :3, 3] = extrinsics[..., :3, 3] * scale + torch.tensor(offset, dtype=extrinsics.dtype)
    return moved


def export_transforms(dataset: Any, out: str | os.PathLike[str], split: str, *, scale: float = 1.0,
                      offset: Sequence[float] = (0.0, 0.0, 0.0), max_scenes: int | None = None,
                      progress: bool = True) -> list[Path]:
    """Export ``dataset``'s scenes (all frames) into ``out/split/<scene>/``; returns the
    ``transforms.json`` paths written. A scene that fails to load is skipped with a warning naming
    it and the reason; an existing scene folder is refused rather than mixed with."""
    from tqdm.auto import tqdm  # lazy: only this command shows a bar

    check_move(scale, offset)  # before anything is written
    scenes = dataset.scenes()[:max_scenes] if max_scenes is not None else dataset.scenes()
    root = Path(out) / split
    written = []
    for scene in tqdm(scenes, desc="export", unit="scene", disable=not progress):
        folder = root / scene
        if folder.exists():
            raise FileExistsError(f"{folder} already exists; export into an empty --out")
        try:
            views = dataset.load_views(scene, list(range(dataset.num_frames(scene))))
        except Exception as error:  # noqa: BLE001 - a corrupt scene is reported, the rest exported
            log.warning("skipped scene %s: %s", scene, error)
            continue
        height, width = (int(v) for v in views["images"].shape[-2:])
        images = write_frames(views["images"], folder / "images", prefix="frame")
        extrinsics = moved_extrinsics(views["extrinsics"].to(torch.float64), scale, offset)
        frames = []
        for image, c2w, k in zip(images, opencv_to_opengl(extrinsics), views["intrinsics"]):
            pixels = denormalize_intrinsics(k.to(torch.float64), width, height)
            frames.append({"file_path": f"images/{image.name}", "w": width, "h": height,
                           "fl_x": float(pixels[0, 0]), "fl_y": float(pixels[1, 1]),
                           "cx": float(pixels[0, 2]), "cy": float(pixels[1, 2]),
                           "transform_matrix": c2w.tolist()})
        path = folder / "transforms.json"
        path.write_text(json.dumps({"camera_model": "PINHOLE", "scale": scale, "offset": list(offset),
                                    "frames": frames}, indent=1))
        written.append(path)
    return written
