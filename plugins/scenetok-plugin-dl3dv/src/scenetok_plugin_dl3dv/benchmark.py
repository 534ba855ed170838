"""The DL3DV-140 benchmark: its scene list (the test split) and evaluation-index generation.

DL3DV-140 is the set of 140 DL3DV-10K scenes released as "DL3DV-10K-Benchmark". Because those
scenes are *sampled from* DL3DV-10K, a training run must exclude them explicitly; the
``dl3dv`` dataset does that when its ``benchmark`` field names a hash list (``split: train`` =
every scene not in the list, ``split: test``/``validation`` = the listed scenes).

A hash list is a text file with one 64-hex-digit scene hash per line (blank lines and ``#``
comments are ignored). An evaluation-index JSON (``{hash: {context, target}}``, e.g. SceneTok's
``dl3dv_c16_32.json`` or DepthSplat's DL3DV index) works as well: its keys are the list, with a
``_<n>`` window suffix (``dl3dv_c16_34.json``) stripped.

There is no single standard DL3DV-140 view selection (SceneTok, DepthSplat, MVSplat360 and
Long-LRM each use their own, and SceneTok's generator is not published).
:func:`write_benchmark_index` writes a deterministic one with core's evaluation-index writer:
per scene, ``target_views`` contiguous target frames and ``context_views`` context frames spread
over them (farthest-point over poses, endpoints included). The defaults, 16 context views and 32
targets, follow SceneTok's ``dl3dv_c16_32`` setting; 34 targets (two 17-frame Wan chunks) fit the
Wan 2.2 target autoencoder.

Nothing here imports torch at module level.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scenetok.interfaces import SceneDataset

logger = logging.getLogger(__name__)

#: A DL3DV scene key: the 64 lowercase hex digits of the scene hash.
HASH_PATTERN = re.compile(r"[0-9a-f]{64}")
#: Window suffix of evaluation-index keys (``<hash>_1`` in SceneTok's ``dl3dv_c16_34.json``).
WINDOW_SUFFIX = re.compile(r"_\d+$")
#: The number of scenes in DL3DV-140 (a list of another length is accepted with a warning).
BENCHMARK_SIZE = 140


def read_hash_list(path: str | os.PathLike) -> list[str]:
    """Scene hashes of a DL3DV-140 list, in file order, without duplicates.

    Args:
        path: a text file (one hash per line; blank lines and ``#`` comments ignored) or an
            evaluation-index ``.json`` (its keys, ``_<n>`` suffixes stripped).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a line or key is not a 64-hex-digit hash (the message names the file and line),
            or the list is empty.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DL3DV benchmark list {path} does not exist")
    candidates: list[tuple[str, str]] = []  # (hash, where in the file)
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path}: an evaluation index must be a JSON object keyed by scene hash")
        candidates = [(WINDOW_SUFFIX.sub("", str(key)), f"key {key!r}") for key in data]
    else:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            text = line.split("#", 1)[0].strip()
            if text:
                candidates.append((text, f"line {number}"))
    hashes: list[str] = []
    for value, where in candidates:
        if not HASH_PATTERN.fullmatch(value):
            raise ValueError(f"{path}: {where}: {value!r} is not a DL3DV scene hash (64 lowercase hex digits)")
        hashes.append(value)
    hashes = list(dict.fromkeys(hashes))
    if not hashes:
        raise ValueError(f"{path}: the DL3DV benchmark list is empty")
    if len(hashes) != BENCHMARK_SIZE:
        logger.warning("%s lists %d scenes; DL3DV-140 has %d", path, len(hashes), BENCHMARK_SIZE)
    return hashes


def write_hash_list(hashes: list[str], out_path: str | os.PathLike) -> Path:
    """Write ``hashes`` one per line (the format :func:`read_hash_list` reads); returns the path."""
    out_path = Path(out_path)
    for value in hashes:
        if not HASH_PATTERN.fullmatch(value):
            raise ValueError(f"{value!r} is not a DL3DV scene hash (64 lowercase hex digits)")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("".join(f"{value}\n" for value in hashes))
    return out_path


def scene_hash(scene: str) -> str:
    """The hash part of a scene key (``"1K/<hash>"`` -> ``"<hash>"``)."""
    return scene.replace("\\", "/").rsplit("/", 1)[-1]


def write_benchmark_index(
    dataset: SceneDataset,
    out_path: str | os.PathLike,
    context_views: int = 16,
    target_views: int = 32,
    seed: int = 0,
    *,
    context_sampling: str = "farthest",
) -> Path:
    """Write a deterministic DL3DV-140 evaluation index for the scenes of ``dataset``.

    ``dataset`` should be a ``dl3dv`` dataset of the ``test`` split with ``benchmark`` set (then
    its scenes are exactly the DL3DV-140 scenes found on disk). Each scene's entry depends only on
    ``(seed, scene hash, its frames and poses)`` (see
    :func:`scenetok.data.index.write_evaluation_index`); scenes that are unreadable or too short
    are left out and recorded in ``dataset.skipped``.

    Args:
        dataset: the benchmark scenes.
        out_path: the JSON file to write (atomically).
        context_views: context frames per scene (16 in the paper).
        target_views: contiguous target frames per scene (32 or 64 in the paper; 34 = two Wan
            chunks of 17 frames).
        seed: selection seed.
        context_sampling: ``"farthest"`` (poses) or ``"uniform"`` (frame spacing).

    Returns:
        ``out_path``.

    Raises:
        ValueError: ``dataset`` is a training split of a dataset with a benchmark list (its scenes
            are exactly the ones the benchmark must not contain).
    """
    from scenetok.data.index import write_evaluation_index

    config = getattr(dataset, "config", None)
    benchmark = getattr(config, "benchmark", None)
    split = getattr(config, "split", None)
    if benchmark and split == "train":
        raise ValueError(
            f"write_benchmark_index: the dataset is the training split of benchmark {benchmark} "
            "(every scene *not* in DL3DV-140); build it with split='test'"
        )
    if not benchmark:
        logger.warning("write_benchmark_index: the dataset has no `benchmark` list; indexing all %d "
                       "scenes it found", len(dataset.scenes()))
    return write_evaluation_index(dataset, out_path, context_views, target_views, seed=seed,
                                  context_sampling=context_sampling)
