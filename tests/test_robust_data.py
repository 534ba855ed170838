"""Issue 18: one bad scene never raises into the training loop (skips with file, scene, reason)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch

from scenetok.components.datasets.re10k import RE10KDataset
from scenetok.components.datasets.transforms import TransformsDataset
from scenetok.data import images as image_limits
from scenetok.data.dataset import camera_problem
from scenetok.interfaces import CorruptSampleError
from scenetok.train.loop import EpochIndexed, NoUsableSamplesError
from tests.test_datasets import write_chunks, write_transforms_scene


def re10k(root: Path, **changes: Any) -> RE10KDataset:
    return RE10KDataset(RE10KDataset.Config(**{"root": str(root), "split": "test", "image_size": [16, 16],
                                               "context_views": 2, "target_views": 2,
                                               "context_sampling": "uniform",
                                               "report_path": str(root / "skipped.jsonl"), **changes}))


def corrupt_scene(root: Path, change) -> None:
    """Apply ``change(record)`` to scene00 of the first chunk."""
    chunk = root / "test" / "000000.torch"
    records = torch.load(chunk, weights_only=True)
    change(records[0])
    torch.save(records, chunk)


def report(root: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in (root / "skipped.jsonl").read_text().splitlines()]


def png_bomb(width: int = 40000, height: int = 40000) -> bytes:
    """A PNG whose header claims ``width x height`` pixels (1.6 G by default), 60 bytes on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 8)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("case", ["zero_cameras", "nan_cameras", "float_images", "int_images", "bomb"])
def test_re10k_bad_scene_is_skipped_by_name(tmp_path: Path, case: str) -> None:
    write_chunks(tmp_path, scenes=3)

    def change(record: dict[str, Any]) -> None:
        if case == "zero_cameras":
            record["cameras"] = torch.zeros_like(record["cameras"])
        elif case == "nan_cameras":
            record["cameras"][1, 7] = float("nan")
        elif case == "float_images":
            record["images"] = [torch.rand(100) for _ in record["images"]]
        elif case == "int_images":
            record["images"] = [7 for _ in record["images"]]
        elif case == "bomb":
            record["images"] = [torch.frombuffer(bytearray(png_bomb()), dtype=torch.uint8)
                                for _ in record["images"]]

    corrupt_scene(tmp_path, change)
    dataset = re10k(tmp_path)
    samples = [dataset[i]["scene"] for i in range(len(dataset))]
    assert "scene00" not in samples and len(samples) == 3
    skipped = [r for r in report(tmp_path) if r["scene"] == "scene00"]
    assert skipped and skipped[0]["file"].endswith("000000.torch")
    assert skipped[0]["reason"]


def test_pixel_limit_is_enforced_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_chunks(tmp_path, scenes=1)
    monkeypatch.setattr(image_limits, "MAX_IMAGE_PIXELS", 100)  # frames are 24 x 32 = 768 pixels
    dataset = re10k(tmp_path)
    with pytest.raises(CorruptSampleError, match="768 pixels exceeds the limit of 100"):
        dataset.load_views("scene00", [0])
    from PIL import Image
    assert Image.MAX_IMAGE_PIXELS is not None  # set explicitly by scenetok.data.images


def test_pickled_chunk_report_names_file_without_torch_advice(tmp_path: Path, caplog) -> None:
    write_chunks(tmp_path, scenes=1)

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save([{"key": "scene00", "payload": Exploit()}], tmp_path / "test" / "000000.torch")
    dataset = re10k(tmp_path)
    with pytest.raises(CorruptSampleError):
        dataset[0]
    record = report(tmp_path)[0]
    assert record["file"].endswith("000000.torch")
    assert "pickled code" in record["reason"] and "print" in record["reason"]
    assert "weights_only` set to `False" not in record["reason"] and "trust" not in record["reason"]
    assert not any("weights_only` set to `False" in m for m in caplog.messages)


def test_chunk_index_paths_stay_inside_the_dataset(tmp_path: Path) -> None:
    write_chunks(tmp_path / "data", scenes=1)
    secret = tmp_path / "secret.torch"
    secret.write_bytes(b"outside")
    index = tmp_path / "data" / "test" / "index.json"
    index.write_text(json.dumps({"scene00": "000000.torch", "escape": "../../secret.torch",
                                 "absolute": str(secret)}))
    dataset = re10k(tmp_path / "data")
    assert dataset.scenes() == ["scene00"]
    reasons = {r["scene"]: r["reason"] for r in dataset.skipped}
    assert "leaves the stage folder" in reasons["escape"] and "leaves the stage folder" in reasons["absolute"]


@pytest.mark.parametrize("content, message", [
    ('{"scene00": "000000.to', "not a valid chunk index"),
    ('["000000.torch"]', "got a list"),
    ('{"scene00": 5}', "non-empty strings"),
])
def test_bad_chunk_index_is_one_clear_error(tmp_path: Path, content: str, message: str) -> None:
    write_chunks(tmp_path, scenes=1)
    (tmp_path / "test" / "index.json").write_text(content)
    with pytest.raises(ValueError, match=message) as caught:
        re10k(tmp_path)
    assert "index.json" in str(caught.value)


@pytest.mark.parametrize("case", ["w0", "fl_x0", "zero_matrix", "nan_matrix", "escape"])
def test_transforms_bad_cameras_are_skipped(tmp_path: Path, case: str) -> None:
    root = tmp_path / "scenes"
    for scene in range(2):
        write_transforms_scene(root / "test" / f"scene{scene}", scene)
    path = root / "test" / "scene0" / "transforms.json"
    meta = json.loads(path.read_text())
    if case == "w0":
        meta["w"] = 0
    elif case == "fl_x0":
        meta["fl_x"] = 0
    elif case == "zero_matrix":
        for frame in meta["frames"]:
            frame["transform_matrix"] = [[0.0] * 4] * 4
    elif case == "nan_matrix":
        for frame in meta["frames"]:
            frame["transform_matrix"][0][3] = float("nan")
    elif case == "escape":
        meta["frames"][0]["file_path"] = "../../../../../../etc/hostname"
    path.write_text(json.dumps(meta))
    dataset = TransformsDataset(TransformsDataset.Config(
        root=str(root), split="test", image_folder="images_2", image_size=[16, 16], context_views=2,
        target_views=2, context_sampling="uniform", report_path=str(tmp_path / "skipped.jsonl")))
    samples = [dataset[i]["scene"] for i in range(len(dataset))]
    assert samples == ["scene1", "scene1"]
    record = next(r for r in dataset.skipped if r["scene"] == "scene0")
    assert record["file"].endswith("transforms.json")


def test_camera_problem_names_each_defect() -> None:
    eye, k = torch.eye(4).expand(2, 4, 4).clone(), torch.eye(3).expand(2, 3, 3).clone()
    assert camera_problem(eye, k, torch.zeros(2, 3, 4, 4)) is None
    assert "non-invertible" in camera_problem(torch.zeros(2, 4, 4), k)
    bad = eye.clone()
    bad[1, 0, 3] = float("inf")
    assert "non-finite" in camera_problem(bad, k)
    zero_focal = k.clone()
    zero_focal[0, 1, 1] = 0
    assert "focal lengths must be > 0" in camera_problem(eye, zero_focal)
    assert "H, W > 0" in camera_problem(eye, k, torch.zeros(2, 3, 0, 4))


class Exploding(torch.utils.data.Dataset):
    """A plugin dataset whose reader raises arbitrary errors for some samples."""

    def __init__(self, bad: set[int], size: int = 6):
        from tests.test_datasets import tiny_rooms
        self.inner, self.bad = tiny_rooms(), bad

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> Any:
        if index in self.bad:
            raise KeyError(f"plugin bug on sample {index}")
        return self.inner[index]


def test_any_reader_exception_is_a_skip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.test_datasets import tiny_rooms
    dataset = tiny_rooms(report_path=str(tmp_path / "r.jsonl"))
    original = dataset.load_views

    def flaky(scene: str, frames: list[int]):
        if scene == dataset.scenes()[0]:
            raise KeyError("a plugin reader bug")
        return original(scene, frames)

    monkeypatch.setattr(dataset, "load_views", flaky)
    assert dataset[0]["scene"] == dataset.scenes()[1]
    record = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    assert record["scene"] == dataset.scenes()[0] and "KeyError" in record["reason"]


def test_a_batch_of_skipped_samples_draws_replacements() -> None:
    wrapped = EpochIndexed(Exploding(bad={0, 1}))
    sample = wrapped[(0, 0)]
    assert sample["scene"] in wrapped.dataset.inner.scenes()
    assert wrapped[(0, 0)]["scene"] == sample["scene"]  # deterministic replacement
    with pytest.raises(NoUsableSamplesError, match="no usable training sample"):
        EpochIndexed(Exploding(bad=set(range(4))))[(0, 1)]
