"""``scenetok generate``: sample a scene's tokens from one to three images, render a video, and
save the tokens so ``scenetok render --tokens FILE`` can render them again.

Cameras. Everything is expressed relative to conditioning image 0 (identity pose). Without
``--cameras FILE`` the anchors (the cameras the generated scene must explain) come from a
*template*: the context cameras of a held-out scene of the frozen SceneTok's dataset, relative to
its first context view, so their spacing matches what SceneTok was trained on; image 0 gets the
template's intrinsics, and the rendered path is a spline through the anchors or an orbit around
the point they look at (:func:`scenetok.render.trajectory_cameras`).

A camera file is JSON (OpenCV camera-to-world 4x4, intrinsics normalised by image size)::

    {"conditioning": [{"extrinsics": [[...]], "intrinsics": [[...]]}, ...],   # one per image
     "anchors":      [{"extrinsics": ..., "intrinsics": ...}, ...],
     "trajectory":   [...]}                                                    # optional

Poses may be in any world frame; they are made relative to conditioning image 0. The
conditioning intrinsics describe the images as given: they are corrected for the resize and
centre crop to the model's image size, exactly like the datasets do.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from scenetok.geometry.crop import crop_intrinsics, plan_crop, rescale_and_crop_pil
from scenetok.render import trajectory_cameras
from scenetok.render_io import write_frames, write_video
from scenetok.scenegen.core import relative_to_first_condition
from scenetok.types import Cameras, Views

log = logging.getLogger(__name__)

#: File written next to the frames: the generated tokens and everything needed to re-render them.
TOKENS_FILE = "tokens.safetensors"


class SceneGenInputError(ValueError):
    """A user input of ``scenetok generate`` is unusable; the message is one line naming it."""


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def load_condition_images(paths: list[str | Path], image_size: tuple[int, int], max_images: int = 3
                          ) -> tuple[Tensor, list[Any]]:
    """Images ``(V, 3, H, W)`` in ``[0, 1]``, resized and centre-cropped to ``image_size`` as the
    datasets do, plus each image's :class:`~scenetok.geometry.crop.CropPlan` (for intrinsics)."""
    if not paths:
        raise SceneGenInputError("give at least one conditioning image (--images a.png)")
    if len(paths) > max_images:
        raise SceneGenInputError(f"got {len(paths)} conditioning images; this generator takes at most {max_images}")
    images, plans = [], []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise SceneGenInputError(f"{path}: no such image file")
        try:
            with Image.open(path) as image:
                image.load()
                plan = plan_crop((image.height, image.width), image_size)
                images.append(rescale_and_crop_pil(image, plan))
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise SceneGenInputError(f"{path}: not a readable image ({str(error).splitlines()[0]})") from None
        plans.append(plan)
    return torch.stack(images), plans


def _cameras_from_json(entries: Any, key: str, path: Path) -> Cameras:
    if not isinstance(entries, list) or not entries:
        raise SceneGenInputError(f"{path}: {key!r} must be a non-empty list of cameras")
    extrinsics, intrinsics = [], []
    for i, entry in enumerate(entries):
        try:
            e = torch.tensor(entry["extrinsics"], dtype=torch.float32)
            k = torch.tensor(entry["intrinsics"], dtype=torch.float32)
        except (KeyError, TypeError, ValueError) as error:
            raise SceneGenInputError(f"{path}: {key}[{i}] needs 'extrinsics' (4x4) and 'intrinsics' (3x3): "
                                     f"{error}") from None
        if e.shape != (4, 4) or k.shape != (3, 3) or not (torch.isfinite(e).all() and torch.isfinite(k).all()):
            raise SceneGenInputError(f"{path}: {key}[{i}] must hold a finite 4x4 'extrinsics' and 3x3 'intrinsics', "
                                     f"got {tuple(e.shape)} and {tuple(k.shape)}")
        extrinsics.append(e)
        intrinsics.append(k)
    return Cameras(torch.stack(extrinsics), torch.stack(intrinsics))


def read_camera_file(path: str | Path) -> dict[str, Cameras]:
    """``{"conditioning", "anchors"[, "trajectory"]}`` cameras (batch shape ``(V,)``) from JSON."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SceneGenInputError(f"{path}: no such camera file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SceneGenInputError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise SceneGenInputError(f"{path}: expected a JSON object with 'conditioning' and 'anchors'")
    unknown = set(data) - {"conditioning", "anchors", "trajectory"}
    if unknown:
        raise SceneGenInputError(f"{path}: unknown keys {sorted(unknown)}; expected conditioning, anchors, trajectory")
    out = {key: _cameras_from_json(data.get(key), key, path) for key in ("conditioning", "anchors")}
    if "trajectory" in data:
        out["trajectory"] = _cameras_from_json(data["trajectory"], "trajectory", path)
    return out


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------


@dataclass
class GenerationRequest:
    """Everything one generation needs, cameras relative to conditioning view 0 (batch ``(V,)``).

    Attributes:
        images: ``(Vc, 3, H, W)`` conditioning images in ``[0, 1]``.
        cond_cameras: their cameras ``(Vc,)``.
        anchors: anchor cameras ``(Va,)``.
        trajectory: cameras to render ``(V,)``.
    """

    images: Tensor
    cond_cameras: Cameras
    anchors: Cameras
    trajectory: Cameras


def make_request(images: Tensor, plans: list[Any], *, camera_file: dict[str, Cameras] | None,
                 template: Cameras | None, trajectory: str, frames: int,
                 scene_scale: float = 0.0) -> GenerationRequest:
    """Cameras for ``images`` from a camera file or from the template anchors (module docstring),
    relative to the first image and scaled to ``scene_scale`` (the SceneTok's) when it is > 0."""
    views = images.shape[0]
    if camera_file is None:
        if views > 1:
            raise SceneGenInputError(f"{views} images need their poses: pass --cameras FILE "
                                     "(one image can use the template cameras)")
        cond = Cameras(torch.eye(4)[None], template.intrinsics[:1].clone())
        anchors = template
    else:
        cond = camera_file["conditioning"]
        if int(cond.shape[0]) != views:
            raise SceneGenInputError(f"the camera file has {int(cond.shape[0])} conditioning cameras for {views} images")
        cond = Cameras(cond.extrinsics, torch.stack([crop_intrinsics(k, plan) for k, plan in
                                                     zip(cond.intrinsics, plans)]))
        anchors = camera_file["anchors"]
    given_path = camera_file.get("trajectory") if camera_file else None
    # Relativise conditioning, anchors and the given path in one go (one reference).
    extra = [given_path] if given_path is not None else []
    rel_cond, rel_rest = relative_to_first_condition(
        Cameras(cond.extrinsics[None], cond.intrinsics[None]),
        Cameras.cat([Cameras(c.extrinsics[None], c.intrinsics[None]) for c in [anchors, *extra]]),
        scene_scale, num_anchors=int(anchors.shape[0]))
    anchors = rel_rest[0, : int(anchors.shape[0])]
    if given_path is not None:
        path = rel_rest[0, int(anchors.shape[0]):]
    else:
        path = trajectory_cameras(trajectory, anchors, frames)
    return GenerationRequest(images=images, cond_cameras=rel_cond[0], anchors=anchors, trajectory=path)


@torch.no_grad()
def generate_scene(model: Any, request: GenerationRequest, *, steps: int | None, guidance: float | None,
                   seed: int, render_kwargs: dict[str, Any] | None = None, progress: bool = False
                   ) -> tuple[Tensor, Tensor]:
    """Sample tokens ``(N, D)`` for ``request`` with ``model`` (a :class:`~scenetok.scenegen.model.SceneGen`)
    and render its trajectory: returns ``(tokens, frames (V, 3, H, W))``. Deterministic in ``seed``:
    the token noise and the render noise come from two generators seeded from it."""
    device = next(model.generator.parameters()).device
    cond = Views(images=request.images[None].to(device),
                 cameras=Cameras(request.cond_cameras.extrinsics[None], request.cond_cameras.intrinsics[None]).to(device),
                 indices=torch.arange(request.images.shape[0])[None])
    anchors = Cameras(request.anchors.extrinsics[None], request.anchors.intrinsics[None]).to(device)
    tokens = model.generate_tokens(cond, anchors, guidance=guidance, steps=steps,
                                   generator=torch.Generator().manual_seed(seed), progress=progress)[0]
    frames = render_tokens(model.scenetok, tokens, request.trajectory, seed=seed, render_kwargs=render_kwargs)
    return tokens, frames


@torch.no_grad()
def render_tokens(scenetok: Any, tokens: Tensor, cameras: Cameras, *, seed: int,
                  render_kwargs: dict[str, Any] | None = None) -> Tensor:
    """Render ``cameras`` ``(V,)`` from ``tokens`` ``(N, D)`` with the render noise seeded by
    ``seed`` (the same call :func:`generate_scene` and ``render --tokens`` make): ``(V, 3, H, W)``."""
    device = tokens.device
    target = Cameras(cameras.extrinsics[None], cameras.intrinsics[None]).to(device)
    frames = scenetok.render(tokens[None], target, generator=torch.Generator().manual_seed(seed + 1),
                             **(render_kwargs or {}))
    return frames[0].cpu()


def write_tokens(path: str | Path, tokens: Tensor, trajectory: Cameras, metadata: dict[str, Any]) -> Path:
    """Save tokens ``(N, D)`` and the trajectory cameras as safetensors (metadata as JSON strings)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"tokens": tokens.detach().cpu().float().contiguous(),
               "trajectory.extrinsics": trajectory.extrinsics.cpu().float().contiguous(),
               "trajectory.intrinsics": trajectory.intrinsics.cpu().float().contiguous()},
              str(path), metadata={key: json.dumps(value) for key, value in metadata.items()})
    return path


def read_tokens(path: str | Path) -> tuple[Tensor, Cameras, dict[str, Any]]:
    """``(tokens (N, D), trajectory cameras (V,), metadata)`` from :func:`write_tokens`' file."""
    path = Path(path)
    if not path.is_file():
        raise SceneGenInputError(f"{path}: no such tokens file")
    try:
        with safe_open(str(path), "pt") as handle:
            keys = set(handle.keys())
            missing = {"tokens", "trajectory.extrinsics", "trajectory.intrinsics"} - keys
            if missing:
                raise SceneGenInputError(f"{path}: not a scenetok tokens file (missing {sorted(missing)})")
            tokens = handle.get_tensor("tokens")
            cameras = Cameras(handle.get_tensor("trajectory.extrinsics"), handle.get_tensor("trajectory.intrinsics"))
            metadata = {k: json.loads(v) for k, v in (handle.metadata() or {}).items()}
    except (SafetensorError, OSError, json.JSONDecodeError) as error:
        raise SceneGenInputError(f"{path}: unreadable tokens file ({error})") from None
    if tokens.ndim != 2:
        raise SceneGenInputError(f"{path}: tokens must be (N, D), got {tuple(tokens.shape)}")
    return tokens, cameras, metadata


def write_outputs(out_dir: str | Path, frames: Tensor, tokens: Tensor, trajectory: Cameras, images: Tensor,
                  metadata: dict[str, Any], fps: float) -> dict[str, Path]:
    """``frames/frame_XXXX.png``, ``render.mp4`` (GIF fallback), ``conditioning/``, ``tokens.safetensors``."""
    out = Path(out_dir)
    write_frames(frames, out / "frames", prefix="frame")
    write_frames(images, out / "conditioning", prefix="image")
    video = write_video(frames, out / "render.mp4", fps=fps)
    tokens_path = write_tokens(out / TOKENS_FILE, tokens, trajectory, metadata)
    return {"frames": out / "frames", "video": video, "tokens": tokens_path}
