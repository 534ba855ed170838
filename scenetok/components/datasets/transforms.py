"""``transforms``: nerfstudio-style scene folders (``transforms.json`` + images).

Everything is in the public data layer (:mod:`scenetok.data.transforms_format`), which the DL3DV
plugin builds on too; this module only registers it under the name ``transforms``.
"""

from __future__ import annotations

from scenetok.data.transforms_format import TransformsSceneDataset


class TransformsDataset(TransformsSceneDataset):
    """nerfstudio ``transforms.json`` folders: a scene folder, or a folder of scene folders
    (optionally split into ``train/``, ``validation/`` or ``val/``, ``test/``). See
    :mod:`scenetok.data.transforms_format` for discovery and camera conventions."""
