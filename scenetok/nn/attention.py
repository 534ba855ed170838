"""Multi-head self- and cross-attention on ``torch.nn.functional.scaled_dot_product_attention``.

SDPA picks the fastest available kernel (flash / memory-efficient / math) for the device and
dtype, so there is no hard dependency on flash-attn. Optional qk-norm (RMSNorm over the head
dimension) is applied before RoPE, as in LightningDiT. Parameter names (``qkv``, ``to_q``,
``to_k``, ``to_v``, ``proj``, ``q_norm``, ``k_norm``) mirror the paper's code so checkpoints map
one-to-one.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from scenetok.nn.layers import RMSNorm
from scenetok.nn.rope import RopeTable, apply_rope


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """``(B, L, H)`` -> ``(B, heads, L, H / heads)``."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """``(B, heads, L, d)`` -> ``(B, L, heads * d)``."""
    return x.transpose(1, 2).flatten(2)


class _HeadNorms(nn.Module):
    """Shared qk-norm plumbing of both attention kinds."""

    def _init_heads(self, width: int, heads: int, qk_norm: bool, norm_eps: float | None) -> None:
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = width // heads
        self.q_norm: nn.Module = RMSNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm: nn.Module = RMSNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()


class SelfAttention(_HeadNorms):
    """Multi-head self-attention with a fused ``qkv`` projection and optional RoPE on q and k.

    Args:
        width: token width ``H``.
        heads: number of heads (``H`` divisible by it).
        qkv_bias: bias on the ``qkv`` projection.
        qk_norm: RMSNorm over the head dim of q and k (before RoPE).
        norm_eps: epsilon of the qk-norm (see :class:`~scenetok.nn.layers.RMSNorm`).
    """

    def __init__(self, width: int, heads: int, qkv_bias: bool = True, qk_norm: bool = False,
                 norm_eps: float | None = 1e-6) -> None:
        super().__init__()
        self._init_heads(width, heads, qk_norm, norm_eps)
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, rope: RopeTable | None = None) -> Tensor:
        """``x (B, L, H)``, optional RoPE table ``(L, head_dim)`` -> ``(B, L, H)``."""
        q, k, v = (_split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class CrossAttention(_HeadNorms):
    """Multi-head cross-attention from ``x`` (queries) to ``context`` (keys/values).

    RoPE can rotate queries and keys independently: the renderer rotates only its video-token
    queries (scene tokens have no position), the compressor only its view-token keys.

    Args:
        width: query and context width ``H``.
        heads: number of heads.
        qkv_bias: bias on ``to_q``/``to_k``/``to_v``.
        qk_norm: RMSNorm over the head dim of q and k (before RoPE).
        norm_eps: epsilon of the qk-norm.
    """

    def __init__(self, width: int, heads: int, qkv_bias: bool = True, qk_norm: bool = False,
                 norm_eps: float | None = 1e-6) -> None:
        super().__init__()
        self._init_heads(width, heads, qk_norm, norm_eps)
        self.to_q = nn.Linear(width, width, bias=qkv_bias)
        self.to_k = nn.Linear(width, width, bias=qkv_bias)
        self.to_v = nn.Linear(width, width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, context: Tensor, query_rope: RopeTable | None = None,
                key_rope: RopeTable | None = None) -> Tensor:
        """``x (B, Lq, H)``, ``context (B, Lk, H)`` -> ``(B, Lq, H)``.

        ``context`` may have batch size 1 to broadcast one context to every query batch element.
        """
        q = self.q_norm(_split_heads(self.to_q(x), self.heads))
        k = self.k_norm(_split_heads(self.to_k(context), self.heads))
        v = _split_heads(self.to_v(context), self.heads)
        if k.shape[0] != q.shape[0]:
            k, v = k.expand(q.shape[0], -1, -1, -1), v.expand(q.shape[0], -1, -1, -1)
        if query_rope is not None:
            q = apply_rope(q, query_rope)
        if key_rope is not None:
            k = apply_rope(k, key_rope)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))
