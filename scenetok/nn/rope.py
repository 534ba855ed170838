"""Axial rotary position embeddings (RoPE) in 2D (per view) and 3D (frame, row, column).

Both follow the conventions of the paper's code (EVA-02 / LightningDiT style):

* rotation acts on **interleaved pairs** ``(x[2i], x[2i+1])`` of the head dimension;
* each axis owns a contiguous slice of the head dimension, axes concatenated in order
  (2D: rows then columns; 3D: frames, rows, columns);
* inside an axis slice of ``d`` dims, pair ``k`` rotates with frequency ``theta ** (-2k / d)``
  at integer positions ``0, 1, 2, ...``.

Tables are computed for the actual grid on every call (cheap: a few thousand sines), so there is no
fixed maximum length to overflow; callers validate their own window limits. A table is a pair
``(cos, sin)`` of float32 tensors ``(L, head_dim)`` that broadcasts against ``(B, heads, L, head_dim)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

RopeTable = tuple[Tensor, Tensor]


def axis_angles(positions: Tensor, dim: int, theta: float) -> Tensor:
    """Rotation angles of one axis: ``(L,)`` positions -> ``(L, dim)``, each angle repeated for its pair."""
    if dim % 2:
        raise ValueError(f"a RoPE axis needs an even number of dims, got {dim}")
    exponents = torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim
    frequencies = 1.0 / (theta**exponents)
    angles = positions.float()[:, None] * frequencies[None, :]
    return angles.repeat_interleave(2, dim=-1)


def rope_2d_table(grid_h: int, grid_w: int, head_dim: int, theta: float = 10_000.0,
                  device: torch.device | str | None = None) -> RopeTable:
    """EVA-style 2D axial RoPE for one ``grid_h x grid_w`` token grid (row-major flattening).

    The first ``head_dim / 2`` dims rotate with the row index, the last ``head_dim / 2`` with the
    column index (``head_dim`` must be a multiple of 4).

    Returns:
        ``(cos, sin)``, each ``(grid_h * grid_w, head_dim)``.
    """
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {head_dim}")
    rows = torch.arange(grid_h, device=device)
    cols = torch.arange(grid_w, device=device)
    row_angles = axis_angles(rows, head_dim // 2, theta)  # (h, d/2)
    col_angles = axis_angles(cols, head_dim // 2, theta)  # (w, d/2)
    angles = torch.cat(
        [
            row_angles[:, None, :].expand(grid_h, grid_w, -1),
            col_angles[None, :, :].expand(grid_h, grid_w, -1),
        ],
        dim=-1,
    ).reshape(grid_h * grid_w, head_dim)
    return angles.cos(), angles.sin()


def rope_3d_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Head dims owned by the (frame, row, column) axes.

    The ``head_dim / 2`` rotation pairs are split as evenly as possible with rows and columns kept
    equal: a remainder of 2 goes to rows and columns, a remainder of 1 to frames. For
    ``head_dim = 64``: 32 pairs -> (10, 11, 11) pairs -> (20, 22, 22) dims.
    """
    if head_dim % 2:
        raise ValueError(f"3D RoPE needs an even head_dim, got {head_dim}")
    pairs = head_dim // 2
    base, remainder = divmod(pairs, 3)
    split = {0: (base, base, base), 1: (base + 1, base, base), 2: (base, base + 1, base + 1)}[remainder]
    if min(split) == 0:
        raise ValueError(f"head_dim {head_dim} is too small for 3D RoPE (needs >= 6)")
    return tuple(2 * p for p in split)  # type: ignore[return-value]


def rope_3d_table(frames: int, grid_h: int, grid_w: int, head_dim: int, theta: float = 10_000.0,
                  num_chunks: int = 1, device: torch.device | str | None = None) -> RopeTable:
    """3D axial RoPE over a ``(frames, grid_h, grid_w)`` token volume (frame-major flattening).

    Args:
        frames: latent frames ``F`` in the sequence.
        grid_h, grid_w: token grid per frame.
        head_dim: attention head width.
        theta: RoPE base.
        num_chunks: split the frames into this many equal consecutive chunks, each with frame
            positions restarting at 0 (the paper's ``num_target_split``; 1 = one RoPE over the whole
            sequence). ``frames`` must be divisible by it.

    Returns:
        ``(cos, sin)``, each ``(frames * grid_h * grid_w, head_dim)``.
    """
    if num_chunks < 1 or frames % num_chunks:
        raise ValueError(f"{frames} latent frames cannot be split into {num_chunks} equal RoPE chunks")
    frame_dims, row_dims, col_dims = rope_3d_axis_dims(head_dim)
    frame_positions = torch.arange(frames, device=device) % (frames // num_chunks)
    frame_angles = axis_angles(frame_positions, frame_dims, theta)
    row_angles = axis_angles(torch.arange(grid_h, device=device), row_dims, theta)
    col_angles = axis_angles(torch.arange(grid_w, device=device), col_dims, theta)
    shape = (frames, grid_h, grid_w)
    angles = torch.cat(
        [
            frame_angles[:, None, None, :].expand(*shape, -1),
            row_angles[None, :, None, :].expand(*shape, -1),
            col_angles[None, None, :, :].expand(*shape, -1),
        ],
        dim=-1,
    ).reshape(frames * grid_h * grid_w, head_dim)
    return angles.cos(), angles.sin()


def rotate_pairs(x: Tensor) -> Tensor:
    """``(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)`` along the last dim (interleaved pairs)."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def _check_table(x: Tensor, table: RopeTable) -> None:
    cos = table[0]
    if x.shape[-2] != cos.shape[0] or x.shape[-1] != cos.shape[1]:
        raise ValueError(
            f"RoPE table of {tuple(cos.shape)} does not match a sequence of "
            f"{x.shape[-2]} tokens x {x.shape[-1]} head dims"
        )


def apply_rope(x: Tensor, table: RopeTable) -> Tensor:
    """Rotate queries or keys ``(B, heads, L, head_dim)`` by a table of ``(L, head_dim)``.

    Computed in float32 (the tables are float32) and returned in ``x``'s dtype; ``x`` is not
    modified. Each interleaved pair ``(x[2i], x[2i+1])`` is read as one complex number and
    multiplied by ``cos + i sin``: the same numbers as :func:`apply_rope_reference`, but one
    kernel instead of the split / negate / stack / multiply-add chain, which made RoPE a large
    share of a CPU training step (``scenetok bench``, "Training-step changes").
    """
    if torch.compiler.is_compiling():
        # Inductor has no complex code generation but fuses the real formula into one kernel.
        return apply_rope_reference(x, table)
    _check_table(x, table)
    cos, sin = table
    rotation = torch.complex(cos[:, ::2], sin[:, ::2])  # (L, head_dim / 2): one angle per pair
    pairs = x.float().unflatten(-1, (-1, 2))
    try:
        complex_pairs = torch.view_as_complex(pairs)
    except RuntimeError:  # strides that cannot be viewed as complex (e.g. odd offsets): copy once
        complex_pairs = torch.view_as_complex(pairs.contiguous())
    return torch.view_as_real(complex_pairs * rotation).flatten(-2).to(x.dtype)


def apply_rope_reference(x: Tensor, table: RopeTable) -> Tensor:
    """The textbook formula ``x * cos + rotate_pairs(x) * sin`` (what :func:`apply_rope` computes;
    kept as its test oracle and as the "before" of the benchmark)."""
    _check_table(x, table)
    cos, sin = table
    x32 = x.float()
    return (x32 * cos + rotate_pairs(x32) * sin).to(x.dtype)
