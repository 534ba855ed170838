"""The TensorBoard logger: a training-callback hook module, written the way a plugin would write
one and registered through the same ``scenetok.hooks`` entry-point group (``tensorboard`` in
scenetok's ``pyproject.toml``).

It acts only for recipes with ``train.loggers: [tensorboard]`` and writes, under ``RUN/tensorboard``:

* every logged step's scalars (``train/loss``, ``train/mse``, ``train/kl``, ``train/lr``,
  ``train/grad_norm``, ``train/steps_per_s``...), every ``train.log_every`` steps like
  ``metrics.jsonl``;
* each validation grid (``train.validate_every``) as the image ``validation``;
* the loss curves (``loss.png``) as the image ``loss_curves`` when training ends.

The ``tensorboard`` package is optional (``pip install 'scenetok[tensorboard]'``); a recipe that
asks for the logger without it fails validation with that instruction, before any training.
Nothing here is imported at CLI start-up beyond this module itself.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from scenetok.hookspecs import hookimpl

log = logging.getLogger(__name__)

NAME = "tensorboard"
INSTALL_HINT = "pip install 'scenetok[tensorboard]'"

#: One open writer per trainer (keyed by ``id(trainer)``), with the last validation step logged.
_writers: dict[int, tuple[Any, list[int]]] = {}


def available() -> bool:
    """Whether the ``tensorboard`` package (which ``torch.utils.tensorboard`` writes with) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


def _wanted(trainer: Any) -> bool:
    return NAME in getattr(trainer.config, "loggers", ()) and trainer.context.is_main


@hookimpl
def scenetok_validate_recipe(recipe: Any, errors: list[str]) -> None:
    train = recipe.sections.get("train")
    if train is not None and NAME in train.loggers and not available():
        errors.append(f"train.loggers: the {NAME!r} logger needs the `tensorboard` package, which is not "
                      f"installed: {INSTALL_HINT}")


@hookimpl
def scenetok_on_train_start(trainer: Any) -> None:
    if not _wanted(trainer):
        return
    if not available():  # validation already says so; a recipe built by hand may skip it
        raise ModuleNotFoundError(f"train.loggers: {NAME!r} needs the `tensorboard` package: {INSTALL_HINT}")
    from torch.utils.tensorboard import SummaryWriter

    folder = trainer.run_dir / "tensorboard"
    _writers[id(trainer)] = (SummaryWriter(log_dir=str(folder), purge_step=trainer.step or None), [-1])
    log.info("TensorBoard events: %s (view with `tensorboard --logdir %s`)", folder, folder)


@hookimpl
def scenetok_on_train_step_end(trainer: Any, step: int, metrics: dict[str, float]) -> None:
    entry = _writers.get(id(trainer))
    if entry is None:
        return
    writer, last_grid = entry
    if step % trainer.config.log_every == 0 or step == 1:
        for key, value in metrics.items():
            writer.add_scalar(f"train/{key}", float(value), step)
    validation = getattr(trainer, "last_validation", None)
    if validation is not None and validation[0] != last_grid[0]:
        last_grid[0] = validation[0]
        writer.add_image("validation", _read_png(validation[1]), validation[0], dataformats="HWC")


@hookimpl
def scenetok_on_train_end(trainer: Any) -> None:
    entry = _writers.pop(id(trainer), None)
    if entry is None:
        return
    writer, _ = entry
    curves = trainer.run_dir / "loss.png"
    if curves.exists():
        writer.add_image("loss_curves", _read_png(curves), trainer.step, dataformats="HWC")
    writer.close()


def _read_png(path: Any) -> Any:
    """``(H, W, 3)`` uint8 array of a PNG."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
