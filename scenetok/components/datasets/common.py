"""Config fields every dataset shares, and small helpers for dataset implementations.

Dataset configs subclass :class:`SceneDatasetConfig` so a recipe can set ``split``,
``image_size``, ``context_views``, ``target_views``, ``seed``, ``index`` and the view-sampling
knobs the same way for every dataset; :class:`scenetok.interfaces.SceneDataset` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from scenetok.components.datasets.view_sampling import CONTEXT_SAMPLING

SPLITS = ("train", "validation", "test")


def parse_image_size(value: Any, field_name: str = "image_size") -> list[int]:
    """``int`` or ``[H, W]`` -> ``[H, W]`` (positive ints); raises ``ValueError`` naming the field."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    try:
        size = [int(v) for v in value]
    except TypeError as error:
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
