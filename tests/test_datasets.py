"""Datasets (rooms, re10k, transforms), view sampling, evaluation index, conversion and preview.

RE10K chunks and transforms.json folders are generated in ``tmp_path`` from rendered rooms
frames, so camera conventions are checked against an independent ground truth.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from scenetok.components.datasets.re10k import RE10KDataset
from scenetok.components.datasets.rooms import RoomsDataset
from scenetok.components.datasets.transforms import TransformsDataset
from scenetok.data.view_sampling import (
    NotEnoughFramesError,
    sample_evaluation_views,
    sample_training_views,
    stable_seed,
)
from scenetok.data.convert import convert_captures
from scenetok.data.index import read_evaluation_index, write_evaluation_index
from scenetok.data.preview import write_preview
from scenetok.geometry.conventions import cameras_to_re10k_rows, denormalize_intrinsics, opencv_to_opengl
from scenetok.testing.datasets import SceneDatasetContract
from scenetok.types import Cameras

TINY_ROOMS = {"image_size": [16, 16], "num_scenes": 4, "frames_per_scene": 12, "min_objects": 2,
              "max_objects": 3}


def tiny_rooms(**overrides: Any) -> RoomsDataset:
    return RoomsDataset(RoomsDataset.Config(**{**TINY_ROOMS, **overrides}))


def rendered_scene(scene: int = 0, size: tuple[int, int] = (24, 32), frames: int = 6):
    """Frames of one rooms scene at ``size`` (H, W): images uint8 (V, H, W, 3) and cameras."""
    dataset = tiny_rooms(image_size=list(size), frames_per_scene=frames)
    views = dataset.load_views(dataset.scenes()[scene], list(range(frames)))
    images = (views["images"].permute(0, 2, 3, 1) * 255).round().to(torch.uint8)
    return images, Cameras(views["extrinsics"], views["intrinsics"]), views["images"]


def encode(image: torch.Tensor, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.numpy()).save(buffer, format=fmt)
    return buffer.getvalue()


def write_chunks(root: Path, stage: str = "test", scenes: int = 3, frames: int = 6) -> dict[str, Any]:
    """pixelSplat chunks of rendered rooms (lossless PNG bytes): two chunks + index.json."""
    stage_dir = root / stage
    stage_dir.mkdir(parents=True)
    records, truth = [], {}
    for scene in range(scenes):
        images, cameras, floats = rendered_scene(scene, frames=frames)
        key = f"scene{scene:02d}"
        truth[key] = (cameras, floats)
        records.append({"key": key, "url": "", "timestamps": torch.arange(frames),
                        "cameras": cameras_to_re10k_rows(cameras),
                        "images": [torch.frombuffer(bytearray(encode(i)), dtype=torch.uint8) for i in images]})
    torch.save(records[:2], stage_dir / "000000.torch")
    torch.save(records[2:], stage_dir / "000001.torch")
    index = {r["key"]: ("000000.torch" if i < 2 else "000001.torch") for i, r in enumerate(records)}
    (stage_dir / "index.json").write_text(json.dumps(index))
    return truth


def write_transforms_scene(folder: Path, scene: int = 0, frames: int = 6, downscale: int = 2) -> tuple:
    """A nerfstudio folder: full-res intrinsics in transforms.json, images only in images_<k>."""
    images, cameras, floats = rendered_scene(scene, frames=frames)
    height, width = images.shape[1:3]
    image_dir = folder / f"images_{downscale}"
    image_dir.mkdir(parents=True)
    k = denormalize_intrinsics(cameras.intrinsics[0], width * downscale, height * downscale)
    meta = {"fl_x": float(k[0, 0]), "fl_y": float(k[1, 1]), "cx": float(k[0, 2]), "cy": float(k[1, 2]),
            "w": width * downscale, "h": height * downscale, "frames": []}
    for i in reversed(range(frames)):  # out of order on purpose: frames are sorted by name
        Image.fromarray(images[i].numpy()).save(image_dir / f"frame_{i + 1:05d}.png")
        meta["frames"].append({"file_path": f"images/frame_{i + 1:05d}.png",
                               "transform_matrix": opencv_to_opengl(cameras.extrinsics[i]).tolist()})
    (folder / "transforms.json").write_text(json.dumps(meta))
    return cameras, floats


# ---- contract suites -----------------------------------------------------------------------------

class TestRoomsContract(SceneDatasetContract):
    provides_depth = True

    def make_dataset(self, tmp_path: Path, **overrides: Any) -> RoomsDataset:
        return tiny_rooms(**overrides)


class TestRE10KContract(SceneDatasetContract):
    def make_dataset(self, tmp_path: Path, **overrides: Any) -> RE10KDataset:
        if not (tmp_path / "re10k").exists():
            write_chunks(tmp_path / "re10k")
        return RE10KDataset(RE10KDataset.Config(root=str(tmp_path / "re10k"), split="test",
                                                image_size=[16, 24], **overrides))


class TestTransformsContract(SceneDatasetContract):
    def make_dataset(self, tmp_path: Path, **overrides: Any) -> TransformsDataset:
        root = tmp_path / "scenes"
        if not root.exists():
            for scene in range(2):
                write_transforms_scene(root / "test" / f"scene{scene}" / "nerfstudio", scene)
        return TransformsDataset(TransformsDataset.Config(root=str(root), split="test", image_folder="images_2",
                                                          image_size=[16, 16], **overrides))


# ---- rooms ---------------------------------------------------------------------------------------

def test_rooms_splits_are_disjoint_and_deterministic() -> None:
    train, test = tiny_rooms(split="train"), tiny_rooms(split="test")
    assert not set(train.scenes()) & set(test.scenes())
    frames = [0, 5]
    a = train.load_views(train.scenes()[0], frames)["images"]
    assert torch.equal(a, tiny_rooms(split="train").load_views(train.scenes()[0], frames)["images"])
    assert not torch.equal(a, test.load_views(test.scenes()[0], frames)["images"])
    assert not torch.equal(a, train.load_views(train.scenes()[1], frames)["images"])
    with pytest.raises(KeyError):
        train.num_frames(test.scenes()[0])


def test_rooms_depth_reprojection_matches_colour() -> None:
    dataset = tiny_rooms(image_size=[32, 32], shadows=False)
    views = dataset.load_views(dataset.scenes()[1], [3, 5])
    from scenetok.geometry.conventions import project_points, unproject_points
    from scenetok.geometry.rays import pixel_grid

    cameras = Cameras(views["extrinsics"], views["intrinsics"])
    uv = pixel_grid(32, 32).reshape(-1, 2)
    points = unproject_points(cameras[0], uv, views["depths"][0, 0].reshape(-1))
    projected, depth = project_points(cameras[1], points)
    pixel = (projected * 32 - 0.5).round().long()
    inside = ((pixel >= 0) & (pixel < 32)).all(-1) & (depth > 0)
    seen = views["depths"][1, 0][pixel[inside, 1], pixel[inside, 0]]
    visible = (seen - depth[inside]).abs() < 0.02 * depth[inside]
    assert int(visible.sum()) > 100
    source = views["images"][0].reshape(3, -1)[:, inside][:, visible]
    target = views["images"][1][:, pixel[inside, 1], pixel[inside, 0]][:, visible]
    # same surface point, same colour (textures are smooth-ish; allow sampling differences)
    assert float((source - target).abs().mean()) < 0.08
    assert float((views["images"][0] - views["images"][1]).abs().mean()) > 0.02  # the views do differ


def test_rooms_antialias_and_presets() -> None:
    dataset = RoomsDataset(RoomsDataset.default_config("easy", **TINY_ROOMS, antialias=2))
    views = dataset.load_views(dataset.scenes()[0], [0])
    assert views["images"].shape == (1, 3, 16, 16) and views["depths"].shape == (1, 1, 16, 16)
    with pytest.raises(ValueError, match="path_radius"):
        RoomsDataset.Config(path_radius=2.0)
    with pytest.raises(ValueError, match="split"):
        RoomsDataset.Config(split="val")


# ---- re10k ---------------------------------------------------------------------------------------

def test_re10k_reads_cameras_and_images_back(tmp_path: Path) -> None:
    truth = write_chunks(tmp_path)
    dataset = RE10KDataset(RE10KDataset.Config(root=str(tmp_path), split="test", image_size=[24, 32]))
    views = dataset.load_views("scene01", [1, 4])
    cameras, floats = truth["scene01"]
    assert torch.allclose(views["extrinsics"], cameras.extrinsics[[1, 4]], atol=1e-4)
    assert torch.allclose(views["intrinsics"], cameras.intrinsics[[1, 4]], atol=1e-5)
    assert float((views["images"] - floats[[1, 4]]).abs().max()) < 1.5 / 255


def test_re10k_crop_shim_keeps_geometry(tmp_path: Path) -> None:
    """Cropping 24x32 -> 16x16: a 3D point must land on the same content in the cropped image."""
    truth = write_chunks(tmp_path, scenes=1)
    dataset = RE10KDataset(RE10KDataset.Config(root=str(tmp_path), split="test", image_size=[12, 12]))
    views = dataset.load_views("scene00", [0])
    # resize 24x32 -> 12x16 (exact 2x), crop 2 columns each side
    assert torch.allclose(views["intrinsics"][0, 0, 0], truth["scene00"][0].intrinsics[0, 0, 0] * 16 / 12)
    assert torch.allclose(views["intrinsics"][0, 0, 2], torch.tensor(0.5), atol=1e-6)


def test_re10k_skips_corrupt_data_and_reports(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_chunks(tmp_path, scenes=3)
    stage = tmp_path / "test"
    records = torch.load(stage / "000000.torch", weights_only=True)
    records[0]["images"][2] = torch.frombuffer(bytearray(b"not a jpeg at all"), dtype=torch.uint8)  # corrupt JPEG
    records[1]["images"] = records[1]["images"][:-1]  # frame-count mismatch
    torch.save(records, stage / "000000.torch")
    (stage / "000001.torch").write_bytes(b"\x00garbage")  # corrupt chunk
    index = json.loads((stage / "index.json").read_text())
    index["missing_scene"] = "000000.torch"  # listed, not in its chunk
    index["lost_chunk"] = "000009.torch"  # chunk file does not exist
    (stage / "index.json").write_text(json.dumps(index))
    report = tmp_path / "skipped.jsonl"
    with caplog.at_level(logging.WARNING):
        dataset = RE10KDataset(RE10KDataset.Config(root=str(tmp_path), split="test", image_size=[16, 16],
                                                   context_views=2, target_views=2, context_sampling="uniform",
                                                   report_path=str(report)))
        assert "lost_chunk" not in dataset.scenes()
        # frames 0 and 5 only: the corrupt frame 2 is not touched, scene00 loads
        assert dataset.load_views("scene00", [0, 5])["images"].shape == (2, 3, 16, 16)
        with pytest.raises(Exception, match="scene00.*frame 2"):
            dataset.load_views("scene00", [2])
        loaded = {dataset[i]["scene"] for i in range(len(dataset))}
    assert loaded <= {"scene00"}
    reasons = {record["scene"]: record["reason"] for record in dataset.skipped}
    assert "frame-count mismatch" in reasons["scene01"]
    assert "corrupt chunk" in reasons["scene02"] and "missing from" in reasons["missing_scene"]
    assert "missing" in reasons["lost_chunk"]
    written = [json.loads(line) for line in report.read_text().splitlines()]
    assert {r["scene"] for r in written} >= {"scene01", "scene02", "missing_scene", "lost_chunk"}
    assert any("000001.torch" in m and "scene02" in m for m in caplog.messages)


def test_re10k_refuses_pickled_code(tmp_path: Path) -> None:
    write_chunks(tmp_path, scenes=1)

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save([{"key": "scene00", "payload": Exploit()}], tmp_path / "test" / "000000.torch")
    dataset = RE10KDataset(RE10KDataset.Config(root=str(tmp_path), split="test", image_size=[16, 16]))
    with pytest.raises(Exception, match="corrupt chunk"):
        dataset.num_frames("scene00")


def test_convert_captures_round_trip(tmp_path: Path) -> None:
    images, cameras, floats = rendered_scene(0)
    height, width = images.shape[1:3]
    capture = tmp_path / "captures" / "kitchen"
    capture.mkdir(parents=True)
    k = denormalize_intrinsics(cameras.intrinsics[0], width, height)
    frames = []
    for i, image in enumerate(images):
        (capture / f"{i}.png").write_bytes(encode(image))
        w2c = torch.linalg.inv(cameras.extrinsics[i])
        frames.append({"file": f"{i}.png", "matrix": w2c.tolist()})
    frames.append({"file": "missing.png", "matrix": torch.eye(4).tolist()})
    (capture / "cameras.json").write_text(json.dumps({
        "convention": "opencv_w2c", "frames": frames,
        "intrinsics": {"fx": float(k[0, 0]), "fy": float(k[1, 1]), "cx": float(k[0, 2]), "cy": float(k[1, 2])}}))
    (tmp_path / "captures" / "broken").mkdir()
    (tmp_path / "captures" / "broken" / "cameras.json").write_text("{not json")
    convert_captures(tmp_path / "captures", tmp_path / "out", stage="test")
    dataset = RE10KDataset(RE10KDataset.Config(root=str(tmp_path / "out"), split="test", image_size=[height, width]))
    assert dataset.scenes() == ["kitchen"] and dataset.num_frames("kitchen") == len(images)
    views = dataset.load_views("kitchen", [0, 3])
    assert torch.allclose(views["extrinsics"], cameras.extrinsics[[0, 3]], atol=1e-4)
    assert torch.allclose(views["intrinsics"], cameras.intrinsics[[0, 3]], atol=1e-5)
    assert float((views["images"] - floats[[0, 3]]).abs().max()) < 1.5 / 255
    # a camera JSON kept outside the image folder
    (capture / "cameras.json").rename(tmp_path / "kitchen_cameras.json")
    convert_captures(capture, tmp_path / "out2", cameras=tmp_path / "kitchen_cameras.json", stage="train")
    again = RE10KDataset(RE10KDataset.Config(root=str(tmp_path / "out2"), split="train", image_size=[height, width]))
    assert again.scenes() == ["kitchen"]
    assert torch.allclose(again.load_views("kitchen", [2])["extrinsics"], cameras.extrinsics[[2]], atol=1e-4)


# ---- transforms ----------------------------------------------------------------------------------

def test_transforms_converts_opengl_and_downscaled_intrinsics(tmp_path: Path) -> None:
    cameras, floats = write_transforms_scene(tmp_path / "room", frames=5)
    (tmp_path / "room" / "images_2" / "frame_00004.png").unlink()  # missing image: frame dropped
    (tmp_path / "room" / "images_2" / "frame_00002.png").write_bytes(b"broken png")
    dataset = TransformsDataset(TransformsDataset.Config(root=str(tmp_path / "room"), image_folder="images_2",
                                                         image_size=[24, 32]))
    assert dataset.scenes() == ["room"] and dataset.num_frames("room") == 4
    assert any("frame_00004.png" in record["file"] for record in dataset.skipped)
    views = dataset.load_views("room", [0, 2, 3])  # frames 1, 3, 5 of the original order
    original = [0, 2, 4]
    assert torch.allclose(views["extrinsics"], cameras.extrinsics[original], atol=1e-5)
    assert torch.allclose(views["intrinsics"], cameras.intrinsics[original], atol=1e-5)
    assert float((views["images"] - floats[original]).abs().max()) < 1.5 / 255
    with pytest.raises(Exception, match="frame_00002.png"):
        dataset.load_views("room", [1])


# ---- view sampling and evaluation index ----------------------------------------------------------

@pytest.mark.parametrize("method", ["farthest", "uniform", "random"])
@pytest.mark.parametrize("context_views", [2, 12, 16])
def test_training_views_properties(method: str, context_views: int) -> None:
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        context, target = sample_training_views(
            64, context_views=context_views, target_views=8, generator=generator, window_min=20, window_max=40,
            context_sampling=method, target_clips=2, target_margin=2)
        assert context == sorted(set(context)) and len(context) == context_views
        span = context[-1] - context[0] + 1
        assert max(20, context_views) <= span <= 40
        assert len(target) == 8 and all(0 <= t < 64 for t in target)
        for clip in (target[:4], target[4:]):  # two contiguous clips of 4
            assert clip == list(range(clip[0], clip[0] + 4))
            assert context[0] - 2 <= clip[0] and clip[-1] <= context[-1] + 2


def test_farthest_point_spreads_over_poses() -> None:
    # frames 0..9 sit at x=0, frames 10..29 crowd near x=10: FPS picks by pose, not by index
    positions = torch.cat([torch.zeros(10), 10 + torch.linspace(0, 0.1, 20)])
    extrinsics = torch.eye(4).repeat(30, 1, 1)
    extrinsics[:, 0, 3] = positions
    context, _ = sample_training_views(30, context_views=3, target_views=2, generator=torch.Generator().manual_seed(0),
                                       extrinsics=extrinsics)
    assert context[0] == 0 and context[-1] == 29
    with pytest.raises(NotEnoughFramesError):
        sample_training_views(3, context_views=4, target_views=2, generator=torch.Generator())


def test_evaluation_views_deterministic_and_contiguous() -> None:
    first = sample_evaluation_views(50, 5, 16, seed=0, scene="abc")
    assert first == sample_evaluation_views(50, 5, 16, seed=0, scene="abc")
    context, target = first
    assert target == list(range(target[0], target[0] + 16))
    assert context[0] == target[0] and context[-1] == target[-1] and len(context) == 5
    many = {tuple(sample_evaluation_views(50, 5, 16, seed=s, scene="abc")[1]) for s in range(10)}
    assert len(many) > 1
    wide, _ = sample_evaluation_views(50, 12, 4, seed=0, scene="abc")
    assert len(wide) == 12
    assert stable_seed("a", 1) == stable_seed("a", 1) != stable_seed("a", 2)


def test_evaluation_index_variants_and_missing_scenes(tmp_path: Path) -> None:
    dataset = tiny_rooms(split="test")
    path = write_evaluation_index(dataset, tmp_path / "index.json", context_views=2, target_views=4, seed=1)
    data = json.loads(path.read_text())
    scene = dataset.scenes()[0]
    data[f"{scene}_1"] = data.pop(scene)  # DL3DV-style window suffix
    data["unknown-scene"] = {"context": [0], "target": [1]}
    data["null-scene"] = None
    data[dataset.scenes()[1]] = [data[dataset.scenes()[1]], {"context": [0, 1], "target": [2, 3]}]
    path.write_text(json.dumps(data))
    entries = read_evaluation_index(path)
    assert [e.name for e in entries if e.scene == dataset.scenes()[1]] == [f"{dataset.scenes()[1]}#0",
                                                                           f"{dataset.scenes()[1]}#1"]
    evaluation = tiny_rooms(split="test", index=str(path))
    assert len(evaluation) == len(entries) - 1  # unknown-scene dropped, null skipped
    assert any(r["scene"] == "unknown-scene" for r in evaluation.skipped)
    scenes = [evaluation[i]["scene"] for i in range(len(evaluation))]
    assert scene in scenes
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"s": {"context": [0, -1], "target": [1]}}))
    with pytest.raises(ValueError, match="bad.json.*context"):
        read_evaluation_index(bad)


def test_set_epoch_changes_training_views() -> None:
    dataset = tiny_rooms(context_views=3, target_views=2, window_max=6)
    first = dataset[0]["context"]["indices"].tolist()
    picks = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        picks.add(tuple(dataset[0]["context"]["indices"].tolist()))
    dataset.set_epoch(0)
    assert dataset[0]["context"]["indices"].tolist() == first
    assert len(picks) > 1


def test_preview_writes_png(tmp_path: Path) -> None:
    path = write_preview(tiny_rooms(context_views=3, target_views=4), tmp_path, index=1)
    image = Image.open(path)
    assert path.suffix == ".png" and image.size[0] > 400 and image.size[1] > 150


def test_rooms_frame_cache_returns_the_same_samples():
    from scenetok.components.datasets.rooms import RoomsDataset

    plain = RoomsDataset(RoomsDataset.Config(image_size=16, frames_per_scene=8, num_scenes=4))
    cached = RoomsDataset(RoomsDataset.Config(image_size=16, frames_per_scene=8, num_scenes=4, cache_frames=2))
    for item in (0, 1, 2, 0):
        a, b = plain[item], cached[item]
        for part in ("context", "target"):
            assert a[part].keys() == b[part].keys()
            for key in a[part]:
                torch.testing.assert_close(a[part][key], b[part][key], atol=1e-5, rtol=0)
    assert len(cached._frame_cache) == 2  # least recently used scene evicted


# ---- export ---------------------------------------------------------------------------------------

def test_export_transforms_round_trips_through_the_transforms_dataset(tmp_path: Path) -> None:
    from scenetok.data.export import export_transforms

    source = tiny_rooms(split="test", frames_per_scene=5)
    written = export_transforms(source, tmp_path / "out", "test", scale=2.5, offset=[1.0, -3.0, 0.5],
                                progress=False)
    assert [p.parent.name for p in written] == source.scenes()
    exported = TransformsDataset(TransformsDataset.Config(root=str(tmp_path / "out"), split="test",
                                                          image_size=source.config.image_size))
    assert exported.scenes() == source.scenes()
    for scene in source.scenes():
        frames = list(range(source.num_frames(scene)))
        assert exported.num_frames(scene) == len(frames)
        a, b = source.load_views(scene, frames), exported.load_views(scene, frames)
        assert (a["images"] - b["images"]).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit PNGs
        torch.testing.assert_close(b["intrinsics"], a["intrinsics"], atol=1e-6, rtol=0)
        torch.testing.assert_close(b["extrinsics"][:, :3, :3], a["extrinsics"][:, :3, :3], atol=1e-6, rtol=0)
        torch.testing.assert_close(b["extrinsics"][:, :3, 3], a["extrinsics"][:, :3, 3] * 2.5
                                   + torch.tensor([1.0, -3.0, 0.5]), atol=1e-5, rtol=0)
    # An existing scene folder is refused, not mixed with; a bad scale is refused before writing.
    with pytest.raises(FileExistsError, match="already exists"):
        export_transforms(source, tmp_path / "out", "test", progress=False)
    with pytest.raises(ValueError, match="scale"):
        export_transforms(source, tmp_path / "other", "test", scale=float("inf"), progress=False)
    assert not (tmp_path / "other").exists()
