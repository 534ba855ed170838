"""Small building blocks shared by the perceiver compressor and the DiT renderer.

RMSNorm, the fused SwiGLU feed-forward, adaLN modulation with per-token conditioning, and the
DiT timestep embedder. Shapes: ``L`` tokens, ``H`` width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension, computed in float32, with a learned gain.

    The two networks of the paper differ here: the compressor uses ``torch.nn.RMSNorm``'s default
    epsilon (``eps=None``: float32 machine epsilon, ~1.19e-7) and the renderer uses ``1e-6``.
    Both compute the statistic in float32 so bf16 activations do not lose the small-variance tail.

    Args:
        dim: size of the normalised (last) dimension.
        eps: added to the mean square; ``None`` = float32 machine epsilon.
    """

    def __init__(self, dim: int, eps: float | None = 1e-6) -> None:
        super().__init__()
        self.eps = torch.finfo(torch.float32).eps if eps is None else float(eps)
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """``(..., dim)`` -> same shape and dtype."""
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        # Gain applied in float32 too, then one rounding back to the input dtype (a float32 gain
        # times bf16 activations would otherwise silently promote the whole stream to float32).
        return (normed * self.weight.float()).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps:.3g}"


def swiglu_hidden_dim(width: int, mlp_ratio: float) -> int:
    """Hidden width of the LightningDiT SwiGLU: ``int(2/3 * mlp_ratio * width)`` (2730 for 1024, 4.0)."""
    return int(2 / 3 * int(width * mlp_ratio))


class SwiGLU(nn.Module):
    """Gated feed-forward ``w3(SiLU(a) * b)`` with ``[a, b] = w12(x)`` (one fused input Linear).

    Args:
        dim: input and output width ``H``.
        hidden_dim: gated hidden width (see :func:`swiglu_hidden_dim`).
        bias: whether both Linears carry a bias (the paper: yes).
    """

    def __init__(self, dim: int, hidden_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden_dim, bias=bias)
        self.w3 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., H)`` -> ``(..., H)``."""
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation ``x * (1 + scale) + shift``.

    ``shift``/``scale`` broadcast against ``x``: pass ``(B, L, H)`` for per-token conditioning
    (both networks of the paper) or ``(B, 1, H)`` for a global one.
    """
    return x * (1 + scale) + shift


class AdaLNModulation(nn.Module):
    """``SiLU -> Linear(H, chunks * H)``, split into ``chunks`` tensors of width ``H``.

    The chunk order is the caller's contract (DiT blocks: shift, scale, gate for attention, then
    shift, scale, gate for the MLP; final layers: shift, scale).

    Args:
        width: conditioning and output width ``H``.
        chunks: number of modulation tensors produced.
    """

    def __init__(self, width: int, chunks: int) -> None:
        super().__init__()
        self.chunks = chunks
        self.linear = nn.Linear(width, chunks * width)

    def forward(self, condition: Tensor) -> tuple[Tensor, ...]:
        """``(B, L, H)`` -> ``chunks`` tensors of shape ``(B, L, H)``."""
        return self.linear(F.silu(condition)).chunk(self.chunks, dim=-1)

    def zero_init(self) -> None:
        """Start as the identity modulation with closed gates (DiT's adaLN-Zero)."""
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)


def timestep_embedding(timesteps: Tensor, dim: int = 256, max_period: float = 10_000.0) -> Tensor:
    """DiT sinusoidal timestep features ``[cos | sin]``.

    Args:
        timesteps: ``(...)`` float timesteps in the network's scale (e.g. ``t * 1000 - 1``).
        dim: feature size (even).
        max_period: longest period of the sinusoids.

    Returns:
        ``(..., dim)`` float32 features.
    """
    if dim % 2:
        raise ValueError(f"timestep embedding dim must be even, got {dim}")
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, device=timesteps.device, dtype=torch.float32) / half
    )
    angles = timesteps.float()[..., None] * frequencies
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepEmbedder(nn.Module):
    """DiT timestep embedder: sinusoid of ``frequency_dim`` -> Linear -> SiLU -> Linear.

    Args:
        width: output width ``H``.
        frequency_dim: size of the sinusoidal features (256 in DiT and the paper).
    """

    def __init__(self, width: int, frequency_dim: int = 256) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, timesteps: Tensor) -> Tensor:
        """``(...)`` timesteps -> ``(..., H)`` embeddings in the Linear weights' dtype."""
        features = timestep_embedding(timesteps, self.frequency_dim)
        return self.mlp(features.to(self.mlp[0].weight.dtype))
