"""The core data layer (public plugin API).

* :mod:`scenetok.data.dataset`: :class:`BaseSceneDataset`, the base class of every dataset,
  :class:`SceneDatasetConfig`, the config fields they share, :func:`parse_image_size` and
  :func:`build_dataset`.
* :mod:`scenetok.data.view_sampling`: which frames become context and target views.
* :mod:`scenetok.data.index`: evaluation-index files.
* :mod:`scenetok.data.transforms_format`: reading nerfstudio ``transforms.json`` captures.
* Tools: latent caches (:mod:`~scenetok.data.cache`), previews (:mod:`~scenetok.data.preview`),
  capture conversion (:mod:`~scenetok.data.convert`).

The names below are exported lazily so that ``import scenetok.data.index`` stays torch-free.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BaseSceneDataset": "scenetok.data.dataset",
    "SceneDatasetConfig": "scenetok.data.dataset",
    "SPLITS": "scenetok.data.dataset",
    "build_dataset": "scenetok.data.dataset",
    "parse_image_size": "scenetok.data.dataset",
    "CorruptSampleError": "scenetok.interfaces",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'scenetok.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
