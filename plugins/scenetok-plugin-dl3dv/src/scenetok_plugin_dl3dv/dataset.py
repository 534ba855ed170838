"""``dl3dv``: DL3DV-10K scenes (nerfstudio layout), with the DL3DV-140 benchmark split.

Layouts read (any mix; see core's ``transforms`` dataset for the discovery rules)::

    <root>/<hash>/transforms.json + images_4/frame_00001.png ...         one folder per scene
    <root>/<hash>/nerfstudio/transforms.json + nerfstudio/images_4/ ...  DL3DV-10K-Benchmark download
    <root>/<subset>/<hash>/...                                           DL3DV-ALL-960P: subset 1K ... 11K
    <root>/<train|test>/...                                              any of the above, split by folder

Scene keys are the 64-hex-digit scene hashes. ``transforms.json`` holds shared (or per-frame)
intrinsics ``fl_x, fl_y, cx, cy`` in pixels of the full-resolution frames ``w x h`` and OpenGL
camera-to-world ``transform_matrix`` per frame. Parsing is core's
:class:`~scenetok.data.transforms_format.TransformsSceneDataset`: poses become OpenCV
camera-to-world, intrinsics are normalised by the stored ``w, h`` and therefore hold for every
downscaled folder (``images_2``, ``images_4`` = 960x540, ``images_8`` = 480x270); the crop to
``image_size`` then updates them exactly. Frames are matched to image files by file name; a frame
whose image is missing is dropped (recorded), an undecodable image makes its sample skipped
(recorded).

Compatibility switches (off by default; for *loading the released upstream checkpoints only*):
the official DL3DV models were trained with normalised focal lengths multiplied once more by the
stored full resolution over 256 (``fx * 3840/256``, ``fy * 2160/256``; SceneTok
``docs/KNOWN_BUGS.md`` #1 and #2). ``scale_focal_by_256`` reproduces bug #1 (context and target:
the Video DC-AE DL3DV checkpoints); ``scale_context_focal_by_256`` reproduces bug #2 (context views
of a sample only: the Wan DL3DV checkpoints). New training must leave both off.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from torch import Tensor

from scenetok.data import SceneDatasetConfig
from scenetok.data.transforms_format import TransformsSceneDataset
from scenetok.types import Cameras
from scenetok_plugin_dl3dv.benchmark import read_hash_list, scene_hash

logger = logging.getLogger(__name__)

#: Image folder names: ``images`` (full resolution) or ``images_<n>`` (downscaled ``n`` times).
RESOLUTION_PATTERN = re.compile(r"images(_[1-9][0-9]*)?")
#: The factors of the upstream focal-length bug: the stored full resolution (3840 x 2160) over 256,
#: as hard-coded in SceneTok's latent dataset, which the released checkpoints were trained on.
UPSTREAM_FOCAL_SCALE: tuple[float, float] = (3840 / 256, 2160 / 256)


def scale_focal_like_upstream(intrinsics: Tensor) -> Tensor:
    """Normalised intrinsics ``(..., 3, 3)`` with ``fx, fy`` multiplied by
    :data:`UPSTREAM_FOCAL_SCALE` (the upstream bug; principal point unchanged). Returns a new tensor."""
    scale_x, scale_y = UPSTREAM_FOCAL_SCALE
    scaled = intrinsics.clone()
    scaled[..., 0, 0] = intrinsics[..., 0, 0] * scale_x
    scaled[..., 1, 1] = intrinsics[..., 1, 1] * scale_y
    return scaled


class DL3DVDataset(TransformsSceneDataset):
    """DL3DV-10K scenes; see the module docstring for layouts, conventions and switches.

    ``scenes()`` are the scene hashes of the configured split: with ``benchmark`` set, ``train``
    excludes the listed DL3DV-140 scenes and ``test``/``validation`` keeps only them (listed scenes
    that are not on disk are recorded as skipped). Samples follow core's view sampler (defaults:
    the paper's DL3DV setup, 16 context views over a 64-96-frame window and two contiguous
    17-frame target clips) or, with ``index``, an evaluation index.
    """

    @dataclass
    class Config(SceneDatasetConfig):
        """DL3DV config (shared fields: see ``SceneDatasetConfig``; defaults here follow the
        paper's DL3DV training setup).

        Attributes:
            root: the DL3DV folder (see the module docstring for the layouts).
            resolution: image folder to read: ``images_4`` (960x540, the paper's), ``images_8``
                (480x270), ``images_2`` or ``images``. Intrinsics are correct for every choice.
            benchmark: optional DL3DV-140 hash list (one hash per line, or an evaluation-index
                JSON); it defines the split: ``test``/``validation`` = the listed scenes,
                ``train`` = every other scene. ``None``: all scenes found (under
                ``<root>/<split>/`` when that folder exists).
            min_frames: scenes with fewer usable frames are skipped.
            scale_focal_by_256: compatibility switch for the released DL3DV Video DC-AE checkpoints
                (upstream bug #1): every returned ``fx, fy`` is multiplied by 3840/256 and
                2160/256. Never for new training.
            scale_context_focal_by_256: compatibility switch for the released DL3DV Wan checkpoints
                (upstream bug #2): the same factors on the *context* views of every sample
                (``load_selection``: training, ``scenetok eval`` and ``scenetok render``);
                ``load_views`` and ``frame_cameras`` stay correct. Never for new training.
            image_size: output ``[height, width]`` (256 x 256 in the paper).
            context_views: context frames per sample (16 in the paper).
            target_views: target frames per sample (34 = two Wan chunks of 17 frames).
            window_min: shortest context window in frames (the paper: 64 after warm-up).
            window_max: longest context window in frames (the paper: 96).
            target_clips: contiguous target clips per sample (the paper: 2).
        """

        root: str = "data/dl3dv"
        resolution: str = "images_4"
        benchmark: Optional[str] = None
        min_frames: int = 2
        scale_focal_by_256: bool = False
        scale_context_focal_by_256: bool = False
        # paper defaults for the fields shared by every dataset
        image_size: Any = field(default_factory=lambda: [256, 256])
        context_views: int = 16
        target_views: int = 34
        window_min: int = 64
        window_max: int = 96
        target_clips: int = 2

        def __post_init__(self) -> None:
            super().__post_init__()
            if not RESOLUTION_PATTERN.fullmatch(self.resolution):
                raise ValueError(
                    f"resolution must be an image folder name like 'images_4' or 'images_8', got {self.resolution!r}"
                )
            if self.min_frames < 1:
                raise ValueError(f"min_frames must be >= 1, got {self.min_frames}")
            if self.benchmark is not None and not str(self.benchmark).strip():
                raise ValueError("benchmark must be a path to a DL3DV-140 hash list or null, got ''")
            if self.scale_focal_by_256 and self.scale_context_focal_by_256:
                raise ValueError(
                    "scale_context_focal_by_256: set at most one of scale_focal_by_256 (bug #1, all views) "
                    "and scale_context_focal_by_256 (bug #2, context views only)"
                )

        # The names TransformsSceneDataset reads: DL3DV fixes the camera file and calls the image
        # folder `resolution`, so they are properties, not config fields.
        @property
        def image_folder(self) -> str:
            return self.resolution

        @property
        def transforms_file(self) -> str:
            return "transforms.json"

    data_help: ClassVar[str] = ("How to download DL3DV and lay it out: the sections 'Data licence and download' and "
                                "'Data layout' of the scenetok-plugin-dl3dv README (plugins/scenetok-plugin-dl3dv/"
                                "README.md, or `pip show -f scenetok-plugin-dl3dv`).")

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # The 480P release (images_8, 480x270): enough for 256 x 256 crops.
        "480p": {"resolution": "images_8"},
        # The 960P release (images_4, 960x540), the paper's choice; same as the defaults.
        "960p": {"resolution": "images_4"},
    }

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config if config is not None else self.Config())

    # ---- scene discovery: core's layouts, then the DL3DV-140 split ---------------------------------
    def discover_scenes(self, root: Path, split: str) -> dict[str, Path]:
        # Ordered by hash, so the scene order (and with it every sample) does not depend on how a
        # download is split into subset folders.
        found = dict(sorted(super().discover_scenes(root, split).items(), key=lambda item: scene_hash(item[0])))
        if self.config.benchmark is None:
            return found
        listed = read_hash_list(self.config.benchmark)
        wanted = set(listed)
        in_benchmark = split in ("test", "validation")
        kept = {key: path for key, path in found.items() if (scene_hash(key) in wanted) == in_benchmark}
        if in_benchmark:
            present = {scene_hash(key) for key in kept}
            absent = [value for value in listed if value not in present]
            for missing in absent:  # recorded one by one, warned about once below
                self.record_skip(missing, "listed in the DL3DV benchmark but not found on disk",
                                 str(self.config.benchmark), warn=False)
            if absent:
                logger.warning("dl3dv: %d of %d benchmark scenes are not under %s and are skipped (first: %s)",
                               len(absent), len(listed), root, ", ".join(absent[:3]))
            logger.info("dl3dv: %d of %d benchmark scenes found under %s", len(kept), len(listed), root)
        else:
            logger.info("dl3dv: %d training scenes (%d benchmark scenes excluded)", len(kept), len(found) - len(kept))
        if not kept:
            raise FileNotFoundError(
                f"dl3dv: no {split} scene under dataset.root={root} with benchmark list {self.config.benchmark} "
                f"({'none of the listed scenes is there' if in_benchmark else 'every scene found is listed'}). "
                + self.data_help
            )
        return kept

    # ---- the upstream focal-length compatibility switches ------------------------------------------
    def load_views(self, scene: str, indices: list[int]) -> dict[str, Tensor]:
        views = super().load_views(scene, indices)
        if self.config.scale_focal_by_256:
            views = {**views, "intrinsics": scale_focal_like_upstream(views["intrinsics"])}
        return views

    def frame_cameras(self, scene: str) -> Cameras | None:
        cameras = super().frame_cameras(scene)
        if cameras is not None and self.config.scale_focal_by_256:
            cameras = Cameras(cameras.extrinsics, scale_focal_like_upstream(cameras.intrinsics))
        return cameras

    def load_selection(self, scene: str, context: list[int], target: list[int]) -> dict[str, Any]:
        sample = super().load_selection(scene, context, target)
        if self.config.scale_context_focal_by_256:
            context = sample["context"]
            sample = {**sample, "context": {**context, "intrinsics": scale_focal_like_upstream(context["intrinsics"])}}
        return sample
