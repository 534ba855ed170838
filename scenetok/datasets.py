"""Build the dataset a recipe names."""

from __future__ import annotations

import dataclasses
from typing import Any

from scenetok.recipe import Recipe


def build_dataset(recipe: Recipe, split: str | None = None, **changes: Any) -> Any:
    """Instantiate ``recipe.dataset`` (optionally for another ``split`` or with config ``changes``)."""
    spec = recipe["dataset"]
    if split is not None:
        changes["split"] = split
    config = dataclasses.replace(spec.config, **changes) if changes else spec.config
    return spec.cls(config)
