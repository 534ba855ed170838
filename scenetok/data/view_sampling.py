"""Which frames of a scene become context and target views.

Training (:func:`sample_training_views`, after the paper's samplers): pick a window of frames,
spread ``K`` context views inside it (endpoints included; interior by farthest-point sampling over
poses, uniform spacing, or at random), and take the targets as ``target_clips`` contiguous clips
in or around the window, so the model learns to interpolate between nearby context views.

Evaluation (:func:`sample_evaluation_views`, used to write an evaluation index): a contiguous
target run with the context spread over it, deterministic from ``(seed, scene)``.

Frame indices are positions in the scene's frame list. Context lists are sorted ascending; target
lists are contiguous runs (clips) in ascending order of their first frame.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from scenetok.interfaces import CorruptSampleError

CONTEXT_SAMPLING = ("farthest", "uniform", "random")


class NotEnoughFramesError(CorruptSampleError):
    """The scene has fewer frames than the requested selection needs."""


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts, identical across processes and Python versions
    (unlike ``hash()``, which is salted per process)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def pose_distances(extrinsics: Tensor, rows: Tensor, columns: Tensor) -> Tensor:
    """Pose distance ``||t_i - t_j||^2 + angle(R_i^T R_j)^2`` between frames ``rows`` ``(A,)`` and
    ``columns`` ``(B,)`` of ``extrinsics`` ``(V, 4, 4)``; returns ``(A, B)``."""
    a, b = extrinsics[rows].double(), extrinsics[columns].double()
    translation = torch.cdist(a[:, :3, 3], b[:, :3, 3]) ** 2
    relative = torch.einsum("aji,bjk->abik", a[:, :3, :3], b[:, :3, :3])  # R_a^T R_b
    cosine = ((relative.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1.0, 1.0)
    return (translation + torch.acos(cosine) ** 2).float()


def farthest_point_indices(
    candidates: list[int], count: int, seeds: list[int], extrinsics: Tensor | None = None
) -> list[int]:
    """Greedy farthest-point selection of ``count`` frames among ``candidates``, starting from
    ``seeds`` (kept). Distances are pose distances when ``extrinsics`` is given, otherwise frame
    index distances. Ties resolve to the lowest frame index (deterministic)."""
    chosen = list(dict.fromkeys(seeds))[:count]
    if len(chosen) >= count:
        return sorted(chosen)
    pool = torch.tensor(candidates, dtype=torch.long)
    if extrinsics is not None:
        distance = pose_distances(extrinsics, pool, pool)
    else:
        distance = (pool[:, None] - pool[None, :]).abs().float()
    position = {frame: i for i, frame in enumerate(candidates)}
    if chosen:
        nearest = distance[:, [position[f] for f in chosen]].min(dim=1).values
    else:
        nearest = torch.full((len(candidates),), float("inf"))
    while len(chosen) < count:
        best = int(torch.argmax(nearest))  # argmax returns the first maximum
        chosen.append(candidates[best])
        nearest = torch.minimum(nearest, distance[:, best])
        nearest[best] = -1.0
    return sorted(chosen)


def spread_in_window(
    start: int,
    end: int,
    count: int,
    method: str,
    generator: torch.Generator,
    extrinsics: Tensor | None = None,
) -> list[int]:
    """``count`` distinct frames in ``[start, end]`` (inclusive), endpoints included when
    ``count >= 2``; the interior by ``method`` (see :data:`CONTEXT_SAMPLING`)."""
    span = end - start + 1
    if count > span:
        raise NotEnoughFramesError(f"cannot pick {count} distinct frames from the {span}-frame window")
    if method not in CONTEXT_SAMPLING:
        raise ValueError(f"context_sampling must be one of {CONTEXT_SAMPLING}, got {method!r}")
    if count == 1:
        return [start + int(torch.randint(span, (1,), generator=generator))]
    if method == "uniform":
        return sorted({round(start + i * (span - 1) / (count - 1)) for i in range(count)})
    if method == "random":
        interior = torch.randperm(span - 2, generator=generator)[: count - 2] + start + 1
        return sorted([start, end, *interior.tolist()])
    return farthest_point_indices(list(range(start, end + 1)), count, [start, end], extrinsics)


def _clip_starts(
    num_clips: int, clip_length: int, low: int, high: int, generator: torch.Generator
) -> list[int]:
    """Random starts for ``num_clips`` clips of ``clip_length`` frames with starts in ``[low, high]``."""
    starts = torch.randint(low, high + 1, (num_clips,), generator=generator)
    return sorted(starts.tolist())


def sample_training_views(
    num_frames: int,
    *,
    context_views: int,
    target_views: int,
    generator: torch.Generator,
    window_min: int = 0,
    window_max: int = 0,
    context_sampling: str = "farthest",
    target_clips: int = 1,
    target_margin: int = 0,
    extrinsics: Tensor | None = None,
) -> tuple[list[int], list[int]]:
    """One training selection.

    Args:
        num_frames: frames in the scene.
        context_views: ``K`` context frames (distinct).
        target_views: ``T`` target frames; split into ``target_clips`` contiguous clips (clips may
            overlap each other and the context frames).
        generator: the random source (seeded per sample by the dataset).
        window_min, window_max: range of the window length in frames (the span from the first to
            the last context frame, inclusive); ``0`` means the whole scene. ``window_min = 0`` with
            a positive ``window_max`` means exactly ``window_max``.
        context_sampling: ``"farthest"`` (poses, or frame distance without ``extrinsics``),
            ``"uniform"`` or ``"random"``.
        target_margin: frames the target clips may reach outside the window on each side.
        extrinsics: ``(num_frames, 4, 4)`` poses for farthest-point sampling (optional).

    Returns:
        ``(context, target)``: sorted distinct context frames; the target clips concatenated in
        order of their start (each clip ascending; clips may overlap), ``len(target) == T``.

    Raises:
        NotEnoughFramesError: the scene is too short for ``K`` distinct frames or one clip.
    """
    if target_views % target_clips:
        raise ValueError(f"target_views={target_views} is not a multiple of target_clips={target_clips}")
    clip_length = target_views // target_clips
    needed = max(context_views, clip_length)
    if num_frames < needed:
        raise NotEnoughFramesError(
            f"{num_frames} frames, need at least {needed} ({context_views} context, clips of {clip_length})"
        )
    longest = num_frames if window_max <= 0 else min(window_max, num_frames)
    shortest = longest if window_min <= 0 else min(window_min, longest)
    shortest = max(shortest, context_views)
    longest = max(longest, shortest)
    length = int(torch.randint(shortest, longest + 1, (1,), generator=generator))
    start = int(torch.randint(0, num_frames - length + 1, (1,), generator=generator))
    end = start + length - 1
    context = spread_in_window(start, end, context_views, context_sampling, generator, extrinsics)

    low = max(0, start - target_margin)
    high = min(num_frames - clip_length, end + target_margin - clip_length + 1)
    if high < low:  # clip longer than the window (+ margins): centre it on the window, inside the scene
        low = high = min(max(0, (start + end + 1 - clip_length) // 2), num_frames - clip_length)
    target: list[int] = []
    for clip_start in _clip_starts(target_clips, clip_length, low, high, generator):
        target.extend(range(clip_start, clip_start + clip_length))
    return context, target


def sample_evaluation_views(
    num_frames: int,
    context_views: int,
    target_views: int,
    *,
    seed: int,
    scene: str,
    extrinsics: Tensor | None = None,
    context_sampling: str = "farthest",
) -> tuple[list[int], list[int]]:
    """A deterministic evaluation selection for one scene (see
    :func:`scenetok.data.index.write_evaluation_index`): targets = ``target_views`` contiguous
    frames at a seeded start; context spread over the target range, endpoints included, the range
    widened symmetrically (inside the scene) to at least ``context_views`` frames."""
    if num_frames < max(context_views, target_views):
        raise NotEnoughFramesError(
            f"{num_frames} frames, need at least {max(context_views, target_views)}"
        )
    generator = torch.Generator().manual_seed(stable_seed("evaluation", seed, scene))
    start = int(torch.randint(0, num_frames - target_views + 1, (1,), generator=generator))
    target = list(range(start, start + target_views))
    low, high = start, start + target_views - 1
    while high - low + 1 < context_views:
        if low > 0:
            low -= 1
        if high - low + 1 < context_views and high < num_frames - 1:
            high += 1
    context = spread_in_window(low, high, context_views, context_sampling, generator, extrinsics)
    return context, target
