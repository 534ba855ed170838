"""Contract tests every dataset (core or plugin) must pass.

Subclass :class:`SceneDatasetContract` in a test module and implement ``make_dataset``::

    class TestMyDataset(SceneDatasetContract):
        def make_dataset(self, tmp_path, **overrides):
            write_tiny_files(tmp_path)
            return MyDataset(MyDataset.Config(root=str(tmp_path), image_size=[16, 24], **overrides))

``make_dataset`` must accept config overrides as keyword arguments (the suite sets ``seed``,
``index``, ``context_views`` and ``target_views``) and should build something tiny (a few scenes of
a few frames, 16-32 px). Datasets that return ``depths`` are also checked by reprojection: a pixel
lifted with its depth in one view and projected into another lands on a pixel of the same depth.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from scenetok.data.index import read_evaluation_index, write_evaluation_index
from scenetok.geometry.conventions import project_points, unproject_points
from scenetok.geometry.rays import pixel_grid
from scenetok.interfaces import SceneDataset
from scenetok.types import Cameras, collate_scenes


class SceneDatasetContract:
    """Shape, range, determinism, config and camera-convention checks for a ``SceneDataset``."""

    #: The view counts the suite asks for (small, so tiny test data suffices).
    context_views: int = 2
    target_views: int = 2
    #: Whether samples carry ``depths``; then cameras are checked by depth reprojection (datasets
    #: without depth check their camera conversion in their own tests).
    provides_depth: bool = False

    def make_dataset(self, tmp_path: Path, **overrides: Any) -> SceneDataset:  # pragma: no cover
        raise NotImplementedError("subclass SceneDatasetContract and implement make_dataset(tmp_path, **overrides)")

    def _dataset(self, tmp_path: Path, **overrides: Any) -> SceneDataset:
        overrides = {"context_views": self.context_views, "target_views": self.target_views, **overrides}
        return self.make_dataset(tmp_path, **overrides)

    def test_sample_layout(self, tmp_path: Path) -> None:
        dataset = self._dataset(tmp_path)
        assert len(dataset) > 0
        sample = dataset[0]
        assert isinstance(sample["scene"], str) and sample["scene"] in dataset.scenes()
        height, width = dataset.config.image_size  # type: ignore[attr-defined]
        for part, count in (("context", self.context_views), ("target", self.target_views)):
            views = sample[part]
            assert views["images"].shape == (count, 3, height, width), part
            assert views["images"].dtype == torch.float32
            assert float(views["images"].min()) >= 0.0 and float(views["images"].max()) <= 1.0
            assert views["extrinsics"].shape == (count, 4, 4) and views["extrinsics"].dtype == torch.float32
            assert views["intrinsics"].shape == (count, 3, 3) and views["intrinsics"].dtype == torch.float32
            assert views["indices"].shape == (count,) and views["indices"].dtype == torch.long
            num_frames = dataset.num_frames(sample["scene"])
            assert int(views["indices"].min()) >= 0 and int(views["indices"].max()) < num_frames
            rotation = views["extrinsics"][:, :3, :3].double()
            identity = torch.eye(3, dtype=torch.float64).expand_as(rotation)
            assert torch.allclose(rotation.transpose(-1, -2) @ rotation, identity, atol=1e-4), "rotation not orthonormal"
            assert torch.allclose(torch.linalg.det(rotation), torch.ones(count, dtype=torch.float64), atol=1e-4)
            assert torch.allclose(views["extrinsics"][:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]))
            fx, fy = views["intrinsics"][:, 0, 0], views["intrinsics"][:, 1, 1]
            # normalised intrinsics: focal lengths O(1) image sizes (not pixels), positive
            assert bool((fx > 0.05).all() and (fx < 20).all() and (fy > 0.05).all() and (fy < 20).all())
            if "depths" in views:
                assert views["depths"].shape == (count, 1, height, width)
                assert bool((views["depths"] > 0).all())
        assert len(set(sample["context"]["indices"].tolist())) == self.context_views, "context repeats a frame"

    def test_collates(self, tmp_path: Path) -> None:
        dataset = self._dataset(tmp_path)
        samples = [dataset[i % len(dataset)] for i in range(2)]
        batch = collate_scenes(samples)
        assert batch.batch_size == 2
        assert batch.context.images is not None and batch.context.images.shape[:2] == (2, self.context_views)

    def test_deterministic_under_seed(self, tmp_path: Path) -> None:
        first = self._dataset(tmp_path, seed=3)[0]
        again = self._dataset(tmp_path, seed=3)[0]
        for part in ("context", "target"):
            assert first[part].keys() == again[part].keys()
            for key in first[part]:
                assert torch.equal(first[part][key], again[part][key]), f"{part}.{key} differs for one seed"

    def test_config_round_trips_through_omegaconf(self, tmp_path: Path) -> None:
        dataset = self._dataset(tmp_path)
        config = dataset.config  # type: ignore[attr-defined]
        structured = OmegaConf.structured(config)
        rebuilt = OmegaConf.to_object(structured)
        assert dataclasses.asdict(rebuilt) == dataclasses.asdict(config)
        assert dataclasses.asdict(type(config)(**dataclasses.asdict(config))) == dataclasses.asdict(config)

    def test_evaluation_index_round_trip(self, tmp_path: Path) -> None:
        dataset = self._dataset(tmp_path)
        path = write_evaluation_index(dataset, tmp_path / "eval_index.json", self.context_views, self.target_views, seed=0)
        again = write_evaluation_index(dataset, tmp_path / "eval_index_again.json", self.context_views,
                                       self.target_views, seed=0)
        assert path.read_text() == again.read_text(), "evaluation index is not deterministic"
        entries = read_evaluation_index(path)
        assert entries, "no scene made it into the evaluation index"
        evaluation = self._dataset(tmp_path, index=str(path))
        assert len(evaluation) == len(entries)
        for item, entry in enumerate(entries[:2]):
            sample = evaluation[item]
            assert sample["scene"] == entry.scene
            assert sample["context"]["indices"].tolist() == list(entry.context)
            assert sample["target"]["indices"].tolist() == list(entry.target)

    def test_cameras_agree_with_depth_by_reprojection(self, tmp_path: Path) -> None:
        dataset = self._dataset(tmp_path)
        sample = dataset[0]
        if not self.provides_depth:
            assert "depths" not in sample["context"], "dataset returns depths: set provides_depth = True"
            return
        assert "depths" in sample["context"], "provides_depth = True but the sample has no depths"
        # the two distinct frames closest in time overlap most
        views = {key: torch.cat([sample["context"][key], sample["target"][key]])
                 for key in ("images", "extrinsics", "intrinsics", "indices", "depths")}
        frames = views["indices"].tolist()
        pairs = [(abs(frames[a] - frames[b]), a, b) for a in range(len(frames)) for b in range(len(frames))
                 if frames[a] != frames[b]]
        assert pairs, "the sample has a single distinct frame"
        _, first, second = min(pairs)
        views = {key: value[[first, second]] for key, value in views.items()}
        height, width = views["images"].shape[-2:]
        cameras = Cameras(views["extrinsics"], views["intrinsics"])
        uv = pixel_grid(height, width).reshape(-1, 2)
        depth = views["depths"][0, 0].reshape(-1)
        points = unproject_points(cameras[0], uv, depth)
        projected, projected_depth = project_points(cameras[1], points)
        column = (projected[:, 0] * width - 0.5).round().long()
        row = (projected[:, 1] * height - 0.5).round().long()
        inside = (projected_depth > 0.05) & (column >= 0) & (column < width) & (row >= 0) & (row < height)
        assert int(inside.sum()) > 0.1 * uv.shape[0], "views share too little to check"
        seen = views["depths"][1, 0][row[inside], column[inside]]
        # visible (not occluded) points agree to a small fraction of their depth
        agree = (seen - projected_depth[inside]).abs() < 0.03 * projected_depth[inside] + 0.02
        assert float(agree.float().mean()) > 0.7, "depth reprojection disagrees: camera convention is wrong"
