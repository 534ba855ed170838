"""SceneTok: a compressed, diffusable token space for 3D scenes.

Importing this package is cheap on purpose: it must not import torch, so that
`scenetok plugins` and recipe tooling start instantly. Import submodules
(`scenetok.model`, `scenetok.registry`, ...) for the real work.
"""

__version__ = "0.2.0"

__all__ = ["__version__"]
