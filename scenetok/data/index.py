"""Evaluation-index JSON files: which context and target frames of each scene an evaluation uses.

Schema (SceneTok ``assets/evaluation_index/*.json``, pixelSplat-compatible)::

    {"<scene key>": {"context": [int, ...], "target": [int, ...]}, ...}

Indices are positions in the scene's full frame list. Two variants found in published files are
read as well: ``null`` values (pixelSplat: scene unusable, skipped) and a *list* of
``{context, target}`` windows per scene (one entry per window, named ``<scene>#<i>``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scenetok.interfaces import SceneDataset

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationEntry:
    """One evaluation sample.

    Attributes:
        name: unique entry name (the scene key, or ``<scene>#<i>`` for multi-window files).
        scene: the scene key as written in the file.
        context: context frame indices.
        target: target frame indices.
    """

    name: str
    scene: str
    context: tuple[int, ...]
    target: tuple[int, ...]


def _entry(name: str, scene: str, value: object, path: Path) -> EvaluationEntry:
    if not isinstance(value, dict) or not {"context", "target"} <= set(value):
        raise ValueError(f"{path}: entry {name!r} must be an object with 'context' and 'target' lists")
    context, target = value["context"], value["target"]
    for field_name, indices in (("context", context), ("target", target)):
        if not isinstance(indices, list) or not indices or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indices
        ):
            raise ValueError(
                f"{path}: entry {name!r} field {field_name!r} must be a non-empty list of non-negative ints"
            )
    return EvaluationEntry(name=name, scene=scene, context=tuple(context), target=tuple(target))


def read_evaluation_index(path: str | os.PathLike) -> list[EvaluationEntry]:
    """Read an evaluation index; entries come back in file order. Raises ``ValueError`` naming the
    file and entry when the content does not follow the schema."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = json.loads(handle.read())
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError, deep nesting
        raise ValueError(f"{path}: not a valid evaluation index (JSON): {str(error)[:200]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an evaluation index must be a JSON object keyed by scene")
    entries: list[EvaluationEntry] = []
    nulls = 0
    for scene, value in data.items():
        if value is None:
            nulls += 1
        elif isinstance(value, list):
            entries.extend(_entry(f"{scene}#{i}", scene, v, path) for i, v in enumerate(value))
        else:
            entries.append(_entry(scene, scene, value, path))
    if nulls:
        logger.info("%s: %d scenes have null entries and are skipped", path, nulls)
    return entries


def save_evaluation_index(entries: dict[str, dict[str, list[int]]], out_path: str | os.PathLike) -> Path:
    """Write ``{scene: {"context": [...], "target": [...]}}`` atomically (temp file + rename)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out_path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(entries, handle, indent=1)
        temporary = Path(handle.name)
    temporary.replace(out_path)
    return out_path


def write_evaluation_index(
    dataset: SceneDataset,
    out_path: str | os.PathLike,
    context_views: int,
    target_views: int,
    seed: int = 0,
    *,
    context_sampling: str = "farthest",
) -> Path:
    """Write a deterministic evaluation index for every usable scene of ``dataset``.

    Per scene: the targets are one contiguous run of ``target_views`` frames at a random start; the
    context views are spread over the target range (endpoints included, interior by farthest-point
    sampling over poses or uniform), widened to at least ``context_views`` frames. Each scene's
    entry depends only on ``(seed, scene key, frame count, poses)``, so the file does not change
    when other scenes are added or removed. Scenes with too few frames are skipped with a warning.

    Returns:
        ``out_path``.
    """
    from scenetok.data.view_sampling import sample_evaluation_views  # lazy: imports torch
    from scenetok.interfaces import CorruptSampleError  # lazy: imports torch

    entries: dict[str, dict[str, list[int]]] = {}
    for scene in dataset.scenes():
        try:
            num_frames = dataset.num_frames(scene)
            cameras = dataset.frame_cameras(scene)
            context, target = sample_evaluation_views(
                num_frames,
                context_views,
                target_views,
                seed=seed,
                scene=scene,
                extrinsics=None if cameras is None else cameras.extrinsics,
                context_sampling=context_sampling,
            )
        except CorruptSampleError as error:  # unreadable or too short: not part of the protocol
            dataset.record_skip(scene, f"not in the evaluation index: {error}")
            continue
        entries[scene] = {"context": context, "target": target}
    logger.info("evaluation index: %d scenes -> %s", len(entries), out_path)
    return save_evaluation_index(entries, out_path)


def evaluation_view_counts(eval_config: object, dataset_config: object) -> tuple[int, int, str]:
    """``(context_views, target_views, explanation)`` of a generated evaluation index: the recipe's
    ``eval.context_views`` / ``eval.target_views``, each falling back to the dataset's when 0.

    The explanation names where each number came from, so ``scenetok data index`` can say it (an
    index written with the training counts, 4 context and 4 target frames spread over the same
    window, leaves nothing novel to score)."""
    counts = []
    for name in ("context_views", "target_views"):
        own = int(getattr(eval_config, name, 0) or 0)
        if own:
            counts.append((own, f"{own} {name.split('_')[0]} (eval.{name})"))
        else:
            fallback = int(getattr(dataset_config, name))
            counts.append((fallback, f"{fallback} {name.split('_')[0]} (dataset.{name}; eval.{name} is unset)"))
    return counts[0][0], counts[1][0], f"views per scene: {counts[0][1]}, {counts[1][1]}"
