"""Evaluation metrics, baselines and reports."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image
from torch import nn

from scenetok.eval.baselines import (
    BASELINES,
    camera_distance,
    copy_nearest_context,
    mean_context,
    nearest_context_indices,
    rotation_angle,
)
from scenetok.eval.metrics import (
    RANDOM_BACKBONE_LABEL,
    FIDMetric,
    LPIPSMetric,
    MetricSuite,
    psnr,
    ssim,
)
from scenetok.eval.report import ReportExample, write_eval_report
from scenetok.types import Cameras, Views


@pytest.fixture
def no_cached_weights(tmp_path, monkeypatch):
    """An empty torch hub cache, as on an offline machine."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=generator)


# ---------------------------------------------------------------------------------- PSNR / SSIM


def test_psnr_known_values():
    prediction = torch.full((2, 3, 8, 8), 0.5)
    target = torch.full((2, 3, 8, 8), 0.6)
    torch.testing.assert_close(psnr(prediction, target), torch.full((2,), 20.0))
    # identical images: capped, or +inf on request; values are clamped to [0, 1] first
    assert psnr(target, target).tolist() == pytest.approx([100.0, 100.0])
    assert math.isinf(psnr(target, target, max_db=None)[0].item())
    assert psnr(torch.full((1, 3, 4, 4), 1.5), torch.ones(1, 3, 4, 4)).item() == pytest.approx(100.0)
    # leading dims are flattened, per-image values (not one pooled MSE)
    batch = torch.stack([prediction, target])  # (2, 2, 3, 8, 8)
    values = psnr(batch, torch.stack([target, target]))
    assert values.shape == (4,) and values[:2].tolist() == pytest.approx([20.0, 20.0])
    with pytest.raises(ValueError, match="differ"):
        psnr(prediction, target[:1])


def test_ssim_identical_and_different():
    clean = images(3, 3, 32, 32)
    before = clean.clone()
    assert ssim(clean, clean).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    # constant images: only the luminance term remains, (2 a b + C1) / (a^2 + b^2 + C1), C1 = 0.01^2
    constant = ssim(torch.full((1, 3, 16, 16), 0.5), torch.full((1, 3, 16, 16), 0.6))
    assert constant.item() == pytest.approx((2 * 0.3 + 1e-4) / (0.25 + 0.36 + 1e-4), abs=1e-5)
    noise = images(3, 3, 32, 32, seed=1) - 0.5
    slightly, heavily = (
        ssim((clean + 0.1 * noise).clamp(0, 1), clean),
        ssim((clean + 0.8 * noise).clamp(0, 1), clean),
    )
    assert slightly.shape == (3,) and (heavily < slightly).all() and (slightly < 1.0).all()
    assert torch.equal(clean, before)


# ---------------------------------------------------------------------------------- LPIPS


def test_lpips_unavailable_without_weights(no_cached_weights):
    metric = LPIPSMetric()  # VGG, the paper's default
    assert not metric.available
    assert "vgg16-397923af.pth" in metric.unavailable_reason
    assert metric(images(1, 3, 32, 32), images(1, 3, 32, 32)) is None


def test_lpips_random_backbone_is_labelled(no_cached_weights):
    torch.manual_seed(0)
    metric = LPIPSMetric("alex", allow_random_backbone=True)
    assert metric.available and RANDOM_BACKBONE_LABEL in metric.backbone
    clean = images(2, 3, 32, 32)
    assert metric(clean, clean).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    assert (metric(images(2, 3, 32, 32, seed=1), clean) > 0).all()


def test_lpips_loads_a_local_torchvision_backbone(tmp_path, no_cached_weights):
    from torchvision.models import squeezenet1_1

    torch.manual_seed(1)
    reference = squeezenet1_1()
    weights = tmp_path / "squeezenet1_1.pth"
    torch.save({k: v for k, v in reference.state_dict().items() if k.startswith("features.")}, weights)
    metric = LPIPSMetric("squeeze", backbone_weights=weights, batch_size=1)
    assert metric.available and str(weights) in metric.backbone
    loaded = metric.model.net.state_dict()
    assert torch.equal(loaded["slice2.3.squeeze.weight"], reference.features[3].squeeze.weight)
    assert metric(images(3, 3, 32, 32), images(3, 3, 32, 32, seed=2)).shape == (3,)

    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "broken.pth")
    broken = LPIPSMetric("squeeze", backbone_weights=tmp_path / "broken.pth")
    assert not broken.available and "broken.pth" in broken.unavailable_reason


# ---------------------------------------------------------------------------------- FID


class ChannelStats(nn.Module):
    """A stand-in feature extractor: per-channel mean and std of uint8 images, (N, 6)."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        assert frames.dtype == torch.uint8
        values = frames.float() / 255.0
        return torch.cat([values.mean(dim=(2, 3)), values.std(dim=(2, 3))], dim=1)


def test_fid_with_custom_features_and_unavailable(tmp_path):
    fid = FIDMetric(feature_extractor=ChannelStats())
    assert fid.available and "custom" in fid.backbone
    frames = images(16, 3, 16, 16)
    fid.update(frames, frames)
    assert fid.compute() == pytest.approx(0.0, abs=1e-3)

    shifted = FIDMetric(feature_extractor=ChannelStats())
    shifted.update((frames * 0.5).view(2, 8, 3, 16, 16), frames.view(2, 8, 3, 16, 16))
    assert shifted.compute() > 0.01

    too_few = FIDMetric(feature_extractor=ChannelStats())
    too_few.update(frames[:1], frames[:1])
    assert too_few.compute() is None

    missing = FIDMetric(inception_weights_path=tmp_path / "missing.pth")
    assert not missing.available and missing.compute() is None
    assert "torch-fidelity" in missing.unavailable_reason or "missing.pth" in missing.unavailable_reason


# ---------------------------------------------------------------------------------- baselines


def cameras(positions: list[list[float]], yaw_degrees: list[float]) -> Cameras:
    """One batch element of cameras at ``positions`` rotated about +y by ``yaw_degrees``."""
    extrinsics = []
    for position, yaw in zip(positions, yaw_degrees):
        c, s = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
        matrix = torch.eye(4)
        matrix[:3, :3] = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
        matrix[:3, 3] = torch.tensor(position)
        extrinsics.append(matrix)
    extrinsics = torch.stack(extrinsics)[None]
    intrinsics = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]]).expand(
        1, len(positions), 3, 3
    )
    return Cameras(extrinsics, intrinsics.clone())


def context_views(camera_set: Cameras, size: int = 8) -> Views:
    count = camera_set.shape[1]
    # image i is constant i / 10 so the chosen view is readable from the pixels
    pixels = (
        torch.arange(count, dtype=torch.float32)
        .div(10)
        .view(1, count, 1, 1, 1)
        .expand(1, count, 3, size, size)
    )
    return Views(images=pixels.clone(), cameras=camera_set, indices=torch.arange(count)[None])


def test_rotation_angle():
    a = cameras([[0, 0, 0], [0, 0, 0]], [0.0, 90.0]).extrinsics[0, :, :3, :3]
    assert rotation_angle(a[0], a[1]).item() == pytest.approx(math.pi / 2, abs=1e-6)
    assert rotation_angle(a[1], a[1]).item() == pytest.approx(0.0, abs=1e-3)


def test_copy_nearest_chooses_the_right_view():
    context = context_views(cameras([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], [0, 0, 0, 0]))
    target = cameras([[2.9, 0, 0], [0.2, 0, 0], [1.4, 0.1, 0]], [0, 0, 0])
    assert nearest_context_indices(context.cameras, target).tolist() == [[3, 0, 1]]
    prediction = copy_nearest_context(context, target)
    assert prediction.shape == (1, 3, 3, 8, 8)
    assert prediction[0, :, 0, 0, 0].tolist() == pytest.approx([0.3, 0.0, 0.1])
    prediction.add_(1.0)  # the prediction does not alias the context images
    assert context.images.max().item() == pytest.approx(0.3)


def test_rotation_term_breaks_ties_and_is_scale_invariant():
    # both context cameras are 1 unit from the target; the second looks the other way
    context = context_views(cameras([[1, 0, 0], [-1, 0, 0]], [90.0, 0.0]))
    target = cameras([[0, 0, 0]], [0.0])
    assert nearest_context_indices(context.cameras, target).tolist() == [[1]]
    assert nearest_context_indices(context.cameras, target, rotation_weight=0.0).tolist() in ([[0]], [[1]])
    # a much closer but turned-away camera loses against a farther aligned one only with a rotation term
    context = context_views(cameras([[0.2, 0, 0], [0.6, 0, 0], [-5, 0, 0]], [180.0, 0.0, 0.0]))
    assert nearest_context_indices(context.cameras, target, rotation_weight=0.0).tolist() == [[0]]
    assert nearest_context_indices(context.cameras, target).tolist() == [[1]]
    # scaling the whole scene changes nothing
    scaled = Cameras(context.cameras.extrinsics.clone(), context.cameras.intrinsics)
    scaled.extrinsics[..., :3, 3] *= 100.0
    torch.testing.assert_close(
        camera_distance(scaled, target), camera_distance(context.cameras, target), rtol=1e-6, atol=1e-6
    )


def test_mean_context_and_registry():
    context = context_views(cameras([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [0, 0, 0]))
    target = cameras([[5, 0, 0], [6, 0, 0]], [0, 0])
    prediction = mean_context(context, target)
    assert prediction.shape == (1, 2, 3, 8, 8)
    torch.testing.assert_close(prediction, torch.full_like(prediction, 0.1))
    assert set(BASELINES) == {"copy_nearest", "mean_context"}
    assert BASELINES["copy_nearest"](context, target).shape == (1, 2, 3, 8, 8)


# ---------------------------------------------------------------------------------- suite + report


def test_metric_suite_and_report(tmp_path, no_cached_weights):
    suite = MetricSuite(lpips=LPIPSMetric(), fid_factory=lambda: FIDMetric(feature_extractor=ChannelStats()))
    target = images(2, 4, 3, 32, 32)
    prediction = (target + 0.05 * images(2, 4, 3, 32, 32, seed=3)).clamp(0, 1)
    suite.update("model", ["scene_a", "scene_b"], prediction, target)
    suite.update("copy_nearest", "scene_a", target[0], target[0])  # single-scene form
    results = suite.compute()

    model = results["methods"]["model"]
    expected_a = psnr(prediction[0], target[0]).double().mean().item()
    assert model["per_scene"]["scene_a"]["psnr"] == pytest.approx(expected_a)
    assert model["per_scene"]["scene_a"]["num_frames"] == 4
    assert model["mean"]["psnr"] == pytest.approx(psnr(prediction, target).double().mean().item())
    assert model["mean"]["num_frames"] == 8 and model["mean"]["num_scenes"] == 2
    assert model["mean"]["lpips"] is None and model["per_scene"]["scene_b"]["lpips"] is None
    assert model["fid"] is not None and model["fid"] > 0
    assert results["methods"]["copy_nearest"]["mean"]["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert results["metrics"]["lpips"]["available"] is False
    assert "vgg16" in results["metrics"]["lpips"]["reason"]

    context = images(3, 3, 32, 24, seed=4)
    examples = [
        ReportExample("scene_a", context, prediction[0], target[0], {"copy_nearest": target[0]}),
        ReportExample("scene_b", context, prediction[1], target[1]),
    ]
    written = write_eval_report(
        tmp_path / "eval", results, metadata={"checkpoint": "step_000010"}, examples=examples
    )
    report = json.loads(written["json"].read_text())
    assert report["metadata"] == {"checkpoint": "step_000010"}
    assert "vgg16" in report["unavailable_metrics"]["lpips"]
    assert report["methods"]["model"]["mean"]["psnr"] == pytest.approx(model["mean"]["psnr"])
    markdown = written["markdown"].read_text()
    assert "| model |" in markdown and "| copy_nearest |" in markdown
    assert "LPIPS unavailable" in markdown and "n/a" in markdown
    assert "scene_b" in markdown
    with Image.open(written["grid"]) as grid:
        # two scenes: 4 + 3 rows of 128 px tiles, 4 columns of (128 * 24 / 32 = 96) px tiles
        assert grid.width >= 4 * 128 and grid.height >= 7 * 128
        assert grid.mode == "RGB"


def test_report_keeps_infinite_psnr_as_valid_json(tmp_path):
    suite = MetricSuite(psnr_max_db=None)
    frames = images(1, 2, 3, 16, 16)
    suite.update("model", ["s"], frames, frames)
    written = write_eval_report(tmp_path, suite.compute())
    report = json.loads(written["json"].read_text())  # strict JSON, no Infinity literal
    assert report["methods"]["model"]["mean"]["psnr"] == "inf"
    assert report["metrics"]["fid"]["reason"] == "not requested"


def test_write_grid_from_a_batch(tmp_path):
    from scenetok.eval.report import write_grid
    from scenetok.types import SceneBatch

    context = context_views(cameras([[0, 0, 0], [1, 0, 0]], [0, 0]), size=16)
    target_cameras = cameras([[0.5, 0, 0], [0.9, 0, 0], [2, 0, 0]], [0, 0, 0])
    target = Views(images=images(1, 3, 3, 16, 16), cameras=target_cameras, indices=torch.arange(3)[None])
    batch = SceneBatch(context, target, ["scene_x"])
    baseline = copy_nearest_context(context, target_cameras)
    with_model = write_grid(
        tmp_path / "a.png", batch, {"model": images(1, 3, 3, 16, 16, seed=5), "copy": baseline}
    )
    baselines_only = write_grid(tmp_path / "b.png", batch, {"copy": baseline})
    with Image.open(with_model) as a, Image.open(baselines_only) as b:
        # one scene title bar, then context / prediction / truth / copy rows vs. no prediction row
        assert a.height - b.height == 128 + 4
        assert a.width == b.width
        # the context row shows context image 1 (value 0.1 -> 26) in its second tile
        assert a.getpixel((120 + 128 + 4 + 64, 22 + 64)) == (26, 26, 26)
