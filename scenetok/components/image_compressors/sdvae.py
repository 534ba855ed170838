"""``sdvae``: Stable Diffusion's KL autoencoder (f8, 4 channels) through diffusers'
:class:`~diffusers.AutoencoderKL` -- a swap-in alternative to VA-VAE.

Weights: a local diffusers folder (``config.json`` + weights, e.g. ``stabilityai/sd-vae-ft-ema``, or a
full SD pipeline folder with ``subfolder: vae``), or a single LDM/diffusers weights file together with a
local folder holding its ``config.json`` (``config_dir``). Nothing is fetched from the Hub.

Latents: ``z_std = (z - shift) * scale`` with SD's ``scale = 0.18215``, ``shift = 0`` by default (the
values ST uses for its ``kl`` option).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from scenetok.weights import (
    MissingWeightsError,
    check_images,
    check_latents,
    freeze,
    resolve_weights,
    to_signed,
    to_unit,
    warn_random_init,
)
from scenetok.interfaces import ImageCompressor, LatentSpec

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

logger = logging.getLogger(__name__)

DEFAULT_NAME = "sd-vae-ft-ema"
SOURCE = "https://huggingface.co/stabilityai/sd-vae-ft-ema (the whole folder: config.json + weights)"


class SDVAE(ImageCompressor):
    """SD-VAE: ``(B, V, 3, H, W)`` in ``[0, 1]`` <-> standardised latents ``(B, V, 4, H/8, W/8)``.

    Frozen: eval mode, no gradients, ``trainable = False``.
    """

    @dataclass
    class Config:
        """Configuration of :class:`SDVAE`.

        Attributes:
            checkpoint: a diffusers folder (``from_pretrained``) or a single weights file
                (``.safetensors`` / ``.ckpt``, LDM or diffusers names; needs ``config_dir``). ``""``
                looks up ``sd-vae-ft-ema`` in ``$SCENETOK_WEIGHTS_DIR``.
            subfolder: folder inside ``checkpoint`` holding the VAE (``"vae"`` for a pipeline folder).
            config_dir: local folder with the ``config.json`` of a single-file checkpoint.
            random_init: build with random weights from the architecture fields below (tests / smoke
                runs only; logged as a warning). Requires ``checkpoint: ""``.
            scale: latent multiplier after the shift (SD: 0.18215).
            shift: latent offset subtracted before scaling (SD: 0).
            block_out_channels: level widths, highest resolution first (spatial factor
                ``2 ** (len - 1)``); must match the loaded weights.
            layers_per_block: resnets per encoder level (used for random init).
            latent_channels: latent channels ``C``; must match the loaded weights.
            norm_num_groups: GroupNorm groups (used for random init).
            micro_batch: at most this many frames per autoencoder call; ``0`` = all at once.
        """

        checkpoint: str = ""
        subfolder: str = ""
        config_dir: str = ""
        random_init: bool = False
        scale: float = 0.18215
        shift: float = 0.0
        block_out_channels: list[int] = field(default_factory=lambda: [128, 256, 512, 512])
        layers_per_block: int = 2
        latent_channels: int = 4
        norm_num_groups: int = 32
        micro_batch: int = 0

        def __post_init__(self) -> None:
            if self.random_init and self.checkpoint:
                raise ValueError("checkpoint: give either a checkpoint path or random_init=true, not both")
            if self.scale == 0:
                raise ValueError("scale must be non-zero")
            if not self.block_out_channels or self.latent_channels < 1 or self.micro_batch < 0:
                raise ValueError("block_out_channels must be non-empty, latent_channels >= 1, micro_batch >= 0")

    #: Released weights (read by ``scenetok validate``; see :func:`scenetok.weights.recipe_weights`).
    weights_name: ClassVar[str] = DEFAULT_NAME
    weights_source: ClassVar[str] = SOURCE
    presets: ClassVar[dict[str, dict]] = {
        "tiny": {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1},
    }
    trainable: ClassVar[bool] = False

    def __init__(self, config: Config | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else self.Config()
        if self.config.random_init:
            self.autoencoder = _build(self.config)
            warn_random_init("sdvae")
        else:
            self.autoencoder = self._load()
        self._check_architecture()
        freeze(self.autoencoder)

    @classmethod
    def latent_spec(cls, config: Config) -> LatentSpec:
        return LatentSpec(channels=config.latent_channels, spatial_factor=2 ** (len(config.block_out_channels) - 1))

    def _load(self) -> AutoencoderKL:
        from diffusers import AutoencoderKL

        path = resolve_weights(self.config.checkpoint, default_name=DEFAULT_NAME, component="sdvae", source=SOURCE)
        if path.is_dir():
            logger.info("sdvae: loading diffusers folder %s", path)
            return AutoencoderKL.from_pretrained(str(path), subfolder=self.config.subfolder or None,
                                                 local_files_only=True)
        if not self.config.config_dir:
            raise MissingWeightsError(
                f"sdvae: {path} is a single weights file; set image_compressor.config_dir to a local folder holding its "
                f"config.json (e.g. the one from {SOURCE}) -- nothing is fetched from the Hub"
            )
        config_dir = resolve_weights(self.config.config_dir, default_name="", component="sdvae.config_dir",
                                     source=SOURCE, key="image_compressor.config_dir")
        logger.info("sdvae: loading single file %s with config %s", path, config_dir)
        # `config=` keeps diffusers from asking the Hub for a config (ENVIRONMENT §2).
        return AutoencoderKL.from_single_file(str(path), config=str(config_dir), local_files_only=True)

    def _check_architecture(self) -> None:
        loaded = self.autoencoder.config
        if loaded.latent_channels != self.config.latent_channels or list(loaded.block_out_channels) != list(
            self.config.block_out_channels
        ):
            raise ValueError(
                f"sdvae: the loaded weights have latent_channels={loaded.latent_channels}, block_out_channels="
                f"{list(loaded.block_out_channels)}, but the config says {self.config.latent_channels}, "
                f"{list(self.config.block_out_channels)}; set them to match (the latent shape is declared "
                "from the config)"
            )

    def _chunks(self, frames: Tensor) -> list[Tensor]:
        return list(frames.split(self.config.micro_batch or frames.shape[0]))

    def encode(self, images: Tensor, sample: bool = False) -> Tensor:
        """``(B, V, 3, H, W)`` in ``[0, 1]`` -> standardised latents ``(B, V, C, H/8, W/8)``
        (posterior mean, or a sample when ``sample=True``)."""
        check_images(images, "sdvae")
        batch, views = images.shape[:2]
        frames = to_signed(images.reshape(batch * views, *images.shape[2:]))
        raw = []
        for chunk in self._chunks(frames):
            posterior = self.autoencoder.encode(chunk).latent_dist
            raw.append(posterior.sample() if sample else posterior.mode())
        z = (torch.cat(raw) - self.config.shift) * self.config.scale
        return z.reshape(batch, views, *z.shape[1:])

    def decode(self, latents: Tensor) -> Tensor:
        """Standardised latents ``(B, V, C, h, w)`` -> images ``(B, V, 3, 8h, 8w)`` in ``[0, 1]``."""
        check_latents(latents, self.config.latent_channels, "sdvae")
        batch, views = latents.shape[:2]
        z = latents.reshape(batch * views, *latents.shape[2:]) / self.config.scale + self.config.shift
        images = to_unit(torch.cat([self.autoencoder.decode(chunk).sample for chunk in self._chunks(z)]))
        return images.reshape(batch, views, *images.shape[1:])


def _build(config: SDVAE.Config) -> AutoencoderKL:
    from diffusers import AutoencoderKL

    levels = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        scaling_factor=config.scale,
    )
