"""``precomputed``: latents computed outside scenetok by an autoencoder it does not ship.

The paper's RE10K renderer predicts Video DC-AE (f32 t4 c128, Open-Sora v2) latents that were
precomputed once for the whole dataset. scenetok ships that autoencoder (``video_dcae``); this
component is for latents cached by other tools (or by an autoencoder scenetok does not ship): it
declares their shape (and scale) so that recipes, validation, the model summary and training on a
latent cache work exactly as with any other compressor. It has no network: ``encode`` and ``decode``
raise with a message that says where the latents must come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from scenetok.interfaces import ImageCompressor, LatentSpec


class PrecomputedLatents(ImageCompressor):
    """Shape declaration for externally precomputed latents ``(B, F, channels, H/s, W/s)``."""

    @dataclass
    class Config:
        """Configuration of :class:`PrecomputedLatents` (defaults: the paper's Video DC-AE).

        Attributes:
            channels: latent channels ``C``.
            spatial_factor: pixels per latent cell along each axis.
            temporal_factor: frames per latent frame (4 for video autoencoders).
            scale: multiplier that standardises the raw latents (the paper's Video DC-AE: 0.493);
                applied by whatever writes the latent cache.
            source: the autoencoder that produced the latents (documentation for readers).
        """

        channels: int = 128
        spatial_factor: int = 32
        temporal_factor: int = 4
        scale: float = 0.493
        source: str = "Video DC-AE f32t4c128 (Open-Sora v2)"

        def __post_init__(self) -> None:
            for name in ("channels", "spatial_factor", "temporal_factor"):
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    presets: ClassVar[dict[str, dict]] = {"video_dc": {}}
    trainable: ClassVar[bool] = False

    def __init__(self, config: Config | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else self.Config()

    @classmethod
    def latent_spec(cls, config: Config) -> LatentSpec:
        return LatentSpec(config.channels, config.spatial_factor, config.temporal_factor)

    def encode(self, images: Tensor, sample: bool = False) -> Tensor:
        raise RuntimeError(
            f"'precomputed' cannot encode images: its latents come from {self.config.source}, computed "
            "outside scenetok. Train on a latent cache (train.latent_cache) that holds them."
        )

    def decode(self, latents: Tensor) -> Tensor:
        raise RuntimeError(
            f"'precomputed' cannot decode latents: decode them with {self.config.source}, or render "
            "with decode=False to get the latents."
        )
