"""``vavae``: VA-VAE f16d32 (LightningDiT's vision-foundation-aligned KL autoencoder), the paper's
context compressor, built on diffusers' :class:`~diffusers.AutoencoderKL`.

Architecture (FORMATS §4.1): an LDM KL autoencoder with level widths (128, 128, 256, 256, 512), two
resnets per level, 32 latent channels, f16 -- and, unlike SD's VAE, self-attention blocks in the
lowest-resolution level of both encoder and decoder (``attn_resolutions=[16]`` at 256 px). Those are
built here as ``AttnDownEncoderBlock2D`` / ``AttnUpDecoderBlock2D`` (``attention_levels``), which is
what makes the released checkpoint load *strictly*; see :mod:`scenetok.convert.vavae`.

Latents are standardised inside the component with per-channel statistics:
``z_std = (z - mean) / std``. The defaults are the 32 means/stds the official SceneTok code hard-codes
(its ``src/model/diffusion.py``, described there as the VA-VAE ``latents_stats.pt`` values); a
``latents_stats.pt`` file (``{"mean": (1, 32, 1, 1), "std": (1, 32, 1, 1)}``) given in ``latent_stats``
replaces them, and its largest deviation from the built-in values is logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from scenetok.convert.vavae import convert_ldm_vae_state_dict, is_ldm_layout, load_ldm_checkpoint
from scenetok.weights import (
    check_images,
    check_latents,
    freeze,
    load_state_dict_exactly,
    resolve_weights,
    to_signed,
    to_unit,
    warn_random_init,
)
from scenetok.interfaces import ImageCompressor, LatentSpec

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "vavae-imagenet256-f16d32-dinov2.pt"
CHECKPOINT_SOURCE = (
    "https://huggingface.co/hustvl/vavae-imagenet256-f16d32-dinov2 (file vavae-imagenet256-f16d32-dinov2.pt; "
    "project github.com/hustvl/LightningDiT)"
)
STATS_SOURCE = "LightningDiT's latents_stats.pt for VA-VAE f16d32 (github.com/hustvl/LightningDiT)"

#: Per-channel latent mean of VA-VAE f16d32 as hard-coded by the official SceneTok code.
VAVAE_LATENT_MEAN: tuple[float, ...] = (
    0.5985, -0.4992, 0.6440, -0.0971, -1.1910, -1.4332, 0.4685, 0.6259,
    0.6320, -0.4897, -0.7445, 1.1596, 0.8456, 0.5008, 0.2293, 0.4754,
    -0.4379, 0.8317, -0.0751, 0.3063, 0.4665, -0.0914, -0.8271, 0.0781,
    1.4151, 1.3792, 0.2696, -0.7573, 0.2813, -0.3092, 0.0779, 0.3497,
)
#: Per-channel latent standard deviation of VA-VAE f16d32 (same source).
VAVAE_LATENT_STD: tuple[float, ...] = (
    3.8461, 4.2699, 3.5768, 3.5911, 3.6231, 3.4810, 3.3075, 3.5093,
    3.5541, 3.6067, 3.7058, 3.6314, 3.6295, 3.6205, 3.2590, 3.1868,
    3.8258, 3.5999, 3.2966, 3.2261, 3.2192, 3.1055, 3.5805, 4.3569,
    3.3085, 3.2076, 4.5150, 3.4870, 3.0416, 3.4869, 4.4310, 4.0881,
)


class VAVAE(ImageCompressor):
    """VA-VAE f16d32: ``(B, V, 3, H, W)`` in ``[0, 1]`` <-> standardised latents ``(B, V, 32, H/16, W/16)``.

    Frozen: eval mode, no gradients, ``trainable = False``.
    """

    @dataclass
    class Config:
        """Configuration of :class:`VAVAE`.

        Attributes:
            checkpoint: path of the weights: the released LDM-format ``.pt`` (converted on load, see
                :mod:`scenetok.convert.vavae`) or a ``.safetensors`` file with either LDM or diffusers
                names. ``""`` looks up ``vavae-imagenet256-f16d32-dinov2.pt`` in ``$SCENETOK_WEIGHTS_DIR``.
            random_init: build with random weights instead of loading any (tests / smoke runs only;
                logged as a warning). Requires ``checkpoint: ""``.
            latent_stats: per-channel standardisation: ``"builtin"`` (the official 32-channel
                constants; identity with a warning when ``latent_channels != 32``), ``"identity"``
                (no standardisation), or the path of a ``latents_stats.pt`` file.
            block_out_channels: channel width of each resolution level, highest resolution first; the
                spatial factor is ``2 ** (len - 1)``.
            layers_per_block: resnet blocks per encoder level (the decoder has one more).
            latent_channels: latent channels ``C``.
            attention_levels: levels (indices into ``block_out_channels``, negative counts from the
                end) that carry self-attention blocks besides the mid block; ``[-1]`` = the lowest
                resolution, as in VA-VAE.
            norm_num_groups: GroupNorm groups (must divide every width).
            micro_batch: encode/decode at most this many frames per autoencoder call (bounds memory
                at paper size); ``0`` = all frames at once.
        """

        checkpoint: str = ""
        random_init: bool = False
        latent_stats: str = "builtin"
        block_out_channels: list[int] = field(default_factory=lambda: [128, 128, 256, 256, 512])
        layers_per_block: int = 2
        latent_channels: int = 32
        attention_levels: list[int] = field(default_factory=lambda: [-1])
        norm_num_groups: int = 32
        micro_batch: int = 0

        def __post_init__(self) -> None:
            if self.random_init and self.checkpoint:
                raise ValueError("checkpoint: give either a checkpoint path or random_init=true, not both")
            if not self.block_out_channels:
                raise ValueError("block_out_channels must list at least one level width")
            levels = len(self.block_out_channels)
            for level in self.attention_levels:
                if not -levels <= level < levels:
                    raise ValueError(f"attention_levels: level {level} is out of range for {levels} levels")
            for width in self.block_out_channels:
                if width % self.norm_num_groups:
                    raise ValueError(f"norm_num_groups: {self.norm_num_groups} does not divide width {width}")
            if self.layers_per_block < 1 or self.latent_channels < 1 or self.micro_batch < 0:
                raise ValueError("layers_per_block and latent_channels must be >= 1, micro_batch >= 0")

    #: Released weights (read by ``scenetok validate``; see :func:`scenetok.weights.recipe_weights`).
    weights_name: ClassVar[str] = CHECKPOINT_NAME
    weights_source: ClassVar[str] = CHECKPOINT_SOURCE
    presets: ClassVar[dict[str, dict]] = {
        # Paper size (69.8 M parameters); the defaults already are this.
        "f16d32": {},
        # A CPU-test size: same topology (5 levels, attention at the lowest), narrow widths.
        "tiny": {"block_out_channels": [32, 32, 32, 32, 64], "layers_per_block": 1, "norm_num_groups": 16},
    }
    trainable: ClassVar[bool] = False

    def __init__(self, config: Config | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else self.Config()
        self.autoencoder = build_autoencoder(self.config)
        if self.config.random_init:
            warn_random_init("vavae")
        else:
            self._load_weights()
        freeze(self.autoencoder)
        mean, std = self._latent_statistics()
        # Non-persistent: the statistics are part of the config, not of a trained state.
        self.register_buffer("latent_mean", mean.reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("latent_std", std.reshape(1, -1, 1, 1), persistent=False)

    @classmethod
    def latent_spec(cls, config: Config) -> LatentSpec:
        return LatentSpec(channels=config.latent_channels, spatial_factor=2 ** (len(config.block_out_channels) - 1))

    # -- loading -------------------------------------------------------------------------------

    def _load_weights(self) -> None:
        path = resolve_weights(self.config.checkpoint, default_name=CHECKPOINT_NAME, component="vavae",
                               source=CHECKPOINT_SOURCE)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
            if is_ldm_layout(state):
                state = convert_ldm_vae_state_dict(load_ldm_checkpoint(path))
        else:
            state = convert_ldm_vae_state_dict(load_ldm_checkpoint(path))
        load_state_dict_exactly(self.autoencoder, state, str(path))
        logger.info("vavae: loaded %d tensors from %s", len(state), path)

    def _latent_statistics(self) -> tuple[Tensor, Tensor]:
        channels = self.config.latent_channels
        choice = self.config.latent_stats
        builtin = (torch.tensor(VAVAE_LATENT_MEAN), torch.tensor(VAVAE_LATENT_STD))
        if choice == "identity":
            return torch.zeros(channels), torch.ones(channels)
        if choice == "builtin":
            if channels != len(VAVAE_LATENT_MEAN):
                logger.warning(
                    "vavae: no built-in latent statistics for %d channels (they exist for 32); latents are "
                    "NOT standardised (identity)", channels,
                )
                return torch.zeros(channels), torch.ones(channels)
            return builtin
        path = resolve_weights(choice, default_name="latents_stats.pt", component="vavae.latent_stats",
                               source=STATS_SOURCE, key="image_compressor.latent_stats")
        stats = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(stats, dict) or "mean" not in stats or "std" not in stats:
            raise ValueError(f"vavae.latent_stats: {path} must hold a dict with 'mean' and 'std' tensors")
        mean, std = stats["mean"].flatten().float(), stats["std"].flatten().float()
        if mean.numel() != channels or std.numel() != channels:
            raise ValueError(
                f"vavae.latent_stats: {path} has {mean.numel()} means / {std.numel()} stds, expected {channels}"
            )
        if channels == len(VAVAE_LATENT_MEAN):
            logger.info(
                "vavae: %s differs from the built-in statistics by at most %.2e (mean) / %.2e (std)", path,
                (mean - builtin[0]).abs().max().item(), (std - builtin[1]).abs().max().item(),
            )
        return mean, std

    # -- encode / decode -----------------------------------------------------------------------

    def _chunks(self, frames: Tensor) -> list[Tensor]:
        size = self.config.micro_batch or frames.shape[0]
        return list(frames.split(size))

    def encode(self, images: Tensor, sample: bool = False) -> Tensor:
        """``(B, V, 3, H, W)`` in ``[0, 1]`` -> standardised latents ``(B, V, C, H/f, W/f)``.

        ``sample=True`` draws from the posterior (torch's global RNG), as the paper does in training;
        ``False`` returns the posterior mean.
        """
        check_images(images, "vavae")
        batch, views = images.shape[:2]
        frames = to_signed(images.reshape(batch * views, *images.shape[2:]))
        latents = []
        for chunk in self._chunks(frames.to(self.latent_mean.dtype)):
            posterior = self.autoencoder.encode(chunk).latent_dist
            latents.append(posterior.sample() if sample else posterior.mode())
        z = (torch.cat(latents) - self.latent_mean) / self.latent_std
        return z.reshape(batch, views, *z.shape[1:])

    def decode(self, latents: Tensor) -> Tensor:
        """Standardised latents ``(B, V, C, h, w)`` -> images ``(B, V, 3, h f, w f)`` in ``[0, 1]``."""
        check_latents(latents, self.config.latent_channels, "vavae")
        batch, views = latents.shape[:2]
        z = latents.reshape(batch * views, *latents.shape[2:]) * self.latent_std + self.latent_mean
        images = torch.cat([self.autoencoder.decode(chunk).sample for chunk in self._chunks(z)])
        images = to_unit(images)
        return images.reshape(batch, views, *images.shape[1:])


def build_autoencoder(config: VAVAE.Config) -> AutoencoderKL:
    """The diffusers ``AutoencoderKL`` of a :class:`VAVAE` config (random weights)."""
    from diffusers import AutoencoderKL

    levels = len(config.block_out_channels)
    attention = {level % levels for level in config.attention_levels}
    down = tuple("AttnDownEncoderBlock2D" if i in attention else "DownEncoderBlock2D" for i in range(levels))
    # diffusers' up_blocks[0] is the lowest resolution: reverse the level order.
    up = tuple("AttnUpDecoderBlock2D" if i in attention else "UpDecoderBlock2D" for i in reversed(range(levels)))
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        act_fn="silu",
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        # Bookkeeping only: standardisation happens in VAVAE with per-channel statistics.
        scaling_factor=1.0,
    )
