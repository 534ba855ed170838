"""Model-inspection helpers."""

from __future__ import annotations

import re

from torch import nn


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter values of ``module`` (buffers excluded, shared parameters counted once).

    Works on modules built on the meta device, which is how the paper-size parameter counts are
    checked without allocating memory.
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def rename_key(key: str, key_map: dict[str, str | None]) -> str | None:
    """Rename one state-dict key with an ordered ``{regex: replacement}`` map.

    The first pattern that matches (``re.fullmatch``) wins; a ``None`` replacement means the key
    has no counterpart and should be dropped. Raises ``KeyError`` when no pattern matches, so an
    importer never silently loses weights.
    """
    for pattern, replacement in key_map.items():
        match = re.fullmatch(pattern, key)
        if match:
            return None if replacement is None else match.expand(replacement)
    raise KeyError(f"no key-map rule for {key!r}")
