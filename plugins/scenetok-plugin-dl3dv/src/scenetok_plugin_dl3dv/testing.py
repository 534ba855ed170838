"""Tiny synthetic DL3DV-10K folders for tests (this plugin's and yours): real layout, few pixels.

:func:`write_synthetic_scene` writes one scene folder the way DL3DV ships it: ``transforms.json``
(nerfstudio: intrinsics in pixels of the full-resolution frames, OpenGL camera-to-world per frame,
``file_path`` = ``images/frame_%05d.png``) plus downscaled copies in ``images_4/``, ``images_8/``.
Cameras circle the origin and look at it, so the expected OpenCV poses are known exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from scenetok.geometry.conventions import look_at, opencv_to_opengl

#: Full-resolution frame size ``(height, width)`` written into ``transforms.json`` (the 16:9 aspect
#: of DL3DV's 3840 x 2160, scaled down so that ``images_8`` still has a few pixels).
FULL_SIZE: tuple[int, int] = (144, 256)
#: Full-resolution pinhole intrinsics ``(fl_x, fl_y, cx, cy)`` in pixels, principal point off centre.
FULL_INTRINSICS: tuple[float, float, float, float] = (200.0, 190.0, 130.0, 70.0)


def synthetic_hash(index: int) -> str:
    """A DL3DV-looking scene hash (64 hex digits), deterministic in ``index``."""
    return hashlib.sha256(f"synthetic-dl3dv-scene-{index}".encode()).hexdigest()


@dataclass(frozen=True)
class SyntheticScene:
    """What :func:`write_synthetic_scene` wrote.

    Attributes:
        folder: the scene folder (holding ``transforms.json``).
        extrinsics: ``(V, 4, 4)`` OpenCV camera-to-world of every frame listed in ``transforms.json``.
        intrinsics: ``(V, 3, 3)`` normalised intrinsics of every listed frame.
        missing: frame numbers (0-based positions) whose image files were not written.
        broken: frame numbers whose image files are not decodable.
    """

    folder: Path
    extrinsics: Tensor
    intrinsics: Tensor
    missing: tuple[int, ...]
    broken: tuple[int, ...]


def orbit_poses(num_frames: int, radius: float = 3.0, height: float = 0.5, sweep: float = math.pi / 2) -> Tensor:
    """``(V, 4, 4)`` OpenCV camera-to-world poses on an arc around the origin, looking at it."""
    angles = torch.linspace(0.0, sweep, num_frames, dtype=torch.float64)
    eyes = torch.stack([radius * torch.cos(angles), torch.full_like(angles, -height), radius * torch.sin(angles)], -1)
    # OpenCV world with -y up, as the orbit helpers in core use
    return look_at(eyes, torch.zeros_like(eyes), (0.0, -1.0, 0.0)).float()


def _frame_image(height: int, width: int, frame: int, seed: int) -> Image.Image:
    """A smooth colour pattern that changes with the frame (so neighbouring frames differ)."""
    rows = np.linspace(0.0, 1.0, height)[:, None]
    columns = np.linspace(0.0, 1.0, width)[None, :]
    phase = 0.3 * frame + seed
    red = 0.5 + 0.5 * np.sin(6.0 * columns + phase) * np.ones_like(rows)
    green = 0.5 + 0.5 * np.cos(5.0 * rows + phase) * np.ones_like(columns)
    blue = (rows + columns) / 2.0
    pixels = np.stack(np.broadcast_arrays(red, green, blue), -1)
    return Image.fromarray((pixels * 255).round().astype(np.uint8), "RGB")


def write_synthetic_scene(
    folder: str | Path,
    *,
    num_frames: int = 8,
    folders: Iterable[str] = ("images_4", "images_8"),
    per_frame_intrinsics: bool = False,
    missing: Sequence[int] = (),
    broken: Sequence[int] = (),
    seed: int = 0,
) -> SyntheticScene:
    """Write a DL3DV-style scene into ``folder`` (created; files overwritten).

    Args:
        folder: the scene folder, e.g. ``<root>/<hash>`` or ``<root>/<hash>/nerfstudio``.
        num_frames: frames listed in ``transforms.json``.
        folders: downscaled image folders to write, ``images_<n>`` (``n`` = downscale factor of
            :data:`FULL_SIZE`; ``images`` = full size).
        per_frame_intrinsics: write the intrinsics per frame (frame ``i`` zoomed by ``1 + 0.05 i``)
            instead of once at the top level.
        missing: frames whose image files are not written (in any folder).
        broken: frames whose image files hold bytes that are not an image.
        seed: changes the image content.
    """
    folder = Path(folder)
    height, width = FULL_SIZE
    fx, fy, cx, cy = FULL_INTRINSICS
    poses_opencv = orbit_poses(num_frames)
    frames, intrinsics = [], []
    for frame in range(num_frames):
        zoom = 1.0 + 0.05 * frame if per_frame_intrinsics else 1.0
        entry: dict[str, object] = {
            "file_path": f"images/frame_{frame + 1:05d}.png",
            "transform_matrix": opencv_to_opengl(poses_opencv[frame]).tolist(),
        }
        if per_frame_intrinsics:
            entry.update({"fl_x": fx * zoom, "fl_y": fy * zoom, "cx": cx, "cy": cy, "w": width, "h": height})
        frames.append(entry)
        intrinsics.append(torch.tensor([[fx * zoom / width, 0.0, cx / width],
                                        [0.0, fy * zoom / height, cy / height],
                                        [0.0, 0.0, 1.0]]))
    meta: dict[str, object] = {"camera_model": "OPENCV", "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0, "frames": frames}
    if not per_frame_intrinsics:
        meta.update({"fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": width, "h": height})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "transforms.json").write_text(json.dumps(meta, indent=1))
    for name in folders:
        factor = int(name.split("_")[1]) if "_" in name else 1
        image_dir = folder / name
        image_dir.mkdir(exist_ok=True)
        for frame in range(num_frames):
            path = image_dir / f"frame_{frame + 1:05d}.png"
            if frame in missing:
                path.unlink(missing_ok=True)
            elif frame in broken:
                path.write_bytes(b"this is not a PNG file")
            else:
                _frame_image(height // factor, width // factor, frame, seed).save(path)
    return SyntheticScene(folder, poses_opencv, torch.stack(intrinsics), tuple(missing), tuple(broken))


def write_synthetic_dl3dv(
    root: str | Path,
    hashes: Sequence[str],
    *,
    layout: str = "flat",
    num_frames: int = 8,
    **scene_options: object,
) -> dict[str, SyntheticScene]:
    """Write several scenes under ``root``; returns ``{hash: SyntheticScene}``.

    Args:
        layout: ``"flat"`` (``<root>/<hash>/``), ``"nerfstudio"`` (``<root>/<hash>/nerfstudio/``,
            the DL3DV-10K-Benchmark download) or ``"subsets"`` (``<root>/1K/<hash>/``,
            ``<root>/2K/<hash>/``, ... alternating: the DL3DV-ALL-960P download).
        scene_options: passed to :func:`write_synthetic_scene` for every scene.
    """
    root = Path(root)
    scenes = {}
    for position, value in enumerate(hashes):
        if layout == "flat":
            folder = root / value
        elif layout == "nerfstudio":
            folder = root / value / "nerfstudio"
        elif layout == "subsets":
            folder = root / f"{position % 2 + 1}K" / value
        else:
            raise ValueError(f"layout must be 'flat', 'nerfstudio' or 'subsets', got {layout!r}")
        scenes[value] = write_synthetic_scene(
            folder, num_frames=num_frames, seed=position, **scene_options  # type: ignore[arg-type]
        )
    return scenes
