"""DL3DV reading: layouts, OpenGL -> OpenCV, intrinsics at every resolution, compatibility
switches for the upstream focal-length bugs, missing and broken frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scenetok.interfaces import CorruptSampleError
from scenetok_plugin_dl3dv.dataset import UPSTREAM_FOCAL_SCALE, DL3DVDataset, scale_focal_like_upstream
from scenetok_plugin_dl3dv.testing import FULL_INTRINSICS, FULL_SIZE, write_synthetic_dl3dv, write_synthetic_scene


def make(root: Path, **fields) -> DL3DVDataset:
    fields = {"image_size": [16, 24], "context_views": 3, "target_views": 2, **fields}
    return DL3DVDataset(DL3DVDataset.Config(root=str(root), **fields))


# ---- config ------------------------------------------------------------------------------------------


def test_defaults_follow_the_paper_dl3dv_setup():
    config = DL3DVDataset.Config()
    assert config.resolution == "images_4" and config.image_size == [256, 256]
    assert (config.context_views, config.target_views, config.target_clips) == (16, 34, 2)
    assert (config.window_min, config.window_max) == (64, 96)
    assert not config.scale_focal_by_256 and not config.scale_context_focal_by_256
    assert config.image_folder == "images_4" and config.transforms_file == "transforms.json"
    assert DL3DVDataset.default_config("480p").resolution == "images_8"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"resolution": "960p"}, "resolution"),
        ({"resolution": "../images_4"}, "resolution"),
        ({"min_frames": 0}, "min_frames"),
        ({"benchmark": " "}, "benchmark"),
        ({"scale_focal_by_256": True, "scale_context_focal_by_256": True}, "scale_context_focal_by_256"),
        ({"target_views": 34, "target_clips": 4}, "target_clips"),
    ],
)
def test_bad_config_names_the_field(fields, named):
    with pytest.raises(ValueError, match=named):
        DL3DVDataset.Config(**fields)


# ---- layouts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["flat", "nerfstudio", "subsets"])
def test_scene_keys_are_hashes_in_every_download_layout(tmp_path, hashes, layout):
    write_synthetic_dl3dv(tmp_path, hashes, layout=layout, folders=())
    dataset = make(tmp_path)
    assert dataset.scenes() == hashes


def test_split_folders_select_the_split(tmp_path, hashes):
    write_synthetic_dl3dv(tmp_path / "train", hashes[:3], folders=())
    write_synthetic_dl3dv(tmp_path / "test", hashes[3:], layout="nerfstudio", folders=())
    assert make(tmp_path, split="train").scenes() == hashes[:3]
    assert make(tmp_path, split="test").scenes() == hashes[3:]


def test_a_single_scene_folder_is_a_dataset(tmp_path, hashes):
    write_synthetic_scene(tmp_path / hashes[0] / "nerfstudio", folders=())
    assert make(tmp_path / hashes[0]).scenes() == [hashes[0]]


def test_empty_root_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="transforms.json"):
        make(tmp_path)


# ---- cameras -----------------------------------------------------------------------------------------


def test_opengl_poses_become_opencv(tmp_path, hashes):
    scene = write_synthetic_dl3dv(tmp_path, hashes[:1], folders=("images_8",))[hashes[0]]
    dataset = make(tmp_path, resolution="images_8")
    cameras = dataset.frame_cameras(hashes[0])
    assert torch.allclose(cameras.extrinsics, scene.extrinsics, atol=1e-5)
    # Independent of the conversion code: the synthetic cameras look at the origin, so in OpenCV the
    # camera's +z column points at it, while in the stored OpenGL matrix -z does.
    to_origin = -cameras.extrinsics[:, :3, 3]
    assert bool(((cameras.extrinsics[:, :3, 2] * to_origin).sum(-1) > 0.99 * to_origin.norm(dim=-1)).all())
    stored = torch.tensor([frame["transform_matrix"] for frame in
                           json.loads((scene.folder / "transforms.json").read_text())["frames"]])
    assert bool(((-stored[:, :3, 2] * to_origin).sum(-1) > 0.99 * to_origin.norm(dim=-1)).all())


def test_frame_cameras_match_the_cropped_views(tmp_path, hashes):
    write_synthetic_dl3dv(tmp_path, hashes[:1], folders=("images_8",))
    dataset = make(tmp_path, resolution="images_8")
    frames = [0, 2, 5]
    cameras = dataset.frame_cameras(hashes[0])
    views = dataset.load_views(hashes[0], frames)
    assert torch.allclose(cameras.intrinsics[frames], views["intrinsics"], atol=1e-6)
    assert torch.allclose(cameras.extrinsics[frames], views["extrinsics"])


def test_intrinsics_agree_across_resolutions(tmp_path, hashes):
    write_synthetic_dl3dv(tmp_path, hashes[:1], folders=("images_4", "images_8"))
    frames = [0, 3, 6]
    quarter = make(tmp_path, resolution="images_4").load_views(hashes[0], frames)
    eighth = make(tmp_path, resolution="images_8").load_views(hashes[0], frames)
    assert quarter["images"].shape == eighth["images"].shape == (3, 3, 16, 24)
    assert torch.allclose(quarter["intrinsics"], eighth["intrinsics"], atol=1e-6)
    # 9:16 frames -> 16 x 24: resized to 16 x 28, 2 columns cropped on each side
    fx, fy, cx, cy = FULL_INTRINSICS
    height, width = FULL_SIZE
    assert torch.allclose(eighth["intrinsics"][:, 0, 0], torch.tensor(fx / width * 28 / 24).expand(3))
    assert torch.allclose(eighth["intrinsics"][:, 1, 1], torch.tensor(fy / height).expand(3))
    assert torch.allclose(eighth["intrinsics"][:, 0, 2], torch.tensor((cx / width * 28 - 2) / 24).expand(3))
    # and the frames show the same picture
    assert (quarter["images"] - eighth["images"]).abs().mean() < 0.05


def test_per_frame_intrinsics(tmp_path, hashes):
    scene = write_synthetic_scene(tmp_path / hashes[0], per_frame_intrinsics=True, folders=("images_8",))
    dataset = make(tmp_path, resolution="images_8")
    intrinsics = dataset.frame_cameras(hashes[0]).intrinsics
    frames = list(range(len(scene.intrinsics)))
    assert torch.allclose(intrinsics, dataset.load_views(hashes[0], frames)["intrinsics"], atol=1e-6)
    assert float(intrinsics[-1, 0, 0] / intrinsics[0, 0, 0]) == pytest.approx(1.35)


# ---- upstream compatibility switches -----------------------------------------------------------------


def test_focal_switches_scale_fx_fy_as_documented(tmp_path, hashes):
    write_synthetic_dl3dv(tmp_path, hashes[:2], folders=("images_8",))
    correct = make(tmp_path, resolution="images_8")
    bug1 = make(tmp_path, resolution="images_8", scale_focal_by_256=True)
    bug2 = make(tmp_path, resolution="images_8", scale_context_focal_by_256=True)
    scale = torch.tensor([[UPSTREAM_FOCAL_SCALE[0], 1, 1], [1, UPSTREAM_FOCAL_SCALE[1], 1], [1, 1, 1]])
    assert UPSTREAM_FOCAL_SCALE == (15.0, 8.4375)  # 3840/256, 2160/256
    reference, all_views, context_only = correct[0], bug1[0], bug2[0]
    for part in ("context", "target"):
        assert torch.equal(all_views[part]["indices"], reference[part]["indices"])
        assert torch.allclose(all_views[part]["intrinsics"], reference[part]["intrinsics"] * scale)
        assert torch.equal(all_views[part]["extrinsics"], reference[part]["extrinsics"])
    assert torch.allclose(context_only["context"]["intrinsics"], reference["context"]["intrinsics"] * scale)
    assert torch.equal(context_only["target"]["intrinsics"], reference["target"]["intrinsics"])
    # bug #1 concerns every camera the dataset returns, bug #2 only the context views of samples
    views = [0, 1]
    assert torch.allclose(bug1.load_views(hashes[0], views)["intrinsics"],
                          correct.load_views(hashes[0], views)["intrinsics"] * scale)
    assert torch.allclose(bug1.frame_cameras(hashes[0]).intrinsics, correct.frame_cameras(hashes[0]).intrinsics * scale)
    assert torch.equal(bug2.load_views(hashes[0], views)["intrinsics"],
                       correct.load_views(hashes[0], views)["intrinsics"])


def test_focal_scaling_does_not_mutate_its_input():
    intrinsics = torch.tensor([[0.8, 0.0, 0.5], [0.0, 1.4, 0.5], [0.0, 0.0, 1.0]])
    before = intrinsics.clone()
    scaled = scale_focal_like_upstream(intrinsics)
    assert torch.equal(intrinsics, before)
    assert scaled[0, 0] == pytest.approx(12.0) and scaled[1, 1] == pytest.approx(11.8125)
    assert torch.equal(scaled[:, 2], before[:, 2])


# ---- bad data ----------------------------------------------------------------------------------------


def test_missing_image_drops_its_frame_and_is_recorded(tmp_path, hashes):
    scene = write_synthetic_scene(tmp_path / hashes[0], missing=(2,), folders=("images_8",))
    dataset = make(tmp_path, resolution="images_8")
    assert dataset.num_frames(hashes[0]) == 7
    # frame positions count the remaining frames; cameras stay paired with their images
    assert dataset.parse_scene(hashes[0]).image_paths[2].name == "frame_00004.png"
    assert torch.allclose(dataset.frame_cameras(hashes[0]).extrinsics[2], scene.extrinsics[3], atol=1e-5)
    [record] = dataset.skipped
    assert record["scene"] == hashes[0] and record["file"].endswith("images_8/frame_00003.png")
    assert "missing" in record["reason"]


def test_broken_image_skips_its_sample_and_is_reported(tmp_path, hashes):
    write_synthetic_scene(tmp_path / hashes[0], broken=(4,), folders=("images_8",))
    write_synthetic_scene(tmp_path / hashes[1], folders=("images_8",), seed=1)
    index = tmp_path / "index.json"
    index.write_text(json.dumps({hashes[0]: {"context": [0, 4, 7], "target": [2, 3]},
                                 hashes[1]: {"context": [0, 4, 7], "target": [2, 3]}}))
    report = tmp_path / "skipped.jsonl"
    dataset = make(tmp_path, resolution="images_8", index=str(index), report_path=str(report))
    with pytest.raises(CorruptSampleError, match="frame_00005.png"):
        dataset.load_views(hashes[0], [4])
    sample = dataset[0]
    assert sample["scene"] == hashes[1]
    assert sample["context"]["indices"].tolist() == [0, 4, 7]
    records = [json.loads(line) for line in report.read_text().splitlines()]
    assert any(r["scene"] == hashes[0] and "decodable" in r["reason"] for r in records)
    assert dataset.skipped == records
