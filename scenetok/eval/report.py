"""Evaluation reports: ``eval.json``, ``eval.md`` and a labelled comparison grid PNG.

``results`` is what :meth:`scenetok.eval.metrics.MetricSuite.compute` returns; ``metadata`` is
whatever identifies the run (recipe name, checkpoint, step, evaluation index, sampler steps...).
Which metrics were unavailable and why, and which LPIPS / FID backbone produced the numbers, are
copied into every file so that tables from different machines are never mixed up silently.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from scenetok.render_io import frames_to_uint8
from scenetok.types import SceneBatch

EVAL_JSON = "eval.json"
EVAL_MD = "eval.md"
GRID_PNG = "eval_grid.png"

# column title, key, "higher is better"
_COLUMNS = (("PSNR", "psnr", True), ("SSIM", "ssim", True), ("LPIPS", "lpips", False))


@dataclass
class ReportExample:
    """One scene shown in the comparison grid (images ``(V, 3, H, W)`` in ``[0, 1]``).

    Attributes:
        scene: scene key, used as the block title.
        context: context views ``(V_c, 3, H, W)``.
        prediction: the model's target views ``(V_t, 3, H, W)``, or ``None`` (baselines-only runs:
            the row is left out).
        target: ground-truth target views ``(V_t, 3, H, W)``.
        baselines: optional baseline predictions by name, each ``(V_t, 3, H, W)``.
    """

    scene: str
    context: Tensor
    prediction: Tensor | None
    target: Tensor
    baselines: dict[str, Tensor] = field(default_factory=dict)


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats by the strings "inf" / "-inf" / "nan" (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def build_report(results: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``eval.json`` content: metadata, metric availability, and per-method results."""
    metric_info = dict(results.get("metrics", {}))
    unavailable = {
        name: info.get("reason") for name, info in metric_info.items() if not info.get("available", True)
    }
    return _json_safe(
        {
            "metadata": dict(metadata or {}),
            "metrics": metric_info,
            "unavailable_metrics": unavailable,
            "methods": dict(results.get("methods", {})),
        }
    )


def _format(value: Any, digits: int) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}"


def format_markdown(report: Mapping[str, Any]) -> str:
    """A markdown summary of :func:`build_report`'s output: mean table, per-scene table, notes."""
    methods: Mapping[str, Any] = report.get("methods", {})
    lines = ["# Evaluation", ""]
    metadata = report.get("metadata", {})
    if metadata:
        lines += [f"- **{key}**: {value}" for key, value in metadata.items()] + [""]

    header = (
        "| method | "
        + " | ".join(f"{t} {'↑' if up else '↓'}" for t, _, up in _COLUMNS)
        + " | FID ↓ | frames | scenes |"
    )
    lines += ["## Mean over all frames", "", header, "|" + "---|" * (len(_COLUMNS) + 4)]
    for method, entry in methods.items():
        mean = entry.get("mean", {})
        cells = [_format(mean.get(key), 4 if key != "psnr" else 2) for _, key, _ in _COLUMNS]
        lines.append(
            f"| {method} | " + " | ".join(cells) + f" | {_format(entry.get('fid'), 2)} | "
            f"{mean.get('num_frames', 0)} | {mean.get('num_scenes', 0)} |"
        )

    scenes = sorted({scene for entry in methods.values() for scene in entry.get("per_scene", {})})
    if scenes and methods:
        lines += ["", "## Per scene (PSNR / SSIM / LPIPS)", ""]
        lines.append("| scene | " + " | ".join(methods) + " |")
        lines.append("|" + "---|" * (len(methods) + 1))
        for scene in scenes:
            cells = []
            for entry in methods.values():
                values = entry.get("per_scene", {}).get(scene)
                cells.append(
                    "–"
                    if values is None
                    else " / ".join(_format(values.get(k), 2 if k == "psnr" else 3) for _, k, _ in _COLUMNS)
                )
            lines.append(f"| {scene} | " + " | ".join(cells) + " |")

    notes = []
    for name, info in report.get("metrics", {}).items():
        if not info.get("available", True):
            notes.append(f"- {name.upper()} unavailable: {info.get('reason')}")
        elif info.get("backbone"):
            notes.append(f"- {name.upper()} backbone: {info['backbone']}")
    if notes:
        lines += ["", "## Notes", ""] + notes
    return "\n".join(lines) + "\n"


def _even_indices(count: int, limit: int) -> list[int]:
    if count <= limit:
        return list(range(count))
    return [round(i * (count - 1) / (limit - 1)) for i in range(limit)] if limit > 1 else [0]


def write_comparison_grid(
    examples: Sequence[ReportExample],
    path: str | os.PathLike[str],
    *,
    max_frames: int = 4,
    tile_height: int = 128,
) -> Path:
    """A labelled PNG: per scene a title bar, then rows context | prediction | ground truth | baselines.

    Up to ``max_frames`` evenly spaced frames per row; prediction, ground truth and baselines show
    the same frame indices so columns line up. Small frames are upscaled with nearest-neighbour
    (pixels stay visible rather than being smoothed).
    """
    from PIL import Image, ImageDraw, ImageFont

    if not examples:
        raise ValueError("no examples to draw")
    font = ImageFont.load_default(size=14)
    label_width, title_height, gap = 120, 22, 4

    def tiles(frames: Tensor, indices: list[int]) -> list[Image.Image]:
        array = frames_to_uint8(frames[indices])
        height, width = array.shape[1:3]
        tile_width = max(1, round(width * tile_height / height))
        resample = Image.Resampling.NEAREST if tile_height >= height else Image.Resampling.LANCZOS
        return [Image.fromarray(a).resize((tile_width, tile_height), resample) for a in array]

    blocks: list[tuple[str, list[tuple[str, list[Image.Image]]]]] = []
    for example in examples:
        target_indices = _even_indices(example.target.shape[0], max_frames)
        rows = [
            ("context", tiles(example.context, _even_indices(example.context.shape[0], max_frames))),
        ]
        if example.prediction is not None:
            rows.append(("prediction", tiles(example.prediction, target_indices)))
        rows.append(("ground truth", tiles(example.target, target_indices)))
        rows += [(name, tiles(frames, target_indices)) for name, frames in example.baselines.items()]
        blocks.append((example.scene, rows))

    width = label_width + max(sum(t.width + gap for t in row) for _, rows in blocks for _, row in rows)
    height = sum(title_height + len(rows) * (tile_height + gap) + gap for _, rows in blocks)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    for scene, rows in blocks:
        draw.rectangle([0, y, width, y + title_height - 2], fill=(40, 40, 40))
        draw.text((6, y + 3), f"scene {scene}", fill="white", font=font)
        y += title_height
        for label, row in rows:
            draw.text((6, y + tile_height // 2 - 8), label, fill="black", font=font)
            x = label_width
            for tile in row:
                canvas.paste(tile, (x, y))
                x += tile.width + gap
            y += tile_height + gap
        y += gap
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


def write_grid(
    path: str | os.PathLike[str],
    batch: SceneBatch,
    predictions: Mapping[str, Tensor],
    *,
    max_scenes: int = 4,
    max_frames: int = 4,
) -> Path:
    """Comparison grid straight from a batch (e.g. validation images during training).

    Args:
        path: output PNG.
        batch: scenes with context and target images.
        predictions: ``(B, V_t, 3, H, W)`` per method; ``"model"`` is drawn as the prediction row,
            every other entry as a labelled row below the ground truth.
        max_scenes: at most this many scenes of the batch are drawn.
    """
    if batch.context.images is None or batch.target.images is None:
        raise ValueError("write_grid needs context and target images in the batch")
    scenes = batch.scenes or [str(i) for i in range(batch.batch_size)]
    examples = [
        ReportExample(
            scene=scene,
            context=batch.context.images[i],
            prediction=predictions["model"][i] if "model" in predictions else None,
            target=batch.target.images[i],
            baselines={name: value[i] for name, value in predictions.items() if name != "model"},
        )
        for i, scene in enumerate(scenes[:max_scenes])
    ]
    return write_comparison_grid(examples, path, max_frames=max_frames)


def write_eval_report(
    out_dir: str | os.PathLike[str],
    results: Mapping[str, Any],
    *,
    metadata: Mapping[str, Any] | None = None,
    examples: Sequence[ReportExample] | None = None,
    max_frames: int = 4,
) -> dict[str, Path]:
    """Write ``eval.json``, ``eval.md`` and (with ``examples``) ``eval_grid.png`` into ``out_dir``.

    Returns:
        ``{"json": ..., "markdown": ..., "grid": ...}`` (``grid`` only when examples were given).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(results, metadata)
    written = {"json": out / EVAL_JSON, "markdown": out / EVAL_MD}
    written["json"].write_text(json.dumps(report, indent=2, allow_nan=False))
    written["markdown"].write_text(format_markdown(report))
    if examples:
        written["grid"] = write_comparison_grid(examples, out / GRID_PNG, max_frames=max_frames)
    return written


__all__ = [
    "ReportExample",
    "build_report",
    "format_markdown",
    "write_comparison_grid",
    "write_grid",
    "write_eval_report",
    "EVAL_JSON",
    "EVAL_MD",
    "GRID_PNG",
]
