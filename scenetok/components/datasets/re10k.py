"""``re10k``: RealEstate10K / ACID (and anything converted to them) in the pixelSplat chunk format.

Layout (see ``reference/FORMATS.md`` §1)::

    <root>/{train,test}/000000.torch ... index.json

A chunk is a ``torch.save``'d list of scene dicts ``{key, url, timestamps (N,), cameras (N, 18),
images: N uint8 tensors of encoded JPEG/PNG bytes}``; ``index.json`` maps scene key -> chunk
file. Chunks are read with ``torch.load(weights_only=True)`` (never executes pickled code), frames
are decoded with PIL only for the requested indices and brought to ``image_size`` by the
rescale-and-centre-crop shim (:mod:`scenetok.geometry.crop`), cameras converted by
:func:`scenetok.geometry.conventions.re10k_rows_to_cameras`.

A corrupt chunk or image, a scene missing from its chunk, a missing chunk file or a frame-count
mismatch is skipped with a warning naming the file and scene, and recorded in ``skipped`` (and
the ``report_path`` file); the rest loads.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from scenetok.data.dataset import BaseSceneDataset, SceneDatasetConfig
from scenetok.data.images import open_frame
from scenetok.geometry.conventions import re10k_rows_to_cameras
from scenetok.geometry.crop import crop_intrinsics, plan_crop, rescale_and_crop_pil
from scenetok.interfaces import CorruptSampleError
from scenetok.types import Cameras

logger = logging.getLogger(__name__)

#: Stage folder per split (RE10K has no validation set; validation reads the test stage).
STAGE_FOLDERS = {"train": "train", "validation": "test", "test": "test"}


def image_bytes(data: Any, where: str) -> bytes:
    """The encoded bytes of one chunk frame: a 1-D ``uint8`` tensor (or ``bytes``); anything else
    raises :class:`CorruptSampleError` naming ``where``."""
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, Tensor) and data.dtype == torch.uint8 and data.ndim == 1:
        return data.numpy().tobytes()
    described = f"{data.dtype} tensor of shape {tuple(data.shape)}" if isinstance(data, Tensor) else type(data).__name__
    raise CorruptSampleError(f"{where}: a frame must be encoded image bytes (1-D uint8 tensor), got {described}")


def decode_image(data: Tensor | bytes, where: str = "image") -> Image.Image:
    """Encoded image bytes (a 1-D uint8 tensor or ``bytes``) -> PIL RGB image; raises
    :class:`CorruptSampleError` when they are not a decodable image (see
    :func:`scenetok.data.images.open_frame` for the pixel limit)."""
    return open_frame(image_bytes(data, where), where)


def _weights_only_reason(error: BaseException) -> str:
    """torch's weights-only refusal without its advice to load with ``weights_only=False`` (never
    right for a dataset file): just the refused global."""
    text = str(error)
    match = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if match:
        return f"holds pickled code ({match.group(1)}), refused: chunks are read with weights_only=True"
    lines = [line.strip() for line in text.splitlines() if "WeightsUnpickler error" in line]
    return lines[0] if lines else text.strip().splitlines()[0] if text.strip() else type(error).__name__


def read_chunk_index(path: Path) -> dict[str, str]:
    """``index.json`` of a stage folder: ``{scene key: chunk file name}``. Raises ``ValueError``
    naming the file when it is not valid JSON of that shape (truncated, a list, wrong types)."""
    try:
        data = json.loads(path.read_text())
    except (ValueError, RecursionError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a valid chunk index (JSON): {str(error)[:200]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a chunk index maps scene key -> chunk file, got a {type(data).__name__}")
    bad = [key for key, value in data.items() if not isinstance(value, str) or not value]
    if bad:
        raise ValueError(f"{path}: chunk file names must be non-empty strings; scene {bad[0]!r} has "
                         f"{data[bad[0]]!r}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    return data


class RE10KDataset(BaseSceneDataset):
    """pixelSplat-format chunks; see the module docstring."""

    @dataclass
    class Config(SceneDatasetConfig):
        """RE10K config (shared fields: see ``SceneDatasetConfig``).

        Attributes:
            root: dataset root holding the ``train/`` and ``test/`` stage folders.
            min_frames: scenes with fewer frames are skipped (the paper's precompute uses 32).
            cache_chunks: decoded chunk files kept in memory per process (chunks are ~100 MB).
        """

        root: str = "data/re10k"
        min_frames: int = 2
        cache_chunks: int = 2

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.min_frames < 1:
                raise ValueError(f"min_frames must be >= 1, got {self.min_frames}")
            if self.cache_chunks < 1:
                raise ValueError(f"cache_chunks must be >= 1, got {self.cache_chunks}")

    def __init__(self, config: Config | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else self.Config()
        self.stage_dir = Path(self.config.root) / STAGE_FOLDERS[self.config.split]
        index_path = self.stage_dir / "index.json"
        if not index_path.is_file():
            raise FileNotFoundError(
                f"re10k: no {index_path}; expected <root>/{{train,test}}/index.json (pixelSplat chunk format)"
            )
        chunk_of = read_chunk_index(index_path)
        self._chunk_cache: OrderedDict[str, dict[str, dict[str, Any]] | None] = OrderedDict()
        self._chunk_of: dict[str, str] = {}
        self._chunk_errors: dict[str, str] = {}
        stage_root = os.path.realpath(self.stage_dir)
        for scene, chunk in chunk_of.items():
            resolved = os.path.realpath(self.stage_dir / chunk)
            if os.path.commonpath([stage_root, resolved]) != stage_root:
                # never read outside the dataset (an index naming ../../etc/hostname)
                self.record_skip(scene, f"chunk path {chunk!r} leaves the stage folder {self.stage_dir}",
                                 str(index_path))
            elif not (self.stage_dir / chunk).is_file():
                self.record_skip(scene, "chunk file is missing", str(self.stage_dir / chunk))
            else:
                self._chunk_of[scene] = chunk
        self._scenes = list(self._chunk_of)
        self._num_frames: dict[str, int] = {}

    # ---- chunk access --------------------------------------------------------------------------
    def _load_chunk(self, chunk: str) -> dict[str, dict[str, Any]] | None:
        """``{scene key: scene dict}`` of a chunk file, or ``None`` when it is unreadable (the reason
        goes to ``_chunk_errors``)."""
        if chunk in self._chunk_cache:
            self._chunk_cache.move_to_end(chunk)
            return self._chunk_cache[chunk]
        path = self.stage_dir / chunk
        try:
            content = torch.load(path, weights_only=True, map_location="cpu")
            if not isinstance(content, list):
                raise TypeError(f"a chunk holds a list of scene dicts, found {type(content).__name__}")
            scenes = {item["key"]: item for item in content if isinstance(item, dict) and isinstance(item.get("key"), str)}
        except pickle.UnpicklingError as error:
            self._chunk_errors[chunk] = _weights_only_reason(error)
            scenes = None
        except Exception as error:  # noqa: BLE001 - any unreadable chunk is skipped (by the caller)
            self._chunk_errors[chunk] = f"{type(error).__name__}: {error}"
            scenes = None
        self._chunk_cache[chunk] = scenes
        if len(self._chunk_cache) > self.config.cache_chunks:
            self._chunk_cache.popitem(last=False)
        return scenes

    def _scene_record(self, scene: str) -> dict[str, Any]:
        """The validated chunk dict of ``scene``; raises :class:`CorruptSampleError`."""
        if scene not in self._chunk_of:
            raise CorruptSampleError(f"scene {scene} is not in {self.stage_dir / 'index.json'}")
        chunk = self._chunk_of[scene]
        path = self.stage_dir / chunk
        scenes = self._load_chunk(chunk)
        if scenes is None:
            raise CorruptSampleError(f"corrupt chunk {path} of scene {scene}: {self._chunk_errors[chunk]}")
        record = scenes.get(scene)
        if record is None:
            raise CorruptSampleError(f"scene {scene} is listed in index.json but missing from {path}")
        cameras, images = record.get("cameras"), record.get("images")
        if not isinstance(cameras, Tensor) or cameras.ndim != 2 or cameras.shape[1] != 18:
            raise CorruptSampleError(f"scene {scene} in {path}: cameras must be an (N, 18) tensor")
        if not isinstance(images, list) or len(images) != cameras.shape[0]:
            count = len(images) if isinstance(images, list) else "no"
            raise CorruptSampleError(
                f"scene {scene} in {path}: frame-count mismatch ({cameras.shape[0]} cameras, {count} images)"
            )
        if cameras.shape[0] < self.config.min_frames:
            raise CorruptSampleError(
                f"scene {scene} in {path}: {cameras.shape[0]} frames < min_frames={self.config.min_frames}"
            )
        return record

    def _cameras(self, scene: str, rows: Tensor) -> Cameras:
        """Camera rows -> :class:`Cameras`; rows that do not convert (non-finite, or a singular
        world-to-camera matrix such as all zeros) raise :class:`CorruptSampleError`."""
        where = f"scene {scene} in {self.scene_file(scene)}"
        if not rows.is_floating_point() or not torch.isfinite(rows).all():
            raise CorruptSampleError(f"{where}: camera rows are not finite floats")
        try:
            return re10k_rows_to_cameras(rows)
        except RuntimeError as error:  # torch.linalg.LinAlgError: singular matrix
            raise CorruptSampleError(f"{where}: degenerate (non-invertible) camera: {str(error).splitlines()[0]}") from error

    # ---- SceneDataset API ------------------------------------------------------------------------
    def scenes(self) -> list[str]:
        return list(self._scenes)

    def scene_file(self, scene: str) -> str:
        chunk = self._chunk_of.get(scene)
        return str(self.stage_dir / chunk) if chunk else ""

    def num_frames(self, scene: str) -> int:
        if scene not in self._num_frames:
            self._num_frames[scene] = int(self._scene_record(scene)["cameras"].shape[0])
        return self._num_frames[scene]

    def frame_cameras(self, scene: str) -> Cameras | None:
        """All frames' cameras with intrinsics for the configured crop, as ``load_views`` returns
        them (the frame size comes from the first image's header); ``None`` if it is unreadable."""
        record = self._scene_record(scene)
        cameras = self._cameras(scene, record["cameras"])
        try:
            raw = image_bytes(record["images"][0], "first frame")
            with Image.open(io.BytesIO(raw)) as handle:  # reads the header only
                plan = plan_crop((handle.height, handle.width), (self.config.height, self.config.width))
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, IndexError, CorruptSampleError):
            return None
        intrinsics = torch.stack([crop_intrinsics(k, plan) for k in cameras.intrinsics])
        return Cameras(cameras.extrinsics, intrinsics)

    def load_views(self, scene: str, indices: list[int]) -> dict[str, Tensor]:
        record = self._scene_record(scene)
        path = self.stage_dir / self._chunk_of[scene]
        cameras = self._cameras(scene, record["cameras"][torch.as_tensor(indices, dtype=torch.long)])
        size = (self.config.height, self.config.width)
        images, intrinsics = [], []
        for position, frame in enumerate(indices):
            image = decode_image(record["images"][frame], f"scene {scene} in {path}: frame {frame}")
            plan = plan_crop((image.height, image.width), size)
            images.append(rescale_and_crop_pil(image, plan))
            intrinsics.append(crop_intrinsics(cameras.intrinsics[position], plan))
        return {
            "images": torch.stack(images),
            "extrinsics": cameras.extrinsics,
            "intrinsics": torch.stack(intrinsics),
            "indices": torch.as_tensor(indices, dtype=torch.long),
        }
