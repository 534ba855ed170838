"""``pixel``: a weight-free "autoencoder" that only rearranges pixels (space-to-depth).

Each ``p x p`` patch of an RGB image becomes one latent cell of ``3 p^2`` channels, with values
mapped from ``[0, 1]`` to ``[-1, 1]`` (the range ST feeds its denoiser when it runs without an
autoencoder). Decoding is the exact inverse. It is the embedded default for CPU training: no weights,
no download, and any image size divisible by ``p`` works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from scenetok.weights import check_images, check_latents
from scenetok.interfaces import ImageCompressor, LatentSpec


class PixelCompressor(ImageCompressor):
    """Space-to-depth patchify: ``(B, V, 3, H, W)`` in ``[0, 1]`` -> ``(B, V, 3 p^2, H/p, W/p)`` in
    ``[-1, 1]``.

    Channel ``c * p^2 + i * p + j`` of a latent cell holds colour ``c`` of the pixel at row ``i``,
    column ``j`` of its patch (the :func:`torch.nn.functional.pixel_unshuffle` order).
    """

    @dataclass
    class Config:
        """Configuration of :class:`PixelCompressor`.

        Attributes:
            patch_size: side ``p`` of the square pixel patch folded into one latent cell; image
                height and width must be multiples of it. ``1`` keeps full resolution (3 channels).
        """

        patch_size: int = 4

        def __post_init__(self) -> None:
            if self.patch_size < 1:
                raise ValueError(f"patch_size must be >= 1, got {self.patch_size}")

    presets: ClassVar[dict[str, dict]] = {"p1": {"patch_size": 1}, "p2": {"patch_size": 2}, "p4": {"patch_size": 4}}
    trainable: ClassVar[bool] = False

    def __init__(self, config: Config | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else self.Config()

    @classmethod
    def latent_spec(cls, config: Config) -> LatentSpec:
        return LatentSpec(channels=3 * config.patch_size**2, spatial_factor=config.patch_size)

    def encode(self, images: Tensor, sample: bool = False) -> Tensor:
        """``(B, V, 3, H, W)`` in ``[0, 1]`` -> ``(B, V, 3 p^2, H/p, W/p)`` in ``[-1, 1]``.

        ``sample`` is accepted for interface compatibility; the map is deterministic.
        """
        check_images(images, "pixel")
        batch, views, _, height, width = images.shape
        p = self.config.patch_size
        if height % p or width % p:
            raise ValueError(f"pixel: image size {height}x{width} is not divisible by patch_size {p}")
        cells = F.pixel_unshuffle(images.reshape(batch * views, 3, height, width), p)
        return (cells * 2.0 - 1.0).reshape(batch, views, *cells.shape[1:])

    def decode(self, latents: Tensor) -> Tensor:
        """``(B, V, 3 p^2, h, w)`` -> images ``(B, V, 3, h p, w p)`` clamped to ``[0, 1]``."""
        p = self.config.patch_size
        check_latents(latents, 3 * p * p, "pixel")
        batch, views = latents.shape[:2]
        images = F.pixel_shuffle(latents.reshape(batch * views, *latents.shape[2:]), p)
        images = (images * 0.5 + 0.5).clamp(0.0, 1.0)
        return images.reshape(batch, views, *images.shape[1:])
