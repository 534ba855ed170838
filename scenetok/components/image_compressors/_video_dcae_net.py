"""The network of Open-Sora 2.0's Video DC-AE (``dc-ae-f32t4c128``), written for scenetok, and the
key map from the released file's parameter names to ours.

Architecture (FORMATS §6.1; read from Open-Sora's public ``opensora/models/dc_ae`` definitions): a
deep-compression autoencoder with 3-D convolutions throughout. Six resolution *levels*; each encoder
level runs its blocks and then halves H and W (the transitions out of levels 3 and 4 also halve T), so
the spatial factor is 32 and the temporal factor 4. Levels 0-2 use residual conv blocks, levels 3-5
EfficientViT blocks (multi-scale ReLU linear attention + gated depthwise-conv FFN). Every resampling
step and both ends of the network have a parameter-free shortcut -- space-to-channel averaging on the
way down, channel-duplicating depth-to-space on the way up -- added to the learned path. Normalisation
is RMS over channels with a bias. The encoder is deterministic: ``latent_channels`` channels, no
posterior.

Time: non-causal, zero-padded convolutions; ``4k`` frames give ``k`` latent frames (a single frame
gives one latent frame, and decodes back to one frame: temporal resampling is skipped when ``T = 1``,
as in the reference).

Only RMSNorm is taken from diffusers (:class:`diffusers.models.normalization.RMSNorm`, the norm of its
image DC-AE): diffusers' DC-AE blocks are 2-D, their convolutions do not match the 3-D kernels of the
released weights.

The shape of the network is :class:`~scenetok.components.image_compressors.video_dcae.Architecture`.
Parameter names are our own (``encoder.levels.{i}.blocks.{j}.attn.qkv.weight``, ...);
:func:`reference_names` maps each of them to the released file's name
(``encoder.stages.{i}.op_list.{j}.context_module.main.qkv.conv.weight``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from diffusers.models.normalization import RMSNorm
from einops import rearrange
from torch import Tensor, nn

if TYPE_CHECKING:
    from scenetok.components.image_compressors.video_dcae import Architecture


# ----------------------------------------------------------------------------------------------
# layers
# ----------------------------------------------------------------------------------------------


def conv3d(in_channels: int, out_channels: int, kernel: int = 3, *, stride: tuple[int, int, int] = (1, 1, 1),
           groups: int = 1, bias: bool = True) -> nn.Conv3d:
    """A 3-D convolution with zero "same" padding on all three axes (the reference is non-causal)."""
    return nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, groups=groups,
                     bias=bias)


class ChannelRMSNorm(RMSNorm):
    """diffusers' :class:`RMSNorm` (with bias) over the channel axis of ``(B, C, T, H, W)``."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(channels, eps=eps, elementwise_affine=True, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class ResBlock(nn.Module):
    """``x + norm(conv2(silu(conv1(x))))`` with 3x3x3 convolutions (conv2 has no bias)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3d(channels, channels)
        self.conv2 = conv3d(channels, channels, bias=False)
        self.norm = ChannelRMSNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.norm(self.conv2(F.silu(self.conv1(x))))


class MultiscaleProjection(nn.Module):
    """Aggregates q/k/v over a ``k x k x k`` neighbourhood: depthwise conv, then a grouped 1x1x1 conv
    mixing channels within each head's q, k and v."""

    def __init__(self, channels: int, heads: int, kernel: int) -> None:
        super().__init__()
        self.depthwise = conv3d(channels, channels, kernel, groups=channels, bias=False)
        self.pointwise = conv3d(channels, channels, 1, groups=3 * heads, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class LinearAttention(nn.Module):
    """Multi-scale ReLU linear attention over all ``T * H * W`` positions, plus the residual.

    ``q``, ``k``, ``v`` come from a 1x1x1 conv and from its multi-scale aggregations, each scale
    giving its own set of heads; ``out = (v k^T) q / (1^T k^T q)`` per head with ``relu`` on q and k.
    """

    def __init__(self, channels: int, head_dim: int, scales: Sequence[int], eps: float = 1e-15) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.eps = eps
        heads = channels // head_dim
        inner = heads * head_dim
        self.qkv = conv3d(channels, 3 * inner, 1, bias=False)
        self.multiscale = nn.ModuleList(MultiscaleProjection(3 * inner, heads, k) for k in scales)
        self.proj = conv3d(inner * (1 + len(scales)), channels, 1, bias=False)
        self.norm = ChannelRMSNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        qkv = self.qkv(x)
        qkv = torch.cat([qkv, *(m(qkv) for m in self.multiscale)], dim=1)
        _, _, frames, height, width = qkv.shape
        # (B, heads * 3d, T, H, W) -> (B, heads, 3d, N): each head's channels are [q | k | v].
        qkv = rearrange(qkv.float(), "b (n c) t h w -> b n c (t h w)", c=3 * self.head_dim)
        q, k, v = qkv.split(self.head_dim, dim=2)
        q, k = F.relu(q), F.relu(k)
        # A row of ones appended to v yields the normaliser 1^T k^T q in the same two matmuls.
        v = F.pad(v, (0, 0, 0, 1), value=1.0)
        out = (v @ k.transpose(-1, -2)) @ q  # (B, heads, d + 1, N)
        out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)
        out = rearrange(out, "b n c (t h w) -> b (n c) t h w", t=frames, h=height, w=width).to(x.dtype)
        return x + self.norm(self.proj(out))


class GatedConvFFN(nn.Module):
    """``x + norm(point(a * silu(g)))`` where ``(a, g)`` = depthwise 3x3x3 conv of ``silu(inverted(x))``."""

    def __init__(self, channels: int, expansion: int) -> None:
        super().__init__()
        hidden = channels * expansion
        self.conv_inverted = conv3d(channels, 2 * hidden, 1)
        self.conv_depth = conv3d(2 * hidden, 2 * hidden, 3, groups=2 * hidden)
        self.conv_point = conv3d(hidden, channels, 1, bias=False)
        self.norm = ChannelRMSNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        hidden, gate = self.conv_depth(F.silu(self.conv_inverted(x))).chunk(2, dim=1)
        return x + self.norm(self.conv_point(hidden * F.silu(gate)))


class EfficientViTBlock(nn.Module):
    """Linear attention (global context) then the gated conv FFN (local), both residual."""

    def __init__(self, channels: int, arch: Architecture) -> None:
        super().__init__()
        self.attn = LinearAttention(channels, arch.head_dim, arch.attention_scales)
        self.ffn = GatedConvFFN(channels, arch.ffn_expansion)

    def forward(self, x: Tensor) -> Tensor:
        return self.ffn(self.attn(x))


def _check_even_time(x: Tensor, where: str) -> None:
    if x.shape[2] % 2:
        raise ValueError(
            f"{where}: {x.shape[2]} frames cannot be halved; the Video DC-AE takes 4k frames (or a single frame)"
        )


class Downsample(nn.Module):
    """Strided 3x3x3 conv plus a space(-time)-to-channel shortcut averaged down to ``out_channels``.

    Halves H and W, and T too when ``temporal`` (unless T is 1, where the reference keeps it)."""

    def __init__(self, in_channels: int, out_channels: int, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        self.out_channels = out_channels
        self.conv = conv3d(in_channels, out_channels, stride=(2 if temporal else 1, 2, 2))

    def forward(self, x: Tensor) -> Tensor:
        if self.temporal and x.shape[2] != 1:
            _check_even_time(x, "video_dcae encoder")
            cells = rearrange(x, "b c (t rt) (h rh) (w rw) -> b (c rt rh rw) t h w", rt=2, rh=2, rw=2)
        else:
            cells = rearrange(x, "b c t (h rh) (w rw) -> b (c rh rw) t h w", rh=2, rw=2)
        shortcut = rearrange(cells, "b (c g) t h w -> b c g t h w", c=self.out_channels).mean(2)
        return self.conv(x) + shortcut


class Upsample(nn.Module):
    """Nearest upsampling + 3x3x3 conv, plus a shortcut that repeats each channel and moves the copies
    to space(-time). Doubles H and W, and T too when ``temporal`` (unless T is 1)."""

    def __init__(self, in_channels: int, out_channels: int, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        self.out_channels = out_channels
        self.conv = conv3d(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        in_channels = x.shape[1]
        if self.temporal and x.shape[2] != 1:
            up = F.interpolate(x, scale_factor=(2, 2, 2), mode="nearest")
            repeats = self.out_channels * 8 // in_channels
            shortcut = rearrange(x.repeat_interleave(repeats, dim=1),
                                 "b (c rt rh rw) t h w -> b c (t rt) (h rh) (w rw)", rt=2, rh=2, rw=2)
        else:
            up = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
            repeats = self.out_channels * 4 // in_channels
            shortcut = rearrange(x.repeat_interleave(repeats, dim=1),
                                 "b (c rh rw) t h w -> b c t (h rh) (w rw)", rh=2, rw=2)
        return self.conv(up) + shortcut


def _block(channels: int, level: int, arch: Architecture) -> nn.Module:
    return EfficientViTBlock(channels, arch) if level in arch.attention_levels else ResBlock(channels)


class EncoderLevel(nn.Module):
    def __init__(self, level: int, arch: Architecture) -> None:
        super().__init__()
        width = arch.widths[level]
        self.blocks = nn.ModuleList(_block(width, level, arch) for _ in range(arch.encoder_depths[level]))
        last = level == len(arch.widths) - 1
        self.down = None if last else Downsample(width, arch.widths[level + 1], level in arch.temporal_levels)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.down is None else self.down(x)


class DecoderLevel(nn.Module):
    def __init__(self, level: int, arch: Architecture) -> None:
        super().__init__()
        width = arch.widths[level]
        last = level == len(arch.widths) - 1
        self.up = None if last else Upsample(arch.widths[level + 1], width, level in arch.temporal_levels)
        self.blocks = nn.ModuleList(_block(width, level, arch) for _ in range(arch.decoder_depths[level]))

    def forward(self, x: Tensor) -> Tensor:
        if self.up is not None:
            x = self.up(x)
        for block in self.blocks:
            x = block(x)
        return x


class Encoder(nn.Module):
    """Video ``(B, 3, T, H, W)`` in ``[-1, 1]`` -> raw latents ``(B, C, T/4, H/32, W/32)``."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.conv_in = conv3d(3, arch.widths[0])
        self.levels = nn.ModuleList(EncoderLevel(i, arch) for i in range(len(arch.widths)))
        self.conv_out = conv3d(arch.widths[-1], arch.latent_channels)
        self.latent_channels = arch.latent_channels

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for level in self.levels:
            x = level(x)
        # Shortcut: the mean of each group of widths[-1] / C consecutive channels.
        shortcut = rearrange(x, "b (c g) t h w -> b c g t h w", c=self.latent_channels).mean(2)
        return self.conv_out(x) + shortcut


class Decoder(nn.Module):
    """Raw latents ``(B, C, F, h, w)`` -> video ``(B, 3, 4F, 32h, 32w)`` in about ``[-1, 1]``."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.conv_in = conv3d(arch.latent_channels, arch.widths[-1])
        self.levels = nn.ModuleList(DecoderLevel(i, arch) for i in range(len(arch.widths)))
        self.norm_out = ChannelRMSNorm(arch.widths[0])
        self.conv_out = conv3d(arch.widths[0], 3)
        self.repeats = arch.widths[-1] // arch.latent_channels

    def forward(self, z: Tensor) -> Tensor:
        x = self.conv_in(z) + z.repeat_interleave(self.repeats, dim=1)
        for level in reversed(self.levels):
            x = level(x)
        return self.conv_out(F.relu(self.norm_out(x)))


class VideoDCAENet(nn.Module):
    """Encoder + decoder; parameters named ``encoder.*`` / ``decoder.*`` like the released file's."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        arch.check()
        self.arch = arch
        self.encoder = Encoder(self.arch)
        self.decoder = Decoder(self.arch)


# ----------------------------------------------------------------------------------------------
# key map: our names -> the released file's names
# ----------------------------------------------------------------------------------------------

# Inside a block; the reference wraps every block in a residual container (``main``) and every conv
# in a layer holding ``conv`` / ``norm``.
_BLOCK_PARTS: dict[str, str] = {
    "conv1": "main.conv1.conv",
    "conv2": "main.conv2.conv",
    "norm": "main.conv2.norm",
    "attn.qkv": "context_module.main.qkv.conv",
    "attn.proj": "context_module.main.proj.conv",
    "attn.norm": "context_module.main.proj.norm",
    "ffn.conv_inverted": "local_module.main.inverted_conv.conv",
    "ffn.conv_depth": "local_module.main.depth_conv.conv",
    "ffn.conv_point": "local_module.main.point_conv.conv",
    "ffn.norm": "local_module.main.point_conv.norm",
}
_FIXED: dict[str, str] = {
    "encoder.conv_in": "encoder.project_in.conv",
    "encoder.conv_out": "encoder.project_out.main.op_list.0.conv",
    "decoder.conv_in": "decoder.project_in.main.conv",
    "decoder.norm_out": "decoder.project_out.op_list.0",
    "decoder.conv_out": "decoder.project_out.op_list.2.conv",
}
_LEVEL = re.compile(r"^(encoder|decoder)\.levels\.(\d+)\.(.+)\.(weight|bias)$")
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_MULTISCALE = re.compile(r"^attn\.multiscale\.(\d+)\.(depthwise|pointwise)$")


class KeyMapError(ValueError):
    """A parameter name has no rule in the key map (a bug in the map, not in a weights file)."""


def reference_name(name: str, arch: Architecture) -> str:
    """The released file's name of our parameter ``name``.

    In the reference, encoder stage ``i`` is ``[blocks..., downsample]`` and decoder stage ``i`` is
    ``[upsample, blocks...]`` (no upsample at the last level), all in one ``op_list``.
    """
    module, _, param = name.rpartition(".")
    if module in _FIXED:
        return f"{_FIXED[module]}.{param}"
    match = _LEVEL.match(name)
    if match is None:
        raise KeyMapError(f"video_dcae key map: no rule for parameter {name!r}")
    side, level, rest, param = match.group(1), int(match.group(2)), match.group(3), match.group(4)
    stage = f"{side}.stages.{level}.op_list"
    if rest == "down.conv":
        return f"{stage}.{arch.encoder_depths[level]}.main.conv.{param}"
    if rest == "up.conv":
        return f"{stage}.0.main.conv.conv.{param}"
    block = _BLOCK.match(rest)
    if block is None:
        raise KeyMapError(f"video_dcae key map: no rule for parameter {name!r}")
    index = int(block.group(1))
    if side == "decoder" and level < len(arch.widths) - 1:
        index += 1  # the upsample comes first
    part = block.group(2)
    multiscale = _MULTISCALE.match(part)
    if multiscale is not None:
        conv = "0" if multiscale.group(2) == "depthwise" else "1"
        return f"{stage}.{index}.context_module.main.aggreg.{multiscale.group(1)}.{conv}.{param}"
    if part not in _BLOCK_PARTS:
        raise KeyMapError(f"video_dcae key map: no rule for parameter {name!r}")
    return f"{stage}.{index}.{_BLOCK_PARTS[part]}.{param}"


def reference_names(model: VideoDCAENet) -> dict[str, str]:
    """``{our name: released name}`` for every parameter of ``model`` (a bijection)."""
    names = {name: reference_name(name, model.arch) for name in model.state_dict()}
    if len(set(names.values())) != len(names):
        raise KeyMapError("video_dcae key map maps two parameters to the same released name")
    return names
