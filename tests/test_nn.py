"""Building blocks: RMSNorm, SwiGLU, adaLN, timestep embedding, RoPE, attention, camera tokens."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scenetok.interfaces import LatentSpec
from scenetok.nn.attention import CrossAttention, SelfAttention
from scenetok.nn.camera import CameraPatchEmbed, group_frames
from scenetok.nn.layers import (
    AdaLNModulation,
    RMSNorm,
    SwiGLU,
    TimestepEmbedder,
    modulate,
    swiglu_hidden_dim,
    timestep_embedding,
)
from scenetok.nn.rope import (
    apply_rope,
    rope_2d_table,
    rope_3d_axis_dims,
    rope_3d_table,
    rotate_pairs,
)
from scenetok.nn.utils import count_parameters, rename_key
from scenetok.testing.contracts import random_cameras
from scenetok.types import Cameras



# ----------------------------------------------------------------------------------- layers


@pytest.mark.parametrize("eps", [1e-6, None])
def test_rms_norm_matches_torch_and_keeps_dtype(eps):
    x = torch.randn(3, 5, 16)
    norm = RMSNorm(16, eps=eps)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    expected = F.rms_norm(x, (16,), norm.weight, eps=torch.finfo(torch.float32).eps if eps is None else eps)
    torch.testing.assert_close(norm(x), expected)
    assert norm(x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_swiglu_hidden_width_and_formula():
    assert swiglu_hidden_dim(1024, 4.0) == 2730
    assert swiglu_hidden_dim(768, 4.0) == 2048
    mlp = SwiGLU(8, 6)
    assert mlp.w12.weight.shape == (12, 8) and mlp.w3.weight.shape == (8, 6)
    x = torch.randn(2, 3, 8)
    hidden = mlp.w12(x)
    expected = mlp.w3(F.silu(hidden[..., :6]) * hidden[..., 6:])
    torch.testing.assert_close(mlp(x), expected)


def test_adaln_modulation_per_token():
    modulation = AdaLNModulation(4, 3)
    condition = torch.randn(2, 5, 4)
    chunks = modulation(condition)
    assert len(chunks) == 3 and all(c.shape == (2, 5, 4) for c in chunks)
    modulation.zero_init()
    shift, scale, gate = modulation(condition)
    assert not shift.any() and not scale.any() and not gate.any()
    x = torch.randn(2, 5, 4)
    shift, scale = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    torch.testing.assert_close(modulate(x, shift, scale), x * (1 + scale) + shift)


def test_timestep_embedding_is_cos_then_sin():
    t = torch.tensor([0.0, 10.0])
    features = timestep_embedding(t, dim=8)
    assert features.shape == (2, 8)
    torch.testing.assert_close(features[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    frequencies = torch.exp(-math.log(10_000.0) * torch.arange(4) / 4)
    torch.testing.assert_close(features[1, :4], torch.cos(10.0 * frequencies))
    torch.testing.assert_close(features[1, 4:], torch.sin(10.0 * frequencies))
    embedder = TimestepEmbedder(32)
    assert embedder(torch.rand(2, 7) * 999).shape == (2, 7, 32)


# ------------------------------------------------------------------------------------- RoPE


def test_rotate_pairs_is_interleaved():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(rotate_pairs(x), torch.tensor([-2.0, 1.0, -4.0, 3.0]))


def test_rope_2d_table_layout():
    head_dim, theta = 16, 10_000.0
    cos, sin = rope_2d_table(3, 5, head_dim, theta)
    assert cos.shape == (15, head_dim)
    row, col = 2, 4
    token = row * 5 + col
    # The first head_dim/2 dims rotate with the row, the rest with the column; pairs share angles.
    axis_dim = head_dim // 2
    for pair in range(axis_dim // 2):
        frequency = theta ** (-2 * pair / axis_dim)
        assert cos[token, 2 * pair] == pytest.approx(math.cos(row * frequency), abs=1e-6)
        assert cos[token, 2 * pair + 1] == pytest.approx(math.cos(row * frequency), abs=1e-6)
        assert sin[token, axis_dim + 2 * pair] == pytest.approx(math.sin(col * frequency), abs=1e-6)


def test_rope_3d_axis_split():
    assert rope_3d_axis_dims(64) == (20, 22, 22)  # the paper's (10, 11, 11) pairs
    assert rope_3d_axis_dims(16) == (4, 6, 6)
    assert rope_3d_axis_dims(8) == (4, 2, 2)  # remainder 1 goes to frames
    assert rope_3d_axis_dims(12) == (4, 4, 4)
    with pytest.raises(ValueError, match="too small"):
        rope_3d_axis_dims(4)


def test_rope_3d_chunks_restart_positions_and_any_length():
    cos, sin = rope_3d_table(8, 2, 3, 16, num_chunks=2)
    per_frame = 2 * 3
    torch.testing.assert_close(cos[: 4 * per_frame], cos[4 * per_frame :])
    torch.testing.assert_close(sin[: 4 * per_frame], sin[4 * per_frame :])
    single, _ = rope_3d_table(8, 2, 3, 16, num_chunks=1)
    assert not torch.allclose(single[: 4 * per_frame], single[4 * per_frame :])
    # No fixed table: any number of frames works.
    assert rope_3d_table(37, 4, 4, 64)[0].shape == (37 * 16, 64)
    with pytest.raises(ValueError, match="equal RoPE chunks"):
        rope_3d_table(7, 2, 2, 16, num_chunks=2)


def _scores(table, q_vec, k_vec):
    """Attention logits between every pair of positions for constant q/k content."""
    length = table[0].shape[0]
    q = apply_rope(q_vec.expand(1, 1, length, -1), table)[0, 0]
    k = apply_rope(k_vec.expand(1, 1, length, -1), table)[0, 0]
    return q @ k.T


def test_rope_2d_scores_depend_only_on_relative_offset():
    torch.manual_seed(0)
    grid_h, grid_w, head_dim = 5, 6, 16
    scores = _scores(rope_2d_table(grid_h, grid_w, head_dim), torch.randn(head_dim), torch.randn(head_dim))

    def index(r, c):
        return r * grid_w + c

    # Same offset (+1 row, +2 cols) from two different origins gives the same logit.
    a = scores[index(0, 0), index(1, 2)]
    b = scores[index(3, 3), index(4, 5)]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(scores[index(0, 0), index(1, 2)], scores[index(0, 0), index(2, 1)], atol=1e-3)


def test_rope_3d_scores_depend_only_on_relative_offset():
    torch.manual_seed(0)
    frames, grid_h, grid_w, head_dim = 4, 3, 3, 24
    scores = _scores(rope_3d_table(frames, grid_h, grid_w, head_dim), torch.randn(head_dim), torch.randn(head_dim))

    def index(f, r, c):
        return (f * grid_h + r) * grid_w + c

    a = scores[index(0, 0, 1), index(2, 1, 2)]
    b = scores[index(1, 1, 0), index(3, 2, 1)]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_apply_rope_preserves_norm_and_input():
    x = torch.randn(2, 3, 10, 16)
    original = x.clone()
    rotated = apply_rope(x, rope_3d_table(10, 1, 1, 16))
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))
    assert torch.equal(x, original)
    with pytest.raises(ValueError, match="does not match"):
        apply_rope(x, rope_3d_table(9, 1, 1, 16))


# -------------------------------------------------------------------------------- attention


def test_self_attention_matches_reference_softmax():
    torch.manual_seed(0)
    attention = SelfAttention(16, heads=2, qk_norm=True)
    x = torch.randn(2, 5, 16)
    table = rope_2d_table(1, 5, 8)
    q, k, v = attention.qkv(x).chunk(3, dim=-1)

    def heads(t):
        return t.view(2, 5, 2, 8).transpose(1, 2)

    q = apply_rope(attention.q_norm(heads(q)), table)
    k = apply_rope(attention.k_norm(heads(k)), table)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
    expected = attention.proj((weights @ heads(v)).transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(attention(x, rope=table), expected, atol=1e-5, rtol=1e-5)


def test_cross_attention_keys_form_a_set_and_context_broadcasts():
    torch.manual_seed(0)
    attention = CrossAttention(16, heads=4)
    x, context = torch.randn(2, 3, 16), torch.randn(2, 6, 16)
    table = rope_2d_table(2, 3, 4)
    out = attention(x, context, key_rope=table)
    # Reordering keys together with their positions does not change the result.
    perm = torch.randperm(6)
    permuted = attention(x, context[:, perm], key_rope=(table[0][perm], table[1][perm]))
    torch.testing.assert_close(out, permuted, atol=1e-5, rtol=1e-5)
    # ... but the positions matter.
    assert not torch.allclose(out, attention(x, context), atol=1e-4)
    shared = attention(x, context[:1])
    torch.testing.assert_close(shared[1], attention(x[1:], context[:1])[0], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------- camera


def test_group_frames_pads_causal_first_frame_after_it():
    spec = LatentSpec(channels=4, spatial_factor=1, temporal_factor=4, first_frame_alone=True, chunk_frames=17)
    frames = torch.arange(1, 35, dtype=torch.float32).view(1, 34, 1)  # frame i holds i + 1
    grouped = group_frames(frames, spec.frame_groups(34), 4)
    assert grouped.shape == (1, 10, 4, 1)
    torch.testing.assert_close(grouped[0, 0, :, 0], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(grouped[0, 1, :, 0], torch.tensor([2.0, 3.0, 4.0, 5.0]))
    torch.testing.assert_close(grouped[0, 5, :, 0], torch.tensor([18.0, 0.0, 0.0, 0.0]))  # second chunk
    plain = group_frames(frames[:, :32], LatentSpec(4, 1, temporal_factor=4).frame_groups(32), 4)
    torch.testing.assert_close(plain[0, 1, :, 0], torch.tensor([5.0, 6.0, 7.0, 8.0]))


@pytest.mark.parametrize("legacy", [False, True])
def test_camera_patch_feature_order(legacy):
    patch, groups = 2, 3
    features = groups * 6 * patch * patch
    embed = CameraPatchEmbed(features, patch, map_size=(4, 4), frames_per_token=groups, legacy_channel_order=legacy)
    with torch.no_grad():
        embed.linear.weight.copy_(torch.eye(features))
    # Encode (t, c, y, x) in the value so the position of each feature can be read back.
    t, c, y, x = torch.meshgrid(torch.arange(groups), torch.arange(6), torch.arange(4), torch.arange(4), indexing="ij")
    code = (t * 1000 + c * 100 + y * 10 + x).float()
    tokens = embed.embed_ray_maps(code[None, None])  # (1, 1, 4 tokens, features)
    assert tokens.shape == (1, 1, 4, features)
    token = 3  # patch row 1, patch column 1 -> pixels y in {2, 3}, x in {2, 3}
    for ti in range(groups):
        for ph in range(patch):
            for pw in range(patch):
                for ci in range(6):
                    if legacy:
                        position = ((ph * patch + pw) * groups + ti) * 6 + ci
                    else:
                        position = ((ti * patch + ph) * patch + pw) * 6 + ci
                    expected = ti * 1000 + ci * 100 + (2 + ph) * 10 + (2 + pw)
                    assert tokens[0, 0, token, position].item() == expected


def test_camera_embedding_of_cameras():
    generator = torch.Generator().manual_seed(0)
    spec = LatentSpec(channels=4, spatial_factor=1, temporal_factor=4, first_frame_alone=True, chunk_frames=17)
    embed = CameraPatchEmbed(8, 4, map_size=(8, 12), frames_per_token=4)
    cameras = random_cameras(2, 34, generator)
    tokens = embed(cameras, spec.frame_groups(34))
    assert tokens.shape == (2, 10, 6, 8)
    # Moving raw frame 1 changes latent frame 1's tokens only (frame 0 is alone).
    moved = cameras.extrinsics.clone()
    moved[:, 1, :3, 3] += 1.0
    moved_tokens = embed(Cameras(moved, cameras.intrinsics), spec.frame_groups(34))
    torch.testing.assert_close(tokens[:, 0], moved_tokens[:, 0])
    assert not torch.allclose(tokens[:, 1], moved_tokens[:, 1])
    torch.testing.assert_close(tokens[:, 2:], moved_tokens[:, 2:])
    with pytest.raises(ValueError, match="explicit frame groups"):
        embed(cameras)


def test_utils():
    assert count_parameters(SwiGLU(4, 6)) == 4 * 12 + 12 + 6 * 4 + 4
    key_map = {r"a\.(\d+)\.b": r"x.\1.y", r"drop\..*": None}
    assert rename_key("a.3.b", key_map) == "x.3.y"
    assert rename_key("drop.me", key_map) is None
    with pytest.raises(KeyError):
        rename_key("unknown", key_map)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_apply_rope_matches_the_reference_formula_values_and_gradients(dtype):
    from scenetok.nn.rope import apply_rope_reference

    table = rope_3d_table(2, 3, 3, 12)
    x = torch.randn(2, 3, 18, 12).to(dtype)
    fast_in = x.clone().requires_grad_(True)
    slow_in = x.clone().requires_grad_(True)
    fast, slow = apply_rope(fast_in, table), apply_rope_reference(slow_in, table)
    assert fast.dtype == dtype
    torch.testing.assert_close(fast, slow)
    weights = torch.randn(fast.shape)
    (fast.float() * weights).sum().backward()
    (slow.float() * weights).sum().backward()
    torch.testing.assert_close(fast_in.grad, slow_in.grad)
    # Views with odd storage offsets (a slice of a wider projection) still rotate correctly.
    wide = torch.randn(2, 3, 18, 13)
    torch.testing.assert_close(apply_rope(wide[..., 1:], table), apply_rope_reference(wide[..., 1:], table))
