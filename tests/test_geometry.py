"""Camera conventions, crop shim and trajectories, checked by reprojecting 3D points."""

from __future__ import annotations

import math

import torch

from scenetok.geometry.conventions import (
    camera_spread,
    cameras_to_re10k_rows,
    denormalize_intrinsics,
    look_at,
    make_relative,
    normalize_intrinsics,
    normalize_scene_scale,
    opencv_to_opengl,
    opengl_to_opencv,
    project_points,
    re10k_rows_to_cameras,
    unproject_points,
)
from scenetok.geometry.crop import crop_intrinsics, plan_crop, rescale_and_crop
from scenetok.geometry.rays import ray_bundle
from scenetok.geometry.trajectories import interpolate_poses, orbit, slerp, spline_through_cameras
from scenetok.types import Cameras


def random_cameras(count: int, seed: int = 0) -> Cameras:
    generator = torch.Generator().manual_seed(seed)
    eyes = torch.randn(count, 3, generator=generator) * 2
    targets = torch.randn(count, 3, generator=generator) * 0.3
    extrinsics = look_at(eyes, targets)
    intrinsics = torch.tensor([[0.9, 0.0, 0.48], [0.0, 1.2, 0.53], [0.0, 0.0, 1.0]]).expand(count, 3, 3).clone()
    return Cameras(extrinsics, intrinsics)


def pinhole_project_pixels(points: torch.Tensor, w2c: torch.Tensor, k_pixels: torch.Tensor) -> torch.Tensor:
    """Textbook pinhole projection in pixel units (independent of the code under test)."""
    camera = points @ w2c[:3, :3].T + w2c[:3, 3]
    image = camera @ k_pixels.T
    return image[:, :2] / image[:, 2:]


def test_re10k_rows_reproject_like_the_raw_w2c_matrix() -> None:
    generator = torch.Generator().manual_seed(1)
    cameras = random_cameras(3)
    rows = cameras_to_re10k_rows(cameras)
    assert rows.shape == (3, 18) and torch.all(rows[:, 4:6] == 0)
    decoded = re10k_rows_to_cameras(rows)
    points = torch.randn(20, 3, generator=generator) * 0.3  # near the look-at targets: in front
    width, height = 640, 360
    for view in range(3):
        w2c = torch.eye(4)
        w2c[:3, :4] = rows[view, 6:].reshape(3, 4)
        k_pixels = denormalize_intrinsics(decoded.intrinsics[view], width, height)
        expected = pinhole_project_pixels(points, w2c, k_pixels)
        uv, depth = project_points(decoded[view], points)
        assert bool((depth > 0).all())
        assert torch.allclose(uv * torch.tensor([width, height]), expected, atol=1e-3)
        # an OpenCV camera looks down +z: the point straight ahead projects to the principal point
        ahead = decoded.extrinsics[view, :3, 3] + decoded.extrinsics[view, :3, 2]
        centre, _ = project_points(decoded[view], ahead[None])
        assert torch.allclose(centre[0], decoded.intrinsics[view, :2, 2], atol=1e-5)


def test_opengl_to_opencv_reprojects_points_correctly() -> None:
    cameras = random_cameras(2, seed=2)
    points = torch.randn(10, 3, generator=torch.Generator().manual_seed(3)) * 0.3
    opengl = opencv_to_opengl(cameras.extrinsics)
    assert torch.allclose(opengl_to_opencv(opengl), cameras.extrinsics)
    # In OpenGL camera space a visible point has negative z and its image y grows upwards.
    for view in range(2):
        local = (points - opengl[view, :3, 3]) @ opengl[view, :3, :3]
        assert bool((local[:, 2] < 0).all())
        fx, fy, cx, cy = 0.9, 1.2, 0.48, 0.53
        u = cx + fx * local[:, 0] / -local[:, 2]
        v = cy - fy * local[:, 1] / -local[:, 2]
        uv, _ = project_points(Cameras(opengl_to_opencv(opengl[view]), cameras.intrinsics[view]), points)
        assert torch.allclose(uv, torch.stack([u, v], -1), atol=1e-5)


def test_intrinsics_normalisation_round_trip() -> None:
    k = torch.tensor([[500.0, 0.0, 320.0], [0.0, 510.0, 180.0], [0.0, 0.0, 1.0]])
    normalised = normalize_intrinsics(k, 640, 360)
    assert torch.allclose(normalised[:2, 2], torch.tensor([0.5, 0.5]))
    assert torch.allclose(denormalize_intrinsics(normalised, 640, 360), k)


def test_unproject_inverts_project_and_matches_rays() -> None:
    cameras = random_cameras(2)
    origins, directions = ray_bundle(cameras, 4, 6)
    depth = torch.rand(2, 24) + 0.5
    z_factor = (directions.reshape(2, 24, 3) * cameras.extrinsics[:, None, :3, 2]).sum(-1)
    points = origins.reshape(2, 24, 3) + directions.reshape(2, 24, 3) * (depth / z_factor)[..., None]
    uv, projected_depth = project_points(cameras, points)
    assert torch.allclose(projected_depth, depth, atol=1e-5)
    assert torch.allclose(unproject_points(cameras, uv, projected_depth), points, atol=1e-4)
    j = torch.arange(6).repeat(4)
    assert torch.allclose(uv[0, :, 0], (j + 0.5) / 6, atol=1e-5)


def test_make_relative_preserves_reprojection() -> None:
    cameras = random_cameras(4)
    relative = make_relative(cameras, 2)
    assert torch.allclose(relative.extrinsics[2], torch.eye(4), atol=1e-5)
    points = torch.randn(8, 3, generator=torch.Generator().manual_seed(4)) * 0.3
    # the same points expressed in the reference camera frame project identically
    moved = (points - cameras.extrinsics[2, :3, 3]) @ cameras.extrinsics[2, :3, :3]
    for view in range(4):
        assert torch.allclose(project_points(cameras[view], points)[0], project_points(relative[view], moved)[0],
                              atol=1e-4)
    batched = make_relative(Cameras(cameras.extrinsics[None].repeat(2, 1, 1, 1), cameras.intrinsics[None].repeat(2, 1, 1, 1)),
                            torch.tensor([2, 0]))
    assert torch.allclose(batched.extrinsics[0], relative.extrinsics, atol=1e-5)
    assert torch.allclose(batched.extrinsics[1, 0], torch.eye(4), atol=1e-5)


def test_normalize_scene_scale_sets_the_context_spread_and_keeps_reprojection() -> None:
    cameras = make_relative(random_cameras(5), 0)
    batch = Cameras(cameras.extrinsics[None], cameras.intrinsics[None])
    # A textbook spread: two cameras 2 apart have spread 1 (each is 1 from their midpoint).
    pair = Cameras(torch.eye(4).repeat(2, 1, 1), cameras.intrinsics[:2])
    pair.extrinsics[1, 0, 3] = 2.0
    assert torch.allclose(camera_spread(pair), torch.tensor(1.0))
    scaled = normalize_scene_scale(batch, batch[:, :3], 0.25)
    assert torch.allclose(camera_spread(scaled[:, :3]), torch.tensor([0.25]), atol=1e-6)
    factor = 0.25 / camera_spread(batch[:, :3])
    # Every translation (context and the other views) scales by the same factor; rotations,
    # intrinsics and the reference identity stay; a point scaled with the world reprojects the same.
    assert torch.allclose(scaled.extrinsics[..., :3, 3], batch.extrinsics[..., :3, 3] * factor[:, None, None])
    assert torch.equal(scaled.extrinsics[..., :3, :3], batch.extrinsics[..., :3, :3])
    assert torch.equal(scaled.intrinsics, batch.intrinsics)
    assert torch.allclose(scaled.extrinsics[0, 0], torch.eye(4), atol=1e-6)
    points = torch.randn(6, 3, generator=torch.Generator().manual_seed(1)) * 0.3
    for view in range(5):
        assert torch.allclose(project_points(batch[0, view], points)[0],
                              project_points(scaled[0, view], points * factor[0])[0], atol=1e-4)
    # The inputs are not modified, and a context without a baseline is left alone.
    assert torch.equal(batch.extrinsics[0], cameras.extrinsics)
    still = Cameras(torch.eye(4).repeat(1, 3, 1, 1), cameras.intrinsics[None, :3])
    assert torch.equal(normalize_scene_scale(still, still, 1.0).extrinsics, still.extrinsics)
    single = normalize_scene_scale(batch, batch[:, :1], 1.0)
    assert torch.equal(single.extrinsics, batch.extrinsics)


def test_crop_shim_keeps_points_on_the_same_pixels() -> None:
    # a camera with an off-centre principal point, cropped from 360x640 to 2 targets
    for output in [(256, 256), (24, 40)]:
        plan = plan_crop((360, 640), output)
        k = torch.tensor([[0.8, 0.0, 0.45], [0.0, 1.4, 0.56], [0.0, 0.0, 1.0]])
        cropped = crop_intrinsics(k, plan)
        camera = Cameras(torch.eye(4), k)
        points = torch.tensor([[0.1, -0.05, 2.0], [0.3, 0.2, 3.0]])
        uv, _ = project_points(camera, points)
        resized_pixels = uv * torch.tensor([plan.resized[1], plan.resized[0]])
        expected = resized_pixels - torch.tensor([plan.offset[1], plan.offset[0]])
        uv_crop, _ = project_points(Cameras(torch.eye(4), cropped), points)
        assert torch.allclose(uv_crop * torch.tensor([output[1], output[0]]), expected, atol=1e-3)
    assert plan_crop((360, 640), (256, 256)).resized == (256, 455)


def test_rescale_and_crop_tensor_moves_a_marker_where_the_intrinsics_say() -> None:
    image = torch.zeros(1, 3, 60, 80)
    image[..., 30:32, 60:62] = 1.0  # marker around pixel centre (31, 61)
    k = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    out, cropped = rescale_and_crop(image, k, (30, 30))
    assert out.shape == (1, 3, 30, 30) and torch.equal(image[..., 30, 60], torch.ones(1, 3))
    marker_uv = torch.tensor([61.0 / 80, 31.0 / 60])  # marker centre, normalised
    point = torch.cat([(marker_uv - 0.5), torch.ones(1)])  # ray through it for K with f=1, c=.5
    uv, _ = project_points(Cameras(torch.eye(4), cropped), point[None])
    pixel = (uv[0] * 30).floor().long()
    assert float(out[0, 0, pixel[1], pixel[0]]) > 0.3


def test_slerp_and_spline_interpolate_through_keys() -> None:
    keys = look_at(torch.tensor([[0.0, 0, -2], [2.0, 0, 0], [0.0, 1, 2]]), torch.zeros(3, 3))
    path = interpolate_poses(keys, 9)
    assert path.shape == (9, 4, 4)
    assert torch.allclose(path[0], keys[0], atol=1e-5) and torch.allclose(path[-1], keys[-1], atol=1e-5)
    assert torch.allclose(path[4], keys[1], atol=1e-5)  # keys sit at linspace positions
    rotations = path[:, :3, :3]
    assert torch.allclose(rotations.transpose(1, 2) @ rotations, torch.eye(3).expand(9, 3, 3), atol=1e-5)
    q0, q1 = torch.tensor([1.0, 0, 0, 0]), torch.tensor([math.cos(0.5), math.sin(0.5), 0, 0])
    middle = slerp(q0, q1, torch.tensor(0.5))
    assert torch.allclose(middle, torch.tensor([math.cos(0.25), math.sin(0.25), 0, 0]), atol=1e-6)
    cameras = Cameras(keys, torch.eye(3).expand(3, 3, 3).clone())
    assert spline_through_cameras(cameras, 5).shape == (5,)


def test_orbit_looks_at_its_centre() -> None:
    centre = torch.tensor([1.0, 2.0, 3.0])
    poses = orbit(centre, 2.0, 8, height=0.5)
    uv, depth = project_points(Cameras(poses, torch.eye(3).expand(8, 3, 3)), centre.expand(8, 1, 3))
    assert torch.allclose(uv, torch.zeros(8, 1, 2), atol=1e-5)
    assert bool((depth > 0).all())
    distances = torch.linalg.vector_norm(poses[:, :3, 3] - centre, dim=-1)
    assert torch.allclose(distances, torch.full((8,), math.hypot(2.0, 0.5)), atol=1e-5)
