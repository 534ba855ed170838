"""Writing rendered frames to disk: PNG sequences, an MP4 (GIF fallback), and loss curves.

Frames are ``(V, 3, H, W)`` float tensors in ``[0, 1]`` (values outside are clamped; they are
rounded, not truncated, to 8 bits).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)


def frames_to_uint8(frames: Tensor) -> np.ndarray:
    """``(V, 3, H, W)`` in ``[0, 1]`` -> ``(V, H, W, 3)`` uint8 numpy (a copy)."""
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (V, 3, H, W), got {tuple(frames.shape)}")
    as_bytes = (frames.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)
    return as_bytes.permute(0, 2, 3, 1).cpu().numpy().copy()


def write_frames(frames: Tensor, out_dir: str | os.PathLike[str], prefix: str = "frame") -> list[Path]:
    """Write ``<out_dir>/<prefix>_0000.png, ...``; returns the paths in frame order."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, frame in enumerate(frames_to_uint8(frames)):
        path = out / f"{prefix}_{index:04d}.png"
        Image.fromarray(frame).save(path)
        paths.append(path)
    return paths


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    # H.264 with yuv420p needs even sizes; replicate the last row/column instead of resizing.
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def _write_mp4(frames: np.ndarray, path: Path, fps: float) -> None:
    import imageio.v2 as imageio

    writer = imageio.get_writer(
        path,
        format="FFMPEG",
        mode="I",
        fps=fps,
        codec="libx264",
        pixelformat="yuv420p",
        quality=8,
        macro_block_size=1,
    )
    try:
        for frame in _pad_to_even(frames):
            writer.append_data(frame)
    finally:
        writer.close()


def _write_gif(frames: np.ndarray, path: Path, fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(
        path,
        save_all=True,
        append_images=images[1:],
        duration=max(1, round(1000.0 / fps)),
        loop=0,
        optimize=False,
    )


def video_encoder_available() -> bool:
    """Whether an MP4 encoder (imageio-ffmpeg's bundled ffmpeg) is installed."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def write_video(frames: Tensor, path: str | os.PathLike[str], fps: float = 24.0) -> Path:
    """Write an MP4 (H.264) of ``frames`` ``(V, 3, H, W)``; a GIF next to it if MP4 is impossible.

    MP4 needs ``imageio-ffmpeg`` (a dependency of scenetok, which ships an ffmpeg binary). If it is
    missing anyway, or encoding fails, the frames are written as ``<path stem>.gif`` instead. The log says
    which encoder was used.

    Returns:
        The path actually written (``.mp4`` or ``.gif``).
    """
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    array = frames_to_uint8(frames)
    if target.suffix.lower() == ".gif":
        _write_gif(array, target, fps)
        logger.info("wrote %s (GIF, %d frames)", target, len(array))
        return target
    if video_encoder_available():
        try:
            _write_mp4(array, target, fps)
            logger.info("wrote %s (MP4 via imageio-ffmpeg / libx264, %d frames)", target, len(array))
            return target
        except (ImportError, OSError, RuntimeError, ValueError) as error:
            logger.warning("MP4 encoding of %s failed (%s); writing a GIF instead", target, error)
            target.unlink(missing_ok=True)
    else:
        logger.warning("imageio-ffmpeg is not installed; writing a GIF instead of %s", target)
    gif = target.with_suffix(".gif")
    _write_gif(array, gif, fps)
    logger.info("wrote %s (GIF fallback, %d frames)", gif, len(array))
    return gif


def read_metrics_jsonl(path: str | os.PathLike[str]) -> list[dict]:
    """Records of a ``metrics.jsonl`` (one JSON object per line); unreadable lines (e.g. the last
    line of a killed run) are skipped with a warning."""
    records = []
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d is not valid JSON; skipped", path, number)
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def loss_curve_png(
    metrics_jsonl_path: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    keys: Sequence[str] | None = None,
    step_key: str = "step",
) -> Path:
    """Plot training curves from a metrics JSONL file to a PNG.

    Args:
        metrics_jsonl_path: lines like ``{"step": 10, "loss": 0.3, "lr": 1e-4, ...}``.
        out_png: output image path.
        keys: numeric keys to plot, one panel each; default: every key containing ``"loss"``,
            plus the loss terms ``"mse"`` and ``"kl"`` and ``"lr"`` if present (not the KL weight,
            a schedule that is usually constant). Panels whose values are all positive and
            span more than a decade use a log scale; loss panels with more than 100 points get a running mean
            over the faint raw curve.
        step_key: the x-axis key.
    """
    # A bare Figure renders with Agg and never touches pyplot's global backend or figure list.
    from scenetok.data.preview import quiet_matplotlib  # lazy: keeps render_io free of the data layer

    quiet_matplotlib()
    from matplotlib.figure import Figure

    records = [r for r in read_metrics_jsonl(metrics_jsonl_path) if isinstance(r.get(step_key), (int, float))]
    numeric = sorted(
        {
            k
            for r in records
            for k, v in r.items()
            if k != step_key and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    )
    if keys is None:
        keys = [k for k in numeric if "loss" in k] + [k for k in ("mse", "kl", "lr") if k in numeric]
    if not keys:
        raise ValueError(f"{metrics_jsonl_path}: nothing to plot (numeric keys: {numeric})")

    figure = Figure(figsize=(7, 2.4 * len(keys)))
    axes = figure.subplots(len(keys), 1, sharex=True, squeeze=False)
    for axis, key in zip(axes[:, 0], keys):
        points = [
            (r[step_key], r[key])
            for r in records
            if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
        ]
        if points:
            steps, values = zip(*points)
            if len(values) > 100 and "loss" in key:
                # training losses are noisy: faint raw curve plus a centred running mean
                window = len(values) // 50
                smooth = np.convolve(values, np.ones(window) / window, mode="valid")
                axis.plot(steps, values, linewidth=0.6, alpha=0.3, color="C0")
                axis.plot(steps[window // 2 : window // 2 + len(smooth)], smooth, linewidth=1.2, color="C0")
            else:
                axis.plot(steps, values, linewidth=1.0, color="C0")
            if min(values) > 0 and max(values) / min(values) > 10:
                axis.set_yscale("log")
        axis.set_ylabel(key)
        axis.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel(step_key)
    figure.suptitle(Path(metrics_jsonl_path).parent.name or "training")
    figure.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    return out
