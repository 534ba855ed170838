"""Convert posed image captures into RE10K-style chunks (``scenetok data convert``), readable by
the ``re10k`` dataset.

Input: one folder per capture (scene), holding the images and a ``cameras.json`` (the name is
configurable)::

    {
      "convention": "opencv_c2w",          # or "opencv_w2c", "opengl_c2w" (nerfstudio/Blender)
      "intrinsics": {"fx": 500.0, "fy": 500.0, "cx": 320.0, "cy": 180.0},   # pixels; optional if
                                           # every frame has its own
      "frames": [
        {"file": "frame_0001.jpg",         # relative to the capture folder
         "matrix": [[...], [...], [...], [...]],   # 4x4 (or 3x4) in the given convention
         "intrinsics": {...},              # optional per-frame override, pixels
         "timestamp": 0}                   # optional int; default: the frame's position
      ]
    }

The scene key is the capture folder's name (or ``"key"`` in the JSON). Images are stored as their
original encoded bytes (JPEG or PNG); intrinsics are normalised by each image's own size.

Output: ``<out_dir>/<stage>/000000.torch ...`` (lists of scene dicts, ~``chunk_bytes`` of image
bytes each) and ``<out_dir>/<stage>/index.json`` (scene key -> chunk file), as pixelSplat writes.
Captures or frames that cannot be read are skipped with a warning naming the file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from scenetok.geometry.conventions import (
    cameras_to_re10k_rows,
    intrinsics_from_values,
    normalize_intrinsics,
    opengl_to_opencv,
)
from scenetok.types import Cameras

logger = logging.getLogger(__name__)

CONVENTIONS = ("opencv_c2w", "opencv_w2c", "opengl_c2w")
CAMERAS_FILE = "cameras.json"


def _c2w(matrix: Any, convention: str) -> torch.Tensor:
    pose = torch.tensor(matrix, dtype=torch.float64)
    if pose.shape == (3, 4):
        pose = torch.cat([pose, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
    if pose.shape != (4, 4):
        raise ValueError(f"matrix must be 4x4 or 3x4, got {tuple(pose.shape)}")
    if convention == "opencv_w2c":
        return torch.linalg.inv(pose)
    if convention == "opengl_c2w":
        return opengl_to_opencv(pose)
    return pose


def read_capture(folder: str | os.PathLike, cameras: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """One capture folder (images; camera JSON at ``cameras``, default ``<folder>/cameras.json``)
    -> a chunk scene dict, or ``None`` (with a warning) if unusable."""
    folder = Path(folder)
    path = Path(cameras) if cameras is not None else folder / CAMERAS_FILE
    try:
        meta = json.loads(path.read_text())
        convention = meta.get("convention", "opencv_c2w")
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        frames = meta["frames"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("convert: skipping capture %s: unreadable %s (%s)", folder, path, error)
        return None
    rows, images, timestamps = [], [], []
    for position, frame in enumerate(frames):
        image_path = folder / str(frame.get("file", ""))
        try:
            data = image_path.read_bytes()
            with Image.open(image_path) as image:
                width, height = image.size
                image.verify()  # catches truncated/corrupt files without a full decode
            values = {**meta.get("intrinsics", {}), **frame.get("intrinsics", {})}
            intrinsics = normalize_intrinsics(
                intrinsics_from_values(float(values["fx"]), float(values.get("fy", values["fx"])),
                                       float(values.get("cx", width / 2)), float(values.get("cy", height / 2))),
                width, height,
            )
            pose = _c2w(frame["matrix"], convention).float()
        except (OSError, ValueError, KeyError, TypeError, SyntaxError) as error:
            logger.warning("convert: capture %s: skipping frame %s (%s)", folder, image_path, error)
            continue
        rows.append(cameras_to_re10k_rows(Cameras(pose, intrinsics)))
        images.append(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        timestamps.append(int(frame.get("timestamp", position)))
    if not rows:
        logger.warning("convert: skipping capture %s: no usable frames", folder)
        return None
    return {
        "key": str(meta.get("key", folder.name)),
        "url": str(meta.get("url", "")),
        "timestamps": torch.tensor(timestamps, dtype=torch.int64),
        "cameras": torch.stack(rows),
        "images": images,
    }


def find_captures(root: str | os.PathLike, cameras_name: str = CAMERAS_FILE) -> list[Path]:
    """Capture folders: ``root`` itself if it holds ``cameras_name``, else its sub-folders that do."""
    root = Path(root)
    if (root / cameras_name).is_file():
        return [root]
    return sorted(p for p in root.iterdir() if (p / cameras_name).is_file())


def convert_captures(
    captures: str | os.PathLike | Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    cameras: str | os.PathLike = CAMERAS_FILE,
    stage: str = "train",
    chunk_bytes: int = 100_000_000,
) -> Path:
    """Write captures as pixelSplat chunks + ``index.json`` under ``out_dir/stage``.

    Args:
        captures: a capture folder, a folder of capture folders (see :func:`find_captures`) or
            an iterable of capture folders.
        out_dir: dataset root to write (``re10k`` dataset ``root``).
        cameras: the camera JSON's file name inside each capture folder; or the path of an
            existing JSON file kept outside a single capture folder ``captures`` (scene key: the
            JSON's ``"key"`` or the folder's name).
        stage: ``"train"`` or ``"test"``.
        chunk_bytes: start a new chunk once this many image bytes are in the current one.

    Returns:
        The stage folder.
    """
    if stage not in ("train", "test"):
        raise ValueError(f"stage must be 'train' or 'test', got {stage!r}")
    camera_file = Path(cameras)
    if len(camera_file.parts) > 1 or camera_file.is_absolute():  # a path, not a file name
        if not camera_file.is_file():
            raise FileNotFoundError(f"convert: camera file {camera_file} does not exist")
        if not isinstance(captures, (str, os.PathLike)):
            raise ValueError("with a camera file path, captures must be that capture's single image folder")
        jobs = [(Path(captures), camera_file)]
    else:
        if isinstance(captures, (str, os.PathLike)):
            folders = find_captures(captures, str(camera_file))
        else:
            folders = [Path(c) for c in captures]
        jobs = [(folder, folder / camera_file) for folder in folders]
    stage_dir = Path(out_dir) / stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    index: dict[str, str] = {}
    chunk: list[dict[str, Any]] = []
    size = 0

    def flush() -> None:
        nonlocal chunk, size
        if not chunk:
            return
        name = f"{len(set(index.values())):06d}.torch"
        torch.save(chunk, stage_dir / name)
        index.update({scene["key"]: name for scene in chunk})
        chunk, size = [], 0

    for folder, camera_path in jobs:
        scene = read_capture(folder, camera_path)
        if scene is None:
            continue
        if scene["key"] in index or any(s["key"] == scene["key"] for s in chunk):
            logger.warning("convert: skipping capture %s: duplicate scene key %s", folder, scene["key"])
            continue
        chunk.append(scene)
        size += sum(int(image.numel()) for image in scene["images"])
        if size >= chunk_bytes:
            flush()
    flush()
    (stage_dir / "index.json").write_text(json.dumps(index, indent=1))
    logger.info("convert: %d scenes -> %s", len(index), stage_dir)
    return stage_dir
