"""A contact sheet of one dataset sample, so a person sees what the model gets: the context views,
the target views (each labelled with its frame index) and a top-down plot of all camera centres
with viewing directions."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scenetok.interfaces import SceneDataset


def quiet_matplotlib() -> None:
    """Keep matplotlib's INFO chatter ("generated new fontManager" on a first run) out of the
    command's output, unless the user asked for debug logs."""
    logger = logging.getLogger("matplotlib")
    if logger.level == logging.NOTSET and not logging.getLogger().isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.WARNING)


def _ground_axes(extrinsics) -> tuple[int, int]:
    """The two world axes spanning the 'ground' for the top-down plot: drop the axis along which
    the camera centres and up vectors vary least (the mean camera 'down' axis, in OpenCV)."""
    import torch

    down = extrinsics[:, :3, 1].mean(0)
    vertical = int(torch.argmax(down.abs()))
    return tuple(a for a in range(3) if a != vertical)  # type: ignore[return-value]


def write_preview(dataset: SceneDataset, out_dir: str | os.PathLike, index: int = 0,
                  max_columns: int = 8) -> Path:
    """Write ``<out_dir>/preview_<index>_<scene>.png`` for sample ``index`` and return its path."""
    quiet_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    import torch

    sample = dataset[index]
    parts = [("context", sample["context"]), ("target", sample["target"])]
    columns = min(max_columns, max(len(p["indices"]) for _, p in parts))
    rows_per_part = [math.ceil(len(p["indices"]) / columns) for _, p in parts]
    image_rows = sum(rows_per_part)
    cell = 1.6
    figure = plt.figure(figsize=(cell * columns + 4.5, max(cell * image_rows + 0.8, 4.5)), dpi=110)
    outer = figure.add_gridspec(1, 2, width_ratios=[columns, 3.2], wspace=0.12)
    grid = outer[0].subgridspec(image_rows, columns, wspace=0.05, hspace=0.3)

    row = 0
    colours = {"context": "tab:blue", "target": "tab:orange"}
    for (name, views), count in zip(parts, rows_per_part):
        for k, frame in enumerate(views["indices"].tolist()):
            axis = figure.add_subplot(grid[row + k // columns, k % columns])
            axis.imshow(views["images"][k].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_edgecolor(colours[name])
                spine.set_linewidth(2.5)
            axis.set_title(f"{name} #{frame}", fontsize=8, color=colours[name], pad=2)
        row += count

    # top-down plot of camera centres and viewing directions
    plot = figure.add_subplot(outer[1])
    all_extrinsics = torch.cat([sample["context"]["extrinsics"], sample["target"]["extrinsics"]])
    first, second = _ground_axes(all_extrinsics)
    span = float((all_extrinsics[:, :3, 3].amax(0) - all_extrinsics[:, :3, 3].amin(0)).max())
    arrow = max(span * 0.15, 1e-3)
    for name, views in parts:
        centres = views["extrinsics"][:, :3, 3]
        forward = views["extrinsics"][:, :3, 2]
        plot.quiver(centres[:, first], centres[:, second], forward[:, first] * arrow, forward[:, second] * arrow,
                    color=colours[name], angles="xy", scale_units="xy", scale=1, width=0.006)
        plot.scatter(centres[:, first], centres[:, second], color=colours[name], s=18, label=name)
        for centre, frame in zip(centres, views["indices"].tolist()):
            plot.annotate(str(frame), (float(centre[first]), float(centre[second])), fontsize=6,
                          xytext=(3, 3), textcoords="offset points", color=colours[name])
    plot.set_aspect("equal", adjustable="datalim")
    plot.set_xlabel(f"world axis {'xyz'[first]}")
    plot.set_ylabel(f"world axis {'xyz'[second]}")
    plot.set_title("cameras (top-down), arrows = view direction", fontsize=8)
    plot.legend(fontsize=7, loc="best")
    plot.tick_params(labelsize=7)

    height, width = sample["context"]["images"].shape[-2:]
    figure.suptitle(f"{type(dataset).__name__} sample {index}: scene {sample['scene']} ({height}x{width})",
                    fontsize=10)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    safe_scene = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(sample["scene"]))
    path = out_dir / f"preview_{index}_{safe_scene}.png"
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
    return path
