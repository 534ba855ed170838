"""The dataset base class every dataset (core or plugin) subclasses, and the config fields they
share.

:class:`BaseSceneDataset` turns the three scene-level methods a dataset implements (``scenes``,
``num_frames``, ``load_views``) into training samples (a seeded view sampler, see
:mod:`scenetok.data.view_sampling`) and evaluation samples (an evaluation index, see
:mod:`scenetok.data.index`), and skips corrupt samples with a warning and a report line.
Dataset configs subclass :class:`SceneDatasetConfig` so a recipe sets ``split``, ``image_size``,
view counts and the sampling knobs the same way for every dataset.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch
from torch import Tensor

from scenetok.data.index import read_evaluation_index
from scenetok.data.view_sampling import CONTEXT_SAMPLING, sample_training_views, stable_seed
from scenetok.interfaces import CorruptSampleError, SceneDataset

if TYPE_CHECKING:
    from scenetok.recipe import Recipe

SPLITS = ("train", "validation", "test")

#: Smallest ``|det|`` of a camera-to-world matrix taken as invertible (a rigid transform has 1).
MIN_EXTRINSICS_DET = 1e-6


def camera_problem(extrinsics: Tensor, intrinsics: Tensor, images: Tensor | None = None) -> str | None:
    """Why a sample's views cannot be used, or ``None``: the check every dataset's output passes
    (see :meth:`BaseSceneDataset.load_selection`), so a degenerate camera is skipped by scene name
    here instead of surfacing as a singular matrix or a NaN loss inside the model.

    Args:
        extrinsics: ``(V, 4, 4)`` camera-to-world; must be finite with ``|det| >=``
            :data:`MIN_EXTRINSICS_DET`.
        intrinsics: ``(V, 3, 3)`` normalised; must be finite with positive focal lengths.
        images: optional ``(V, C, H, W)``; must have ``H, W > 0`` and finite values.
    """
    if extrinsics.ndim != 3 or tuple(extrinsics.shape[-2:]) != (4, 4):
        return f"extrinsics must be (V, 4, 4), got {tuple(extrinsics.shape)}"
    if intrinsics.ndim != 3 or tuple(intrinsics.shape[-2:]) != (3, 3):
        return f"intrinsics must be (V, 3, 3), got {tuple(intrinsics.shape)}"
    if not torch.isfinite(extrinsics).all():
        return "non-finite (NaN/Inf) extrinsics"
    if not torch.isfinite(intrinsics).all():
        return "non-finite (NaN/Inf) intrinsics"
    det = torch.linalg.det(extrinsics.double()).abs()
    if (det < MIN_EXTRINSICS_DET).any():
        view = int(torch.argmin(det))
        return f"degenerate (non-invertible) extrinsics in view {view}: |det| = {float(det[view]):.3g}"
    focal = torch.stack([intrinsics[:, 0, 0], intrinsics[:, 1, 1]], dim=-1)
    if (focal <= 0).any():
        view = int(torch.nonzero((focal <= 0).any(-1))[0])
        return f"focal lengths must be > 0, view {view} has fx={float(focal[view, 0]):.3g}, fy={float(focal[view, 1]):.3g}"
    if images is not None:
        if images.ndim != 4 or images.shape[-1] <= 0 or images.shape[-2] <= 0:
            return f"images must be (V, C, H, W) with H, W > 0, got {tuple(images.shape)}"
        if images.is_floating_point() and not torch.isfinite(images).all():
            return "non-finite (NaN/Inf) pixels"
    return None


def parse_image_size(value: Any, field_name: str = "image_size") -> list[int]:
    """``int`` or ``[H, W]`` -> ``[H, W]`` (positive ints); raises ``ValueError`` naming the field."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if isinstance(value, (str, bytes)):  # iterating "abc" would blame the character 'a'
        raise ValueError(f"{field_name} must be an int or [height, width], got the string {value!r}")
    try:
        size = [int(v) for v in value]
    except (TypeError, ValueError) as error:
        raise ValueError(f"{field_name} must be an int or [height, width], got {value!r}") from error
    if len(size) != 2 or min(size) <= 0 or any(int(v) != v for v in value):
        raise ValueError(f"{field_name} must be an int or [height, width] of positive ints, got {value!r}")
    return size


@dataclass
class SceneDatasetConfig:
    """Fields shared by all datasets.

    Attributes:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        image_size: output ``[height, width]`` (an int means square); frames are rescaled and
            centre-cropped to it with intrinsics updated.
        context_views: context frames per sample.
        target_views: target frames per sample.
        seed: seed of the view sampler; a sample is a pure function of
            ``(seed, epoch, sample index)`` (see ``SceneDataset.set_epoch``).
        index: optional evaluation-index JSON path; when set, samples follow its context/target
            frames (one sample per entry) and the sampling knobs below are unused.
        window_min: shortest context window in frames (first to last context frame); 0: same as
            ``window_max``.
        window_max: longest context window in frames; 0: the whole scene.
        context_sampling: ``"farthest"`` (farthest-point over poses, endpoints included),
            ``"uniform"`` or ``"random"``.
        target_clips: the targets come as this many contiguous clips (must divide
            ``target_views``).
        target_margin: frames the target clips may extend beyond the context window on each side.
        report_path: optional JSON-lines file; every skipped scene/sample is appended to it as
            ``{"dataset", "scene", "file", "reason"}`` (safe with several DataLoader workers).
    """

    split: str = "train"
    image_size: Any = field(default_factory=lambda: [64, 64])
    context_views: int = 4
    target_views: int = 4
    seed: int = 0
    index: Optional[str] = None
    window_min: int = 0
    window_max: int = 0
    context_sampling: str = "farthest"
    target_clips: int = 1
    target_margin: int = 0
    report_path: Optional[str] = None

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        self.image_size = parse_image_size(self.image_size)
        for name in ("context_views", "target_views", "target_clips"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("window_min", "window_max", "target_margin"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.context_sampling not in CONTEXT_SAMPLING:
            raise ValueError(f"context_sampling must be one of {CONTEXT_SAMPLING}, got {self.context_sampling!r}")
        if self.target_views % self.target_clips:
            raise ValueError(
                f"target_clips={self.target_clips} must divide target_views={self.target_views}"
            )

    @property
    def height(self) -> int:
        return int(self.image_size[0])

    @property
    def width(self) -> int:
        return int(self.image_size[1])


class BaseSceneDataset(SceneDataset):
    """The shared machinery of every dataset; subclasses implement ``scenes``, ``num_frames`` and
    ``load_views`` (and optionally ``frame_cameras``) and set ``self.config`` to a
    :class:`SceneDatasetConfig` subclass.
    """

    #: How many following samples ``__getitem__`` tries when a sample is corrupt.
    max_skip_attempts: ClassVar[int] = 16

    def scene_file(self, scene: str) -> str:
        """The file a scene is read from (named in skip reports); ``""`` when there is none."""
        return ""

    @property
    def skipped(self) -> list[dict[str, str]]:
        """Everything this process skipped: ``{"dataset", "scene", "file", "reason"}`` records."""
        if "_skipped" not in self.__dict__:
            self._skipped: list[dict[str, str]] = []
        return self._skipped

    def record_skip(self, scene: str, reason: str, file: str | None = None, *, warn: bool = True) -> None:
        """Warn about an unusable scene/sample, remember it, and append it to ``config.report_path``
        (``warn=False``: the caller logs one summary line for many records instead)."""
        record = {"dataset": type(self).__name__, "scene": scene, "file": file or "", "reason": reason}
        if warn:
            logging.getLogger(type(self).__module__).warning(
                "skipping scene %s%s: %s", scene, f" ({file})" if file else "", reason
            )
        self.skipped.append(record)
        report_path = getattr(getattr(self, "config", None), "report_path", None)
        if report_path:
            # one line per record, appended: several DataLoader workers can share the file
            with open(report_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def set_epoch(self, epoch: int) -> None:
        """Change the training view selection (samples depend on ``(seed, epoch, index)``)."""
        self._epoch = int(epoch)

    def evaluation_entries(self) -> list[Any] | None:
        """Entries of ``config.index`` whose scene this dataset has (``None`` without an index);
        entries of missing scenes are recorded as skipped. A key ``<scene>_<n>`` that is not a scene
        falls back to ``<scene>`` (the DL3DV ``_1`` window suffix)."""
        if "_evaluation_entries" in self.__dict__:
            return self._evaluation_entries
        path = getattr(getattr(self, "config", None), "index", None)
        entries = None
        if path:
            available = set(self.scenes())
            entries = []
            missing: list[str] = []
            indexed = read_evaluation_index(path)
            for entry in indexed:
                scene = entry.scene
                if scene not in available:
                    stem = re.sub(r"_\d+$", "", scene)
                    if stem in available:
                        scene = stem
                    else:
                        # One summary line below instead of one warning per scene (an index of
                        # another dataset would print thousands).
                        self.record_skip(entry.scene, "in the evaluation index but not in the dataset", str(path),
                                         warn=False)
                        missing.append(entry.scene)
                        continue
                entries.append(dataclasses.replace(entry, scene=scene))
            if missing:
                split = getattr(self.config, "split", "?")  # type: ignore[attr-defined]
                logging.getLogger(type(self).__module__).warning(
                    "%d of the %d entries of %s name scenes that are not in this dataset's %r split "
                    "(%d scenes); they are skipped (first: %s)", len(missing), len(indexed), path, split,
                    len(available), ", ".join(missing[:3]))
        self._evaluation_entries = entries
        return entries

    def __len__(self) -> int:
        entries = self.evaluation_entries()
        return len(entries) if entries is not None else len(self.scenes())

    def select_views(self, item: int) -> tuple[str, list[int], list[int]]:
        """``(scene, context indices, target indices)`` of sample ``item``: from the evaluation
        index when one is configured, else from the training view sampler."""
        entries = self.evaluation_entries()
        if entries is not None:
            entry = entries[item]
            return entry.scene, list(entry.context), list(entry.target)
        config = self.config  # type: ignore[attr-defined]
        scene = self.scenes()[item]
        generator = torch.Generator().manual_seed(
            stable_seed("train", config.seed, getattr(self, "_epoch", 0), item)
        )
        cameras = self.frame_cameras(scene)
        context, target = sample_training_views(
            self.num_frames(scene),
            context_views=config.context_views,
            target_views=config.target_views,
            generator=generator,
            window_min=config.window_min,
            window_max=config.window_max,
            context_sampling=config.context_sampling,
            target_clips=config.target_clips,
            target_margin=config.target_margin,
            extrinsics=None if cameras is None else cameras.extrinsics,
        )
        return scene, context, target

    def load_sample(self, item: int) -> dict[str, Any]:
        """Sample ``item`` without skip handling (raises :class:`CorruptSampleError`)."""
        return self.load_selection(*self.select_views(item))

    def load_selection(self, scene: str, context: list[int], target: list[int]) -> dict[str, Any]:
        """The sample dict for explicit ``context`` / ``target`` frames of ``scene``: the one place
        training, evaluation and rendering load views through (override it to post-process
        samples). Raises :class:`CorruptSampleError`."""
        frames = sorted(set(context) | set(target))
        num_frames = self.num_frames(scene)
        if frames[-1] >= num_frames:
            raise CorruptSampleError(f"frame {frames[-1]} requested but scene {scene} has {num_frames} frames")
        views = self.load_views(scene, frames)  # decode every frame once, even if shared
        problem = camera_problem(views["extrinsics"], views["intrinsics"], views.get("images"))
        if problem is not None:
            raise CorruptSampleError(f"scene {scene}: {problem}")
        position = {frame: i for i, frame in enumerate(frames)}

        def pick(indices: list[int]) -> dict[str, Tensor]:
            rows = torch.tensor([position[i] for i in indices], dtype=torch.long)
            out = {key: value[rows] for key, value in views.items() if key != "indices"}
            out["indices"] = torch.tensor(indices, dtype=torch.long)
            return out

        return {"scene": scene, "context": pick(context), "target": pick(target)}

    def __getitem__(self, item: int) -> dict[str, Any]:
        """A sample dict (see :func:`scenetok.types.collate_scenes`). A sample that cannot be read
        for *any* reason (a corrupt file, a degenerate camera, a bug in a plugin's reader) is
        skipped (warning + :attr:`skipped` + report, naming file, scene and reason) and the next
        one is returned instead, so with an evaluation index a caller should trust the returned
        ``"scene"`` key, not the position. Raises :class:`CorruptSampleError` only when
        :attr:`max_skip_attempts` samples in a row are unusable."""
        length = len(self)
        if not 0 <= item < length:
            raise IndexError(f"sample {item} out of range for {length} samples")
        errors = []
        for attempt in range(min(self.max_skip_attempts, length)):
            current = (item + attempt) % length
            try:
                return self.load_sample(current)
            except Exception as error:  # noqa: BLE001 - one scene must never stop a run
                try:
                    scene = self.select_scene_key(current)
                    file = self.scene_file(scene)
                except Exception:  # noqa: BLE001 - the index itself may be what is broken
                    scene, file = f"#{current}", ""
                reason = str(error) if isinstance(error, CorruptSampleError) else \
                    f"{type(error).__name__}: {error}"
                self.record_skip(scene, reason, file)
                errors.append(f"{scene}: {reason}")
        raise CorruptSampleError(
            f"{len(errors)} consecutive samples from {item} are unusable: " + "; ".join(errors)
        )

    def select_scene_key(self, item: int) -> str:
        """The scene of sample ``item`` (cheap; no view selection)."""
        entries = self.evaluation_entries()
        return entries[item].scene if entries is not None else self.scenes()[item]




def build_dataset(recipe: Recipe, split: str | None = None, **changes: Any) -> BaseSceneDataset:
    """Instantiate ``recipe.dataset`` (optionally for another ``split`` or with config ``changes``)."""
    spec = recipe["dataset"]
    if split is not None:
        changes["split"] = split
    config = dataclasses.replace(spec.config, **changes) if changes else spec.config
    return spec.cls(config)
