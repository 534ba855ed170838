"""``wan22``: the Wan 2.2 video VAE (causal 3-D convolutions, 4x temporal, 16x spatial, 48 channels)
through diffusers' :class:`~diffusers.AutoencoderKLWan`; the paper's DL3DV target compressor.

Frame grouping (FORMATS §6.2): the target frames are split into independent clips of ``chunk_frames``
frames (17 in the paper), each a causal ``1 + 4k`` sequence: frame 0 of a clip gets a latent frame of
its own, each following latent frame covers 4 frames, so 17 frames -> 5 latent frames. Clips are
encoded and decoded separately (they share no causal cache), exactly as ST treats them, so the rest of
the system can denoise clips at independent noise levels. ``chunk_frames: 0`` encodes the whole
sequence as one clip (``V = 1 + 4k``).

Latents: ``z_std = (mu - mean) / std`` with Wan 2.2's 48 per-channel constants (diffusers does not
apply them itself); ``sample=False`` returns the posterior mean, as Wan and ST do.

Weights: a local diffusers folder (``Wan-AI/Wan2.2-TI2V-5B-Diffusers``, ``subfolder: vae``) or a
single ``.safetensors`` file with diffusers names. The original ``Wan2.2_VAE.pth`` uses another key
layout; convert it once with diffusers' ``scripts/convert_wan_to_diffusers.py`` (``convert_vae_22``)
-- not with ``from_single_file``, whose Wan converter follows the Wan 2.1 decoder layout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from scenetok.interfaces import ImageCompressor, LatentSpec
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

if TYPE_CHECKING:
    from diffusers import AutoencoderKLWan

logger = logging.getLogger(__name__)

DEFAULT_NAME = "Wan2.2-TI2V-5B-Diffusers"
SOURCE = (
    "https://huggingface.co/Wan-AI/Wan2.2-TI2V-5B-Diffusers (folder vae/: config.json + "
    "diffusion_pytorch_model.safetensors)"
)

#: Wan 2.2 per-channel latent mean (Wan2.2-TI2V-5B VAE; equal to diffusers' converted config).
WAN22_LATENT_MEAN: tuple[float, ...] = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)
#: Wan 2.2 per-channel latent standard deviation (same source).
WAN22_LATENT_STD: tuple[float, ...] = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)

# diffusers' AutoencoderKLWan streams the encoder over frame 0 and then 4-frame groups: the
# temporal factor is fixed at 4 by the class, whatever the config says.
TEMPORAL_FACTOR = 4


class Wan22VAE(ImageCompressor):
    """Wan 2.2 VAE: ``(B, V, 3, H, W)`` in ``[0, 1]`` <-> standardised latents ``(B, F, 48, H/16, W/16)``,
    ``F = (V / chunk_frames) * (1 + (chunk_frames - 1) / 4)``.

    Frozen: eval mode, no gradients, ``trainable = False``.
    """

    @dataclass
    class Config:
        """Configuration of :class:`Wan22VAE`.

        Attributes:
            checkpoint: a local diffusers folder (``from_pretrained``) or a ``.safetensors`` file with
                diffusers names (built from the architecture fields below). ``""`` looks up
                ``Wan2.2-TI2V-5B-Diffusers`` (with ``subfolder: vae``) in ``$SCENETOK_WEIGHTS_DIR``.
            subfolder: folder inside ``checkpoint`` holding the VAE (``"vae"`` for the pipeline folder).
            random_init: build with random weights from the architecture fields (tests / smoke runs
                only; logged as a warning). Requires ``checkpoint: ""``.
            chunk_frames: frames per independently encoded clip (``1 + 4k``; 17 in the paper), or 0
                for one clip per sequence.
            latent_stats: ``"auto"`` (the loaded model config's ``latents_mean/std`` when they have
                ``z_dim`` entries, else Wan 2.2's constants when ``z_dim == 48``, else identity with a
                warning) or ``"identity"``.
            base_dim: encoder base width (Wan 2.2: 160).
            decoder_base_dim: decoder base width (Wan 2.2: 256).
            z_dim: latent channels ``C`` (Wan 2.2: 48).
            dim_mult: width multipliers per level; spatial factor ``patch_size * 2 ** (len - 1)``.
            num_res_blocks: residual blocks per level.
            temperal_downsample: per level transition, whether it also halves time (diffusers' name and
                spelling); exactly two ``true`` (the 4x causal factor).
            is_residual: Wan 2.2's residual up/down blocks.
            patch_size: input pixel patchify before the encoder (Wan 2.2: 2); 0 = none.
        """

        checkpoint: str = ""
        subfolder: str = "vae"
        random_init: bool = False
        chunk_frames: int = 17
        latent_stats: str = "auto"
        base_dim: int = 160
        decoder_base_dim: int = 256
        z_dim: int = 48
        dim_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 4])
        num_res_blocks: int = 2
        temperal_downsample: list[bool] = field(default_factory=lambda: [False, True, True])
        is_residual: bool = True
        patch_size: int = 2

        def __post_init__(self) -> None:
            if self.random_init and self.checkpoint:
                raise ValueError("checkpoint: give either a checkpoint path or random_init=true, not both")
            if self.chunk_frames < 0 or (self.chunk_frames and (self.chunk_frames - 1) % TEMPORAL_FACTOR):
                raise ValueError(f"chunk_frames must be 0 or 1 + 4k (e.g. 17), got {self.chunk_frames}")
            if self.latent_stats not in ("auto", "identity"):
                raise ValueError(f"latent_stats must be 'auto' or 'identity', got {self.latent_stats!r}")
            if len(self.temperal_downsample) != len(self.dim_mult) - 1 or sum(map(bool, self.temperal_downsample)) != 2:
                raise ValueError(
                    "temperal_downsample needs len(dim_mult) - 1 entries with exactly two true (4x in time), "
                    f"got {list(self.temperal_downsample)}"
                )
            if self.patch_size < 0:
                raise ValueError(f"patch_size must be >= 0, got {self.patch_size}")

    #: Released weights (read by ``scenetok validate``; see :func:`scenetok.weights.recipe_weights`).
    weights_name: ClassVar[str] = DEFAULT_NAME
    weights_source: ClassVar[str] = SOURCE
    presets: ClassVar[dict[str, dict]] = {
        # A CPU-test size (FORMATS/ENVIRONMENT §3): 0.8 M parameters, spatial factor 8.
        "tiny": {"base_dim": 16, "decoder_base_dim": 16, "z_dim": 4, "dim_mult": [1, 2, 2, 2],
                 "num_res_blocks": 1, "is_residual": False, "patch_size": 0},
    }
    trainable: ClassVar[bool] = False

    def __init__(self, config: Config | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else self.Config()
        if self.config.random_init:
            self.autoencoder = _build(self.config)
            warn_random_init("wan22")
        else:
            self.autoencoder = self._load()
        if int(self.autoencoder.config.z_dim) != self.config.z_dim:
            raise ValueError(
                f"wan22: the loaded weights have z_dim={self.autoencoder.config.z_dim}, the config says "
                f"{self.config.z_dim}; set wan22.z_dim to match"
            )
        freeze(self.autoencoder)
        mean, std = self._latent_statistics()
        self.register_buffer("latent_mean", mean.reshape(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("latent_std", std.reshape(1, -1, 1, 1, 1), persistent=False)

    @classmethod
    def latent_spec(cls, config: Config) -> LatentSpec:
        return LatentSpec(
            channels=config.z_dim,
            spatial_factor=max(config.patch_size, 1) * 2 ** (len(config.dim_mult) - 1),
            temporal_factor=TEMPORAL_FACTOR,
            first_frame_alone=True,
            chunk_frames=config.chunk_frames,
        )

    # -- loading -------------------------------------------------------------------------------

    def _load(self) -> AutoencoderKLWan:
        from diffusers import AutoencoderKLWan

        path = resolve_weights(self.config.checkpoint, default_name=DEFAULT_NAME, component="wan22", source=SOURCE)
        if path.is_dir():
            logger.info("wan22: loading diffusers folder %s (subfolder %r)", path, self.config.subfolder)
            return AutoencoderKLWan.from_pretrained(str(path), subfolder=self.config.subfolder or None,
                                                    local_files_only=True)
        if path.suffix != ".safetensors":
            raise ValueError(
                f"wan22: {path} is not a diffusers folder or .safetensors file. The original Wan2.2_VAE.pth "
                "uses Wan's own key layout: convert it with diffusers' scripts/convert_wan_to_diffusers.py "
                f"(Wan2.2 VAE) or download the converted folder from {SOURCE}"
            )
        from safetensors.torch import load_file

        state = load_file(str(path))
        if any(k.startswith(("encoder.downsamples.", "decoder.upsamples.", "conv1.")) for k in state):
            raise ValueError(
                f"wan22: {path} uses the original Wan key layout (encoder.downsamples.*); convert it with "
                "diffusers' scripts/convert_wan_to_diffusers.py (Wan2.2 VAE) first"
            )
        model = _build(self.config)
        load_state_dict_exactly(model, state, str(path))
        return model

    def _latent_statistics(self) -> tuple[Tensor, Tensor]:
        channels = self.config.z_dim
        if self.config.latent_stats == "identity":
            return torch.zeros(channels), torch.ones(channels)
        model_config = self.autoencoder.config
        mean, std = getattr(model_config, "latents_mean", None), getattr(model_config, "latents_std", None)
        if mean is not None and std is not None and len(mean) == len(std) == channels:
            mean, std = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
            if bool((mean == 0).all() and (std == 1).all()):
                logger.warning("wan22: the model's latent statistics are identity; latents are NOT standardised")
            return mean, std
        if channels == len(WAN22_LATENT_MEAN):
            return torch.tensor(WAN22_LATENT_MEAN), torch.tensor(WAN22_LATENT_STD)
        logger.warning("wan22: no latent statistics for z_dim=%d; latents are NOT standardised (identity)", channels)
        return torch.zeros(channels), torch.ones(channels)

    # -- encode / decode -----------------------------------------------------------------------

    def _clips(self, num_frames: int) -> tuple[int, int]:
        """``(frames per clip, latent frames per clip)`` for a sequence of ``num_frames``."""
        self.spec.latent_frames(num_frames)  # validates divisibility with a clear message
        clip = self.config.chunk_frames or num_frames
        return clip, 1 + (clip - 1) // TEMPORAL_FACTOR

    def encode(self, images: Tensor, sample: bool = False) -> Tensor:
        """``(B, V, 3, H, W)`` in ``[0, 1]`` -> standardised latents ``(B, F, C, h, w)``; each clip of
        ``chunk_frames`` frames is encoded independently."""
        check_images(images, "wan22")
        batch, views = images.shape[:2]
        clip, latent_clip = self._clips(views)
        clips = views // clip
        # (B, V, 3, H, W) -> (B * clips, 3, clip, H, W): clips become batch elements.
        video = to_signed(images).reshape(batch * clips, clip, *images.shape[2:]).transpose(1, 2)
        posterior = self.autoencoder.encode(video.to(self.latent_mean.dtype)).latent_dist
        z = ((posterior.sample() if sample else posterior.mode()) - self.latent_mean) / self.latent_std
        z = z.transpose(1, 2)  # (B * clips, latent_clip, C, h, w)
        return z.reshape(batch, clips * latent_clip, *z.shape[2:])

    def decode(self, latents: Tensor) -> Tensor:
        """Standardised latents ``(B, F, C, h, w)`` -> images ``(B, V, 3, H, W)`` in ``[0, 1]``."""
        check_latents(latents, self.config.z_dim, "wan22")
        batch, frames = latents.shape[:2]
        if self.config.chunk_frames:
            latent_clip = 1 + (self.config.chunk_frames - 1) // TEMPORAL_FACTOR
            if frames % latent_clip:
                raise ValueError(
                    f"wan22.decode: {frames} latent frames is not a multiple of the {latent_clip} latent frames "
                    f"of a {self.config.chunk_frames}-frame clip"
                )
        else:
            latent_clip = frames
        clips = frames // latent_clip
        z = latents.reshape(batch * clips, latent_clip, *latents.shape[2:]).transpose(1, 2)
        z = z * self.latent_std + self.latent_mean
        video = self.autoencoder.decode(z).sample  # (B * clips, 3, clip, H, W), clamped to [-1, 1]
        images = to_unit(video.transpose(1, 2))
        return images.reshape(batch, clips * images.shape[1], *images.shape[2:])


def _build(config: Wan22VAE.Config) -> AutoencoderKLWan:
    from diffusers import AutoencoderKLWan

    patch = config.patch_size or None
    channels = 3 * (config.patch_size**2 if patch else 1)
    paper_stats = config.z_dim == len(WAN22_LATENT_MEAN)
    return AutoencoderKLWan(
        base_dim=config.base_dim,
        decoder_base_dim=config.decoder_base_dim,
        z_dim=config.z_dim,
        dim_mult=list(config.dim_mult),
        num_res_blocks=config.num_res_blocks,
        attn_scales=[],
        temperal_downsample=[bool(t) for t in config.temperal_downsample],
        is_residual=config.is_residual,
        in_channels=channels,
        out_channels=channels,
        patch_size=patch,
        scale_factor_temporal=TEMPORAL_FACTOR,
        scale_factor_spatial=max(config.patch_size, 1) * 2 ** (len(config.dim_mult) - 1),
        # Recorded in the model config so a saved folder carries them; applied by Wan22VAE.
        latents_mean=list(WAN22_LATENT_MEAN) if paper_stats else [0.0] * config.z_dim,
        latents_std=list(WAN22_LATENT_STD) if paper_stats else [1.0] * config.z_dim,
    )
