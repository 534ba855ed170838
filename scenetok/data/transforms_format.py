"""Reading nerfstudio-style scene folders (``transforms.json`` + images), e.g. DL3DV: the public
base class :class:`TransformsSceneDataset` that the core ``transforms`` dataset and the DL3DV plugin
both subclass.

Scene discovery (:meth:`TransformsSceneDataset.discover_scenes`): if ``root`` itself is a scene (holds
``transforms.json`` directly or under ``nerfstudio/``) it is the only scene; otherwise the split
folder ``root/<train|validation|val|test>`` is searched when it exists (else ``root``), and every
folder up to two levels down (``<scene>`` or ``<subset>/<scene>``) holding ``transforms.json`` or
``nerfstudio/transforms.json`` is a scene, keyed by its folder name.

``transforms.json`` (nerfstudio): shared or per-frame intrinsics ``fl_x, fl_y, cx, cy, w, h`` in
pixels of the full-resolution frames; ``frames[].file_path`` and ``frames[].transform_matrix``
(OpenGL camera-to-world, converted to OpenCV). Frames are ordered by file name. ``image_folder``
selects a downscaled copy (``images_4`` replaces the leading ``images`` of every ``file_path``);
intrinsics are normalised by the stored ``w, h``, so they hold for any downscale, and the crop
shim then adapts them to ``image_size``. Frames whose image file is missing are dropped with a
warning naming the file (frame indices count the remaining frames, like a sorted listing of the
image folder); an undecodable image makes its sample skipped.

A subclass (e.g. the DL3DV plugin) overrides :meth:`discover_scenes`, :meth:`image_path` or
:meth:`parse_scene`, and may replace ``Config`` with a subclass of
:class:`TransformsSceneDataset.Config`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from scenetok.data.dataset import BaseSceneDataset, SceneDatasetConfig
from scenetok.data.images import open_frame
from scenetok.geometry.conventions import intrinsics_from_values, normalize_intrinsics, opengl_to_opencv
from scenetok.geometry.crop import crop_intrinsics, plan_crop, rescale_and_crop_pil
from scenetok.interfaces import CorruptSampleError
from scenetok.types import Cameras

logger = logging.getLogger(__name__)

SPLIT_FOLDERS = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``frame_2`` before ``frame_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


@dataclass
class ParsedScene:
    """A scene's frames after parsing ``transforms.json``.

    Attributes:
        image_paths: image file per frame (existing files only), in frame order.
        extrinsics: ``(V, 4, 4)`` OpenCV camera-to-world.
        intrinsics: ``(V, 3, 3)`` normalised by the stored full-resolution ``w, h``.
    """

    image_paths: list[Path]
    extrinsics: Tensor
    intrinsics: Tensor


class TransformsSceneDataset(BaseSceneDataset):
    """nerfstudio ``transforms.json`` folders; see the module docstring."""

    @dataclass
    class Config(SceneDatasetConfig):
        """Transforms config (shared fields: see ``SceneDatasetConfig``).

        Attributes:
            root: a scene folder, or a folder of scene folders (optionally split into
                ``train/``, ``validation/`` or ``val/``, ``test/``).
            image_folder: image folder relative to the scene (``images``, ``images_4``,
                ``images_8``, ...); replaces the leading ``images`` component of each ``file_path``.
            transforms_file: name of the camera file in the scene (or its ``nerfstudio/``) folder.
            min_frames: scenes with fewer usable frames are skipped.
        """

        root: str = "data/scenes"
        image_folder: str = "images"
        transforms_file: str = "transforms.json"
        min_frames: int = 2

        def __post_init__(self) -> None:
            super().__post_init__()
            if not self.image_folder or Path(self.image_folder).is_absolute():
                raise ValueError(f"image_folder must be a relative folder name, got {self.image_folder!r}")
            if self.min_frames < 1:
                raise ValueError(f"min_frames must be >= 1, got {self.min_frames}")

    #: Where a user learns to get and lay out this dataset; appended to a missing-data error.
    data_help: ClassVar[str] = "The folder holds one sub-folder per scene with its transforms.json and images."

    def __init__(self, config: Config | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else self.Config()
        self._scene_dirs = self.discover_scenes(Path(self.config.root), self.config.split)
        self._parsed: dict[str, ParsedScene] = {}

    # ---- overridable pieces --------------------------------------------------------------------
    def transforms_path(self, folder: Path) -> Path | None:
        """The camera file of a candidate scene folder, or ``None``."""
        for candidate in (folder / self.config.transforms_file, folder / "nerfstudio" / self.config.transforms_file):
            if candidate.is_file():
                return candidate
        return None

    def discover_scenes(self, root: Path, split: str) -> dict[str, Path]:
        """``{scene key: path of its transforms.json}`` in a stable order."""
        if not root.is_dir():
            where = "" if root.is_absolute() else f" (relative to {Path.cwd()})"
            raise FileNotFoundError(f"dataset.root: {root} is not a folder{where}; set dataset.root=PATH to the "
                                    f"dataset's folder. {self.data_help}".rstrip())
        own = self.transforms_path(root)
        if own is not None:
            return {root.name: own}
        base = next((root / name for name in SPLIT_FOLDERS[split] if (root / name).is_dir()), root)
        found: dict[str, Path] = {}
        candidates = sorted(
            [p for p in base.iterdir() if p.is_dir()] + [p for p in base.glob("*/*") if p.is_dir()],
            key=lambda p: natural_key(str(p.relative_to(base))),
        )
        for folder in candidates:
            if folder.name == "nerfstudio":
                continue
            path = self.transforms_path(folder)
            if path is None:
                continue
            key = folder.name if folder.name not in found else str(folder.relative_to(base))
            found[key] = path
        if not found:
            raise FileNotFoundError(
                f"transforms: no scene folder with {self.config.transforms_file} under {base}"
            )
        return found

    def image_path(self, scene_dir: Path, file_path: str) -> Path:
        """Where frame ``file_path`` lives in the configured ``image_folder``."""
        parts = Path(file_path).parts
        if parts and parts[0].startswith("images"):
            parts = (self.config.image_folder, *parts[1:])
        return scene_dir.joinpath(*parts)

    def parse_scene(self, scene: str) -> ParsedScene:
        """Read and convert a scene's ``transforms.json`` (cached)."""
        if scene in self._parsed:
            return self._parsed[scene]
        path = self._scene_dirs[scene]
        try:
            meta = json.loads(path.read_text())
            frames = sorted(meta["frames"], key=lambda f: natural_key(f["file_path"]))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CorruptSampleError(f"scene {scene}: unreadable {path}: {error}") from error
        image_paths, extrinsics, intrinsics = [], [], []
        root = os.path.realpath(self.config.root)
        for frame in frames:
            image = self.image_path(path.parent, frame["file_path"])
            if os.path.commonpath([root, os.path.realpath(image)]) != root:
                # never read outside the dataset (a file_path of ../../etc/hostname)
                raise CorruptSampleError(f"scene {scene}: {path}: file_path {frame['file_path']!r} leaves the "
                                         f"dataset root {self.config.root}")
            if not image.is_file():
                self.record_skip(scene, "frame dropped: image file is missing", str(image))
                continue
            values = {**meta, **frame}  # per-frame intrinsics override the shared ones
            try:
                width, height = float(values["w"]), float(values["h"])
                fx = float(values["fl_x"])
                fy = float(values.get("fl_y", fx))
                cx, cy = float(values.get("cx", width / 2)), float(values.get("cy", height / 2))
                matrix = torch.tensor(frame["transform_matrix"], dtype=torch.float32)
            except (KeyError, TypeError, ValueError) as error:
                raise CorruptSampleError(f"scene {scene}: {path}: bad camera for {frame.get('file_path')}: {error}") from error
            bad = [f"{key}={value}" for key, value in (("w", width), ("h", height), ("fl_x", fx), ("fl_y", fy))
                   if not (math.isfinite(value) and value > 0)]
            if bad:  # zero sizes divide by zero when normalising; zero focal lengths break rendering
                raise CorruptSampleError(f"scene {scene}: {path}: {frame.get('file_path')}: "
                                         f"{', '.join(bad)} must be finite and > 0")
            if matrix.shape == (3, 4):
                matrix = torch.cat([matrix, torch.tensor([[0.0, 0.0, 0.0, 1.0]])])
            if matrix.shape != (4, 4):
                raise CorruptSampleError(f"scene {scene}: {path}: transform_matrix must be 4x4")
            image_paths.append(image)
            extrinsics.append(opengl_to_opencv(matrix))
            intrinsics.append(normalize_intrinsics(intrinsics_from_values(fx, fy, cx, cy), width, height))
        if len(image_paths) < self.config.min_frames:
            raise CorruptSampleError(
                f"scene {scene}: {len(image_paths)} usable frames < min_frames={self.config.min_frames} ({path})"
            )
        parsed = ParsedScene(image_paths, torch.stack(extrinsics), torch.stack(intrinsics))
        self._parsed[scene] = parsed
        return parsed

    # ---- SceneDataset API ------------------------------------------------------------------------
    def scenes(self) -> list[str]:
        return list(self._scene_dirs)

    def scene_file(self, scene: str) -> str:
        path = self._scene_dirs.get(scene)
        return str(path) if path is not None else ""

    def num_frames(self, scene: str) -> int:
        return len(self.parse_scene(scene).image_paths)

    def frame_cameras(self, scene: str) -> Cameras | None:
        """All frames' cameras with intrinsics for the configured crop, as ``load_views`` returns
        them. Reads one image header for the frame size (frames of a capture share one size);
        ``None`` if that image cannot be read."""
        parsed = self.parse_scene(scene)
        try:
            with Image.open(parsed.image_paths[0]) as handle:
                plan = plan_crop((handle.height, handle.width), (self.config.height, self.config.width))
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, IndexError):
            return None
        intrinsics = torch.stack([crop_intrinsics(k, plan) for k in parsed.intrinsics])
        return Cameras(parsed.extrinsics, intrinsics)

    def load_views(self, scene: str, indices: list[int]) -> dict[str, Tensor]:
        parsed = self.parse_scene(scene)
        size = (self.config.height, self.config.width)
        images, intrinsics = [], []
        for frame in indices:
            path = parsed.image_paths[frame]
            image = open_frame(path, f"scene {scene}: {path}")
            plan = plan_crop((image.height, image.width), size)
            images.append(rescale_and_crop_pil(image, plan))
            intrinsics.append(crop_intrinsics(parsed.intrinsics[frame], plan))
        index = torch.as_tensor(indices, dtype=torch.long)
        return {
            "images": torch.stack(images),
            "extrinsics": parsed.extrinsics[index],
            "intrinsics": torch.stack(intrinsics),
            "indices": index,
        }
