"""Core's dataset contract suite, run on tiny synthetic DL3DV folders in two layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scenetok.testing.datasets import SceneDatasetContract
from scenetok_plugin_dl3dv.benchmark import write_hash_list
from scenetok_plugin_dl3dv.dataset import DL3DVDataset
from scenetok_plugin_dl3dv.testing import synthetic_hash, write_synthetic_dl3dv, write_synthetic_scene

HASHES = sorted(synthetic_hash(i) for i in range(3))


class TestDL3DVContract(SceneDatasetContract):
    """``<root>/<hash>/`` scenes read from ``images_8``; the last scene has a missing and a broken
    frame (the suite only samples the first scenes, so its checks stay exact)."""

    def make_dataset(self, tmp_path: Path, **overrides: Any) -> DL3DVDataset:
        root = tmp_path / "dl3dv"
        write_synthetic_dl3dv(root, HASHES[:2], folders=("images_8",))
        write_synthetic_scene(root / HASHES[2], folders=("images_8",), missing=(3,), broken=(5,), seed=7)
        config = DL3DVDataset.Config(root=str(root), resolution="images_8", image_size=[16, 24], **overrides)
        return DL3DVDataset(config)


class TestDL3DVBenchmarkLayoutContract(SceneDatasetContract):
    """The DL3DV-10K-Benchmark download (``<hash>/nerfstudio/``) as the test split of a hash list
    that also names a scene which is not on disk."""

    def make_dataset(self, tmp_path: Path, **overrides: Any) -> DL3DVDataset:
        root = tmp_path / "benchmark"
        write_synthetic_dl3dv(root, HASHES, layout="nerfstudio", folders=("images_4",))
        listed = write_hash_list([HASHES[0], HASHES[2], synthetic_hash(99)], tmp_path / "dl3dv140.txt")
        config = DL3DVDataset.Config(root=str(root), split="test", benchmark=str(listed), image_size=[16, 16],
                                     **overrides)
        return DL3DVDataset(config)
