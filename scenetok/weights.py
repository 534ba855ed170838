"""Weights helpers for components (public plugin API): finding local weights files, loading a
state dict with one error that names every mismatch, freezing, and the ``[0, 1]`` <-> ``[-1, 1]``
pixel range most autoencoders expect.

Nothing here downloads anything. Weights come from the path a recipe gives (``checkpoint``) or from a
local cache directory named by the environment variable ``SCENETOK_WEIGHTS_DIR``; a missing file
raises :class:`MissingWeightsError`, whose message says which file is expected, where it was looked
for, and where to get it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

logger = logging.getLogger(__name__)

#: Environment variable naming a local directory of downloaded weights.
WEIGHTS_DIR_ENV = "SCENETOK_WEIGHTS_DIR"


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights an image compressor needs are not on this machine.

    The message is meant for the user as is: the expected file, the places searched and the public
    source to download it from.
    """


def resolve_weights(checkpoint: str, *, default_name: str, component: str, source: str,
                    key: str = "image_compressor.checkpoint") -> Path:
    """Find a weights file or folder on the local disk.

    Args:
        checkpoint: the configured path; ``""`` means "``default_name`` in the weights directory".
            A relative path that does not exist from the working directory is also tried relative to
            ``$SCENETOK_WEIGHTS_DIR``.
        default_name: file/folder name looked up in ``$SCENETOK_WEIGHTS_DIR`` when ``checkpoint`` is
            empty (the name the public release uses).
        component: the component's registry name, for the error message.
        source: where the weights can be downloaded from (URL / repository + file name).
        key: the recipe key that sets this path, named in the error's hint (a separate target
            compressor is set the same way under ``target_image_compressor``).

    Returns:
        The existing path.

    Raises:
        MissingWeightsError: nothing exists at any candidate path.
    """
    weights_dir = os.environ.get(WEIGHTS_DIR_ENV, "")
    candidates: list[Path] = []
    if checkpoint:
        path = Path(checkpoint).expanduser()
        candidates.append(path)
        if not path.is_absolute() and weights_dir:
            candidates.append(Path(weights_dir).expanduser() / path)
    elif weights_dir:
        candidates.append(Path(weights_dir).expanduser() / default_name)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    searched = ", ".join(str(c) for c in candidates) or "nowhere"
    section = key.rsplit(".", 1)[0]
    hint = (
        f"set `{key}` (or `target_image_compressor.{key.rsplit('.', 1)[-1]}` for the target compressor) to its path"
        if not checkpoint
        else f"check the path in `{key}`"
    )
    raise MissingWeightsError(
        f"{component}: pretrained weights not found (searched: {searched}). Expected "
        f"{checkpoint or default_name!r}; download it from {source}, then {hint} or put it in the "
        f"directory named by ${WEIGHTS_DIR_ENV}"
        + ("" if weights_dir else f" (currently unset; it is looked up as {default_name!r} there)")
        + f". For tests only, `{section}.random_init: true` builds the network with random weights."
    )


def warn_random_init(component: str) -> None:
    """Log, loudly, that a pretrained autoencoder runs with random weights."""
    logger.warning(
        "%s: RANDOM INITIALISATION, no pretrained weights loaded (random_init=true). Latents and "
        "reconstructions are meaningless; use this for tests and smoke runs only.",
        component,
    )


def freeze(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode with ``requires_grad=False`` on every parameter."""
    module.eval()
    module.requires_grad_(False)
    return module


def to_signed(images: Tensor) -> Tensor:
    """``[0, 1]`` -> ``[-1, 1]`` (the input range of LDM / diffusers autoencoders)."""
    return images * 2.0 - 1.0


def to_unit(images: Tensor) -> Tensor:
    """``[-1, 1]`` -> ``[0, 1]``, clamped (decoders overshoot slightly)."""
    return (images * 0.5 + 0.5).clamp(0.0, 1.0)


def check_images(images: Tensor, name: str) -> None:
    """Validate ``(B, V, 3, H, W)`` input images."""
    if images.ndim != 5 or images.shape[2] != 3:
        raise ValueError(f"{name}.encode expects images (B, V, 3, H, W), got {tuple(images.shape)}")


def check_latents(latents: Tensor, channels: int, name: str) -> None:
    """Validate ``(B, F, C, h, w)`` latents."""
    if latents.ndim != 5 or latents.shape[2] != channels:
        raise ValueError(
            f"{name}.decode expects latents (B, F, {channels}, h, w), got {tuple(latents.shape)}"
        )


@dataclass
class WeightsStatus:
    """One weights file a recipe needs (see :func:`recipe_weights`).

    Attributes:
        key: the recipe key that sets its path (``image_compressor.checkpoint``).
        component: ``"<section> <name>"`` of the component or setting that loads it.
        path: where it was found, or ``None``.
        problem: why it was not found (the :class:`MissingWeightsError` message), else ``""``.
        required: ``False`` for weights whose absence only makes a metric unavailable.
    """

    key: str
    component: str
    path: Path | None
    problem: str = ""
    required: bool = True


def recipe_weights(recipe: Any) -> list[WeightsStatus]:
    """Which pretrained weights ``recipe`` (a :class:`scenetok.recipe.Recipe`) needs and whether
    they are on this machine, checked without loading anything.

    A component declares its weights with two class attributes, ``weights_name`` (the released
    file name looked up in ``$SCENETOK_WEIGHTS_DIR`` when ``checkpoint`` is empty) and
    ``weights_source`` (where to download it), next to ``checkpoint`` / ``random_init`` config
    fields; ``random_init: true`` needs none. LPIPS's backbone (``eval.lpips_weights``) is listed as
    optional: without it LPIPS is reported unavailable.
    """
    out: list[WeightsStatus] = []
    for section, spec in recipe.components.items():
        name = getattr(spec.cls, "weights_name", None)
        config = spec.config
        if name is None or not hasattr(config, "checkpoint") or getattr(config, "random_init", False):
            continue
        key = f"{section}.checkpoint"
        try:
            path = resolve_weights(config.checkpoint, default_name=name, component=spec.name,
                                   source=getattr(spec.cls, "weights_source", "the component's documentation"),
                                   key=key)
            out.append(WeightsStatus(key, f"{section} {spec.name}", path))
        except MissingWeightsError as error:
            out.append(WeightsStatus(key, f"{section} {spec.name}", None, str(error)))
    evaluation = recipe.sections.get("eval")
    if evaluation is not None:
        from scenetok.eval.metrics import LPIPS_BACKBONE_FILES, _torch_hub_checkpoint  # lazy: imports torchvision

        wanted = Path(evaluation.lpips_weights) if evaluation.lpips_weights else \
            _torch_hub_checkpoint(LPIPS_BACKBONE_FILES[evaluation.lpips_net])
        found = wanted.is_file()
        out.append(WeightsStatus("eval.lpips_weights", f"eval LPIPS {evaluation.lpips_net}", wanted if found else None,
                                 "" if found else f"no LPIPS {evaluation.lpips_net} backbone at {wanted}; "
                                 "set eval.lpips_weights=PATH (LPIPS is reported unavailable without it)",
                                 required=False))
    return out


class CheckpointConversionError(ValueError):
    """A checkpoint does not map one-to-one onto the model; the message names the offending keys."""


def name_keys(keys: list[str], limit: int = 20) -> str:
    """The first ``limit`` keys, comma-separated, with a count of the rest (for error messages)."""
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_exactly(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """``model.load_state_dict(state, strict=True)`` with one error that names every missing key,
    unexpected key and shape mismatch (torch's own error stops at the first shape mismatch)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k} (checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)})"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {name_keys(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {name_keys(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {name_keys(mismatched)}")
    if problems:
        raise CheckpointConversionError(
            f"{source} does not match the model ({'; '.join(problems)}). Check that the component config "
            "(block_out_channels, layers_per_block, latent_channels, attention_levels) matches the checkpoint."
        )
    model.load_state_dict(dict(state), strict=True)
