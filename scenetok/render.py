"""Render camera paths from a trained SceneTok (``scenetok render``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch

from scenetok.geometry.trajectories import orbit, spline_through_cameras
from scenetok.data.dataset import build_dataset
from scenetok.data.view_sampling import sample_evaluation_views, stable_seed
from scenetok.model import SceneTok
from scenetok.render_io import write_frames, write_video
from scenetok.types import Cameras, SceneBatch, Views, views_from_sample

log = logging.getLogger(__name__)


def trajectory_cameras(kind: str, context: Cameras, frames: int, dataset_targets: Cameras | None = None) -> Cameras:
    """Target cameras ``(V,)`` for a trajectory ``kind`` in the frame of ``context`` ``(V_c,)``.

    * ``spline``: a smooth path through the context poses (slerp rotations, spline centres).
    * ``orbit``: a circle around the point the context cameras look at, at their mean distance.
    * ``targets``: the dataset's own target frames (``dataset_targets``).
    """
    if kind == "spline":
        return spline_through_cameras(context, frames)
    if kind == "orbit":
        centers = context.centers
        forward = context.extrinsics[:, :3, 2]
        # The point the cameras look at: least-squares intersection of their optical axes.
        eye = torch.eye(3, dtype=centers.dtype)
        projectors = eye - forward[:, :, None] * forward[:, None, :]
        focus = torch.linalg.lstsq(projectors.sum(0), (projectors @ centers[:, :, None]).sum(0)).solution[:, 0]
        radius = float((centers - focus).norm(dim=-1).mean().clamp(min=1e-3))
        up = -context.extrinsics[:, :3, 1].mean(0)  # OpenCV: +y is down in each camera
        extrinsics = orbit(focus, radius, frames, up=tuple(torch.nn.functional.normalize(up, dim=0).tolist()))
        intrinsics = context.intrinsics[:1].expand(frames, 3, 3)
        return Cameras(extrinsics.to(centers.dtype), intrinsics)
    if kind == "targets":
        if dataset_targets is None:
            raise ValueError("trajectory 'targets' needs the dataset's target cameras")
        return dataset_targets
    raise ValueError(f"unknown trajectory {kind!r}; choose spline, orbit or targets")


def resize_for_viewing(frames: torch.Tensor, size: tuple[int, int] | list[int] | None = None,
                       upscale: int | None = None) -> torch.Tensor:
    """Frames ``(V, 3, H, W)`` in ``[0, 1]`` resized to ``size`` ``[H', W']`` (bilinear, antialiased
    when shrinking) or enlarged ``upscale`` times (nearest neighbour); unchanged when both are
    ``None``."""
    if size is not None and upscale is not None:
        raise ValueError("give either size or upscale, not both")
    if upscale is not None:
        if upscale < 1:
            raise ValueError(f"upscale must be a positive integer, got {upscale}")
        return torch.nn.functional.interpolate(frames, scale_factor=upscale, mode="nearest")
    if size is not None:
        height, width = (int(v) for v in size)
        if height < 1 or width < 1:
            raise ValueError(f"size must be two positive integers H W, got {list(size)}")
        return torch.nn.functional.interpolate(frames, size=(height, width), mode="bilinear", antialias=True,
                                               align_corners=False).clamp(0, 1)
    return frames


def render_run(run: str | Path, out_dir: str | Path | None = None, scene: str | None = None,
               trajectory: str | None = None, frames: int | None = None, overrides: Iterable[str] = (),
               progress: bool = True, deterministic: bool | None = None,
               size: tuple[int, int] | list[int] | None = None, upscale: int | None = None) -> Path:
    """``scenetok render``: encode one held-out scene and render a camera path to PNGs + MP4/GIF.

    Writes ``frames/frame_XXXX.png``, ``render.mp4`` (or ``render.gif``) and ``context.png`` into
    ``out_dir`` (default ``RUN/render``). ``size`` (``[H, W]``, bilinear) or ``upscale`` (an
    integer factor, nearest neighbour) resize what is written, for viewing; the model renders at
    its training size either way. Returns ``out_dir``.
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SceneTok.from_pretrained(run, overrides, device=device)
    recipe = model.recipe
    config = model.render_config
    trajectory = trajectory or config.trajectory
    frames = frames or config.frames
    deterministic = config.deterministic if deterministic is None else deterministic
    dataset = build_dataset(recipe, split=recipe.sections["eval"].split)
    scenes = dataset.scenes()
    if scene is None:
        scene = scenes[0]
    elif scene not in scenes:
        if scene.isdigit() and int(scene) < len(scenes):
            scene = scenes[int(scene)]
        else:
            raise ValueError(f"scene {scene!r} is not in the {recipe.sections['eval'].split!r} split "
                             f"(first scenes: {', '.join(scenes[:5])})")
    dataset_config = recipe["dataset"].config
    context_ids, target_ids = sample_evaluation_views(
        dataset.num_frames(scene), dataset_config.context_views,
        frames if trajectory == "targets" else dataset_config.target_views, seed=0, scene=scene)
    sample = dataset.load_selection(scene, context_ids, target_ids)
    context = views_from_sample(sample["context"])
    dataset_targets = None
    if trajectory == "targets":
        dataset_targets = Cameras(sample["target"]["extrinsics"], sample["target"]["intrinsics"])
    cameras = trajectory_cameras(trajectory, context.cameras[0], frames, dataset_targets)
    target = Views(images=None, cameras=Cameras(cameras.extrinsics[None], cameras.intrinsics[None]),
                   indices=torch.arange(frames)[None])
    batch = SceneBatch(context, target, [scene])
    generator = torch.Generator().manual_seed(stable_seed("render", scene) if deterministic else torch.seed())
    rendered = model.reconstruct(batch.to(device), deterministic=deterministic, generator=generator,
                                 progress=progress)[0].cpu()
    out = Path(out_dir) if out_dir else Path(run) / "render"
    rendered = resize_for_viewing(rendered, size=size, upscale=upscale)
    write_frames(rendered, out / "frames", prefix="frame")
    write_frames(resize_for_viewing(context.images[0], size=size, upscale=upscale), out / "context", prefix="context")
    video = write_video(rendered, out / "render.mp4", fps=config.fps)
    log.info("rendered %d frames of scene %s along a %s trajectory: %s", frames, scene, trajectory, video)
    return out
