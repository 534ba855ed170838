"""``video_dcae``: Open-Sora 2.0's Video DC-AE (``dc-ae-f32t4c128``: 4x temporal, 32x spatial, 128
channels), the paper's RE10K target autoencoder, loading the released ``F32T4C128_AE.safetensors``.

The network is scenetok's own (:mod:`._video_dcae_net`); it loads the released file through an exact
key map (every tensor mapped, any missing/unexpected/misshapen tensor named) and matches Open-Sora's
reference network to ~1e-6 relative in float32 (``tests/test_video_dcae.py``).

Frames and latents (FORMATS §6.1, SCENETOK §7.4):

* non-causal: ``4k`` frames -> ``k`` latent frames; latent frame ``j`` covers frames ``4j .. 4j+3``.
  Other frame counts are refused (the paper's precompute first drops the last ``V mod 4`` frames).
* temporal grouping: the frames are encoded in independent clips of ``chunk_frames`` (16 = 4 latent
  frames, no overlap), exactly as the paper's latent precompute did, so target latents start at
  multiples of 4 latent frames and each group is independent of its neighbours. ``0`` encodes the
  whole sequence at once (the encoder's linear attention then spans all of it).
* tiling, for large or long inputs: frames wider/taller than ``tile_size`` pixels are encoded and
  decoded in overlapping spatial tiles, and more than ``tile_frames`` frames' worth of latents are
  decoded in overlapping temporal tiles (the official inference settings: 256 px, 32 frames, 25 %
  overlap); overlaps are cross-faded linearly. Tiles are aligned to latent cells.
* scaling: the latents are multiplied by ``scale = 0.493`` after encoding and divided by it before
  decoding -- what the official SceneTok code applies to Video DC-AE targets (Open-Sora's own
  ``scaling_factor`` works the other way round; ST disables it and scales outside, as done here).

The encoder is deterministic (no posterior): ``sample`` is ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from scenetok.interfaces import ImageCompressor, LatentSpec
from scenetok.weights import (
    CheckpointConversionError,
    check_images,
    check_latents,
    freeze,
    name_keys,
    resolve_weights,
    to_signed,
    to_unit,
    warn_random_init,
)

if TYPE_CHECKING:
    from scenetok.components.image_compressors._video_dcae_net import VideoDCAENet

logger = logging.getLogger(__name__)

DEFAULT_NAME = "F32T4C128_AE.safetensors"
SOURCE = ("https://huggingface.co/hpcai-tech/Open-Sora-v2-Video-DC-AE (file F32T4C128_AE.safetensors, "
          "Apache-2.0)")
#: Parameters and tensors of the released file (the reference network at ``dc-ae-f32t4c128``, Open-Sora
#: commit 7ad6a96; ``tests/fixtures/video_dcae/reference_keys.json``).
RELEASED_PARAMETERS = 459_462_147
RELEASED_TENSORS = 339


@dataclass(frozen=True)
class Architecture:
    """Shape of a Video DC-AE (defaults: the released ``dc-ae-f32t4c128``).

    Attributes:
        widths: channels of each resolution level, highest resolution first; ``len - 1`` spatial
            halvings.
        encoder_depths: blocks per encoder level.
        decoder_depths: blocks per decoder level.
        attention_levels: levels built from EfficientViT blocks (the others use residual conv blocks).
        temporal_levels: levels whose transition to the next level also halves (encoder) / doubles
            (decoder) time.
        latent_channels: latent channels ``C``.
        head_dim: channels per linear-attention head.
        attention_scales: kernel sizes of the multi-scale q/k/v aggregation.
        ffn_expansion: hidden-width multiplier of the gated FFN.
    """

    widths: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    encoder_depths: tuple[int, ...] = (2, 2, 2, 3, 3, 3)
    decoder_depths: tuple[int, ...] = (3, 3, 3, 3, 3, 3)
    attention_levels: tuple[int, ...] = (3, 4, 5)
    temporal_levels: tuple[int, ...] = (3, 4)
    latent_channels: int = 128
    head_dim: int = 32
    attention_scales: tuple[int, ...] = (5,)
    ffn_expansion: int = 4

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.widths) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** len(self.temporal_levels)

    def check(self) -> None:
        """Raise ``ValueError`` naming the field when the shapes cannot fit together."""
        levels = len(self.widths)
        if levels < 1 or len(self.encoder_depths) != levels or len(self.decoder_depths) != levels:
            raise ValueError(
                f"widths, encoder_depths and decoder_depths need one entry per level, got {list(self.widths)}, "
                f"{list(self.encoder_depths)}, {list(self.decoder_depths)}"
            )
        if min(self.encoder_depths) < 1 or min(self.decoder_depths) < 1:
            raise ValueError("encoder_depths / decoder_depths: every level needs at least one block")
        for name in ("attention_levels", "temporal_levels"):
            bad = [i for i in getattr(self, name) if not 0 <= i < levels - (name == "temporal_levels")]
            if bad:
                raise ValueError(f"{name}: levels {bad} are out of range for {levels} levels")
        for i in self.attention_levels:
            if self.widths[i] % self.head_dim:
                raise ValueError(f"widths[{i}]={self.widths[i]} is not a multiple of head_dim={self.head_dim}")
        for i in range(levels - 1):
            wide, narrow = self.widths[i], self.widths[i + 1]
            cells = 8 if i in self.temporal_levels else 4
            # The shortcuts average groups of (cells * wide / narrow) channels down, and repeat each
            # channel (cells * wide / narrow) times up: both must be whole numbers.
            if (wide * cells) % narrow:
                raise ValueError(f"widths[{i}]={wide} -> widths[{i + 1}]={narrow}: {cells} x {wide} is not a "
                                 f"multiple of {narrow}")
        if self.widths[-1] % self.latent_channels:
            raise ValueError(f"latent_channels={self.latent_channels} must divide widths[-1]={self.widths[-1]}")


class VideoDCAE(ImageCompressor):
    """Video DC-AE: ``(B, V, 3, H, W)`` in ``[0, 1]`` <-> scaled latents ``(B, V/4, C, H/32, W/32)``.

    Frozen: eval mode, no gradients, ``trainable = False``.
    """

    @dataclass
    class Config:
        """Configuration of :class:`VideoDCAE` (defaults: the released ``dc-ae-f32t4c128``).

        Attributes:
            checkpoint: path of Open-Sora's ``F32T4C128_AE.safetensors`` (or a file with the same
                names at the architecture below). ``""`` looks it up in ``$SCENETOK_WEIGHTS_DIR``.
            random_init: build with random weights instead (tests / smoke runs only; logged as a
                warning). Requires ``checkpoint: ""``.
            scale: latent multiplier (``z * scale`` after encoding, ``/ scale`` before decoding); the
                official SceneTok value for targets is 0.493.
            chunk_frames: frames per independently encoded clip (a multiple of the temporal factor;
                16 = the paper's precompute), 0 = the whole sequence as one clip.
            tile_size: spatial tile in pixels (a multiple of the spatial factor) for frames larger
                than it, encoding and decoding; 0 = never tile.
            tile_frames: temporal tile in frames (at least two latent frames) for decoding more
                latent frames than it covers; 0 = never tile.
            tile_overlap: fraction of a tile shared with its neighbour, in ``[0, 0.5]``.
            widths: channels per resolution level (spatial factor ``2 ** (len - 1)``).
            encoder_depths: blocks per encoder level.
            decoder_depths: blocks per decoder level.
            attention_levels: levels made of EfficientViT (linear attention) blocks.
            temporal_levels: levels whose down/up-sampling also halves/doubles time (released: two, 4x).
            latent_channels: latent channels ``C``.
        """

        checkpoint: str = ""
        random_init: bool = False
        scale: float = 0.493
        chunk_frames: int = 16
        tile_size: int = 256
        tile_frames: int = 32
        tile_overlap: float = 0.25
        widths: list[int] = field(default_factory=lambda: [128, 256, 512, 512, 1024, 1024])
        encoder_depths: list[int] = field(default_factory=lambda: [2, 2, 2, 3, 3, 3])
        decoder_depths: list[int] = field(default_factory=lambda: [3, 3, 3, 3, 3, 3])
        attention_levels: list[int] = field(default_factory=lambda: [3, 4, 5])
        temporal_levels: list[int] = field(default_factory=lambda: [3, 4])
        latent_channels: int = 128

        def __post_init__(self) -> None:
            if self.random_init and self.checkpoint:
                raise ValueError("checkpoint: give either a checkpoint path or random_init=true, not both")
            arch = self.architecture()
            arch.check()
            if not self.scale > 0:
                raise ValueError(f"scale must be > 0, got {self.scale}")
            if self.chunk_frames < 0 or self.chunk_frames % arch.temporal_factor:
                raise ValueError(f"chunk_frames must be 0 or a multiple of {arch.temporal_factor}, "
                                 f"got {self.chunk_frames}")
            if self.tile_size < 0 or self.tile_size % arch.spatial_factor:
                raise ValueError(f"tile_size must be 0 or a multiple of {arch.spatial_factor} pixels, "
                                 f"got {self.tile_size}")
            if self.tile_frames and (self.tile_frames < 2 * arch.temporal_factor
                                     or self.tile_frames % arch.temporal_factor):
                # One latent frame decodes to one frame (the reference skips temporal upsampling).
                raise ValueError(f"tile_frames must be 0 or a multiple of {arch.temporal_factor} covering at "
                                 f"least 2 latent frames, got {self.tile_frames}")
            if not 0.0 <= self.tile_overlap <= 0.5:
                raise ValueError(f"tile_overlap must be in [0, 0.5], got {self.tile_overlap}")

        def architecture(self) -> Architecture:
            return Architecture(
                widths=tuple(self.widths), encoder_depths=tuple(self.encoder_depths),
                decoder_depths=tuple(self.decoder_depths), attention_levels=tuple(self.attention_levels),
                temporal_levels=tuple(self.temporal_levels), latent_channels=self.latent_channels,
            )

    presets: ClassVar[dict[str, dict]] = {
        # The released model (459.5 M parameters); the defaults already are this.
        "f32t4c128": {},
        # A CPU-test size with the same topology (6 levels, attention in the last 3, 4x temporal).
        "tiny": {"widths": [8, 8, 16, 32, 32, 32], "encoder_depths": [1] * 6, "decoder_depths": [1] * 6,
                 "latent_channels": 8},
    }
    trainable: ClassVar[bool] = False
    #: The parameter count of the released file, for ``scenetok model summary``.
    released_parameters: ClassVar[int] = RELEASED_PARAMETERS

    def __init__(self, config: Config | None = None) -> None:
        super().__init__()
        # diffusers (RMSNorm) takes seconds to import; recipes are checked from the Config alone.
        from scenetok.components.image_compressors._video_dcae_net import VideoDCAENet  # lazy: imports diffusers

        self.config = config if config is not None else self.Config()
        arch = self.config.architecture()
        if self.config.random_init:
            self.net = VideoDCAENet(arch)
            warn_random_init("video_dcae")
        elif torch.empty(0).device.type == "meta":  # validation builds hold no values: nothing to load
            self.net = VideoDCAENet(arch)
        else:
            # Find the file first (fail fast), then build without initialising 459 M parameters that
            # the load replaces anyway.
            path = resolve_weights(self.config.checkpoint, default_name=DEFAULT_NAME, component="video_dcae",
                                   source=SOURCE)
            with torch.device("meta"):
                self.net = VideoDCAENet(arch)
            load_released(self.net, path)
        freeze(self.net)

    @classmethod
    def latent_spec(cls, config: Config) -> LatentSpec:
        arch = config.architecture()
        return LatentSpec(channels=config.latent_channels, spatial_factor=arch.spatial_factor,
                          temporal_factor=arch.temporal_factor)

    @classmethod
    def parameter_count(cls, config: Config) -> int:
        """Parameters of the network ``config`` builds (on the meta device: nothing is allocated)."""
        from scenetok.components.image_compressors._video_dcae_net import VideoDCAENet  # lazy: imports diffusers

        with torch.device("meta"):
            net = VideoDCAENet(config.architecture())
        return sum(p.numel() for p in net.parameters())

    # -- encode / decode -----------------------------------------------------------------------

    def _check_size(self, height: int, width: int) -> None:
        factor = self.spec.spatial_factor
        if height % factor or width % factor:
            raise ValueError(f"video_dcae: frames of {height}x{width} pixels are not multiples of {factor}")

    def _axes(self, decode: bool) -> list[_Axis]:
        arch = self.net.arch
        axes = []
        if decode and self.config.tile_frames:
            tile = self.config.tile_frames // arch.temporal_factor
            axes.append(_Axis(2, 1, arch.temporal_factor, tile, round(tile * self.config.tile_overlap)))
        if self.config.tile_size:
            tile = self.config.tile_size // arch.spatial_factor
            overlap = round(tile * self.config.tile_overlap)
            factors = (1, arch.spatial_factor) if decode else (arch.spatial_factor, 1)
            axes += [_Axis(3, *factors, tile, overlap), _Axis(4, *factors, tile, overlap)]
        return axes

    def encode(self, images: Tensor, sample: bool = False) -> Tensor:
        """``(B, V, 3, H, W)`` in ``[0, 1]`` -> latents ``(B, V/4, C, H/32, W/32)`` (times ``scale``);
        clips of ``chunk_frames`` frames are encoded independently. ``sample`` has no effect."""
        check_images(images, "video_dcae")
        views = images.shape[1]
        try:
            self.spec.latent_frames(views)
        except ValueError as error:
            raise ValueError(
                f"video_dcae.encode: {error}: the Video DC-AE takes 4k frames (the paper's precompute drops "
                f"the last V mod 4 frames; here {views % self.spec.temporal_factor} would go)"
            ) from None
        self._check_size(*images.shape[-2:])
        dtype = self.net.encoder.conv_in.weight.dtype
        video = to_signed(images).transpose(1, 2).to(dtype)  # (B, 3, V, H, W)
        clip = self.config.chunk_frames or views
        axes = self._axes(decode=False)
        latents = [_tiled(self.net.encoder, video[:, :, start:start + clip], axes)
                   for start in range(0, views, clip)]
        return (torch.cat(latents, dim=2) * self.config.scale).transpose(1, 2)

    def decode(self, latents: Tensor) -> Tensor:
        """Latents ``(B, F, C, h, w)`` (times ``scale``) -> frames ``(B, 4F, 3, 32h, 32w)`` in ``[0, 1]``;
        needs ``F >= 2`` (the reference decodes a lone latent frame to a single frame)."""
        check_latents(latents, self.config.latent_channels, "video_dcae")
        if latents.shape[1] < 2:
            raise ValueError(
                "video_dcae.decode: a single latent frame decodes to one frame, not "
                f"{self.spec.temporal_factor} (the reference skips temporal upsampling at T=1); decode at least 2"
            )
        dtype = self.net.decoder.conv_in.weight.dtype
        z = (latents / self.config.scale).transpose(1, 2).to(dtype)  # (B, C, F, h, w)
        video = _tiled(self.net.decoder, z, self._axes(decode=True))
        return to_unit(video.transpose(1, 2))


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------


def load_released(net: VideoDCAENet, path: Path) -> None:
    """Load Open-Sora's ``F32T4C128_AE.safetensors`` (its parameter names) into ``net``.

    Raises:
        ValueError: not a ``.safetensors`` file, or not readable as one.
        CheckpointConversionError: the file's tensors do not map one-to-one onto ``net`` (the message
            names the missing, unexpected and misshapen tensors).
    """
    from scenetok.components.image_compressors._video_dcae_net import reference_names  # lazy: imports diffusers

    if path.is_dir() or path.suffix != ".safetensors":
        raise ValueError(f"video_dcae: {path} is not a .safetensors file; expected Open-Sora's {DEFAULT_NAME} "
                         f"from {SOURCE}")
    try:
        state = load_file(str(path))
    except SafetensorError as error:
        raise ValueError(f"video_dcae: {path} is not a readable safetensors file ({error})") from None
    ours = reference_names(net)
    expected = net.state_dict()
    by_reference = {ref: name for name, ref in ours.items()}
    missing = sorted(ref for ref in by_reference if ref not in state)
    unexpected = sorted(k for k in state if k not in by_reference)
    mismatched = sorted(
        f"{ref} (file {tuple(state[ref].shape)} vs model {tuple(expected[name].shape)})"
        for ref, name in by_reference.items()
        if ref in state and tuple(state[ref].shape) != tuple(expected[name].shape)
    )
    if missing or unexpected or mismatched:
        problems = [f"{len(keys)} {what}: {name_keys(keys, 8)}" for what, keys in
                    (("missing", missing), ("unexpected", unexpected), ("with another shape", mismatched)) if keys]
        hint = ("the architecture fields (widths, depths, latent_channels) do not match the file"
                if not missing and not unexpected else f"expected Open-Sora's {DEFAULT_NAME} from {SOURCE}")
        if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in state):
            hint = ("this looks like diffusers' image DC-AE (AutoencoderDC), which has no time axis; "
                    f"the Video DC-AE is {DEFAULT_NAME} from {SOURCE}")
        raise CheckpointConversionError(f"video_dcae: {path} does not match the Video DC-AE "
                                        f"({'; '.join(problems)}); {hint}")
    # assign=True: ``net`` may live on the meta device; float32 as Open-Sora's own loader (bf16 files too).
    net.load_state_dict({name: state[ref].to(torch.float32) for name, ref in ours.items()}, strict=True,
                        assign=True)
    logger.info("video_dcae: loaded %d tensors from %s", len(state), path)


# ----------------------------------------------------------------------------------------------
# tiling
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Axis:
    """How to tile one tensor axis: positions are counted in latent cells.

    Attributes:
        dim: the axis (the same in the input and the output).
        in_factor: input elements per latent cell (32 for pixels when encoding, 1 for latents).
        out_factor: output elements per latent cell.
        tile: cells per tile.
        overlap: cells shared by neighbouring tiles.
    """

    dim: int
    in_factor: int
    out_factor: int
    tile: int
    overlap: int


def _tiled(fn: Callable[[Tensor], Tensor], x: Tensor, axes: list[_Axis]) -> Tensor:
    """``fn(x)`` computed tile by tile along each of ``axes`` (nested), with linear cross-fades where
    tiles overlap. Tiles have the full tile length (the last one is moved back to end at the border,
    so no short tile reaches the network); weights are normalised, so any overlap layout blends to a
    convex combination -- for a ``fn`` that acts on each latent cell independently, tiling is exact.
    """
    if not axes:
        return fn(x)
    axis, rest = axes[0], axes[1:]
    cells = x.shape[axis.dim] // axis.in_factor
    if axis.tile <= 0 or cells <= axis.tile:
        return _tiled(fn, x, rest)
    stride = max(axis.tile - axis.overlap, 1)
    starts = [*range(0, cells - axis.tile, stride), cells - axis.tile]
    out: Tensor | None = None
    weight = x.new_zeros(cells * axis.out_factor, dtype=torch.float32)
    for k, start in enumerate(starts):
        y = _tiled(fn, x.narrow(axis.dim, start * axis.in_factor, axis.tile * axis.in_factor), rest)
        length = y.shape[axis.dim]
        ramp = torch.ones(length, device=y.device)
        position = torch.arange(length, device=y.device, dtype=torch.float32)
        if k > 0:  # fade in over the part shared with the previous tile
            shared = (starts[k - 1] + axis.tile - start) * axis.out_factor
            if shared > 0:
                ramp = torch.minimum(ramp, (position + 0.5) / shared)
        if k < len(starts) - 1:  # fade out over the part shared with the next tile
            shared = (start + axis.tile - starts[k + 1]) * axis.out_factor
            if shared > 0:
                ramp = torch.minimum(ramp, (length - position - 0.5) / shared)
        if out is None:
            shape = list(y.shape)
            shape[axis.dim] = cells * axis.out_factor
            out = y.new_zeros(shape)
        view = [1] * y.ndim
        view[axis.dim] = length
        out.narrow(axis.dim, start * axis.out_factor, length).add_(y * ramp.view(view).to(y.dtype))
        weight.narrow(0, start * axis.out_factor, length).add_(ramp)
    view = [1] * out.ndim
    view[axis.dim] = -1
    return out / weight.view(view).to(out.dtype)
