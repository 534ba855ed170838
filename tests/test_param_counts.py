"""Paper-size presets match the published parameter counts and the official checkpoint layout.

Everything is built on the meta device: no memory is allocated, so the 0.85B models take well
under a second. Reference numbers: /work/shared/reference/SCENETOK.md §9, §10, §12.
"""

from __future__ import annotations

import pytest
import torch

from scenetok.components.decoders import dit
from scenetok.components.decoders.dit import DiTDecoder
from scenetok.components.token_compressors import perceiver
from scenetok.components.token_compressors.perceiver import PerceiverCompressor
from scenetok.interfaces import LatentSpec
from scenetok.nn.utils import count_parameters, rename_key

VIDEO_DC = LatentSpec(channels=128, spatial_factor=32, temporal_factor=4)
WAN = LatentSpec(channels=48, spatial_factor=16, temporal_factor=4, first_frame_alone=True, chunk_frames=17)


def re10k_compressor(preset: str, **overrides) -> PerceiverCompressor:
    with torch.device("meta"):
        return PerceiverCompressor(PerceiverCompressor.default_config(preset, **overrides),
                                   in_channels=32, latent_size=(16, 16))


def re10k_renderer(preset: str) -> DiTDecoder:
    with torch.device("meta"):
        return DiTDecoder(DiTDecoder.default_config(preset), in_channels=128, latent_size=(8, 8),
                          token_dim=64, latent_spec=VIDEO_DC)


def wan_renderer() -> DiTDecoder:
    with torch.device("meta"):
        config = DiTDecoder.default_config("L", camera_patch_size=8, window=10, rope_chunks=2)
        return DiTDecoder(config, in_channels=48, latent_size=(16, 16), token_dim=64, latent_spec=WAN)


@pytest.mark.parametrize(("preset", "overrides", "expected"), [
    ("L", {}, 238_013_824),                      # the paper's compressor (official mv_B1), RE10K
    ("L", {"num_tokens": 1024}, 238_407_040),    # DL3DV: 1024 scene tokens
    ("B", {}, 70_516_854),                       # official mv_S1
    ("XL", {}, 850_357_996),                     # official mv_L1
])
def test_compressor_counts_are_exact(preset, overrides, expected):
    assert count_parameters(re10k_compressor(preset, **overrides)) == expected


@pytest.mark.parametrize(("preset", "expected"), [
    ("L", 564_188_256),   # the paper's renderer (official lightningdit_L_1), RE10K Video DC-AE
    ("B", 162_858_368),
    ("XL", 829_955_456),
])
def test_renderer_counts_are_exact_plus_null_token(preset, expected):
    model = re10k_renderer(preset)
    # The only parameter the official code lacks: the CFG null token it never constructed.
    assert model.null_token.shape == (1, 1, model.config.width)
    assert count_parameters(model) - model.null_token.numel() == expected


def test_renderer_parts_and_wan_variant():
    model = re10k_renderer("L")
    assert count_parameters(model.camera_embed) == 6_291_456  # LVSM Linear 6144 -> 1024
    assert count_parameters(model.scene_token_proj) == 66_560  # cnd_proj 64 -> 1024
    wan = wan_renderer()
    assert wan.camera_embed.linear.weight.shape == (1024, 1536)
    assert count_parameters(wan) - wan.null_token.numel() == 559_305_744


def test_count_parameters_ignores_buffers_and_counts_shared_once():
    module = torch.nn.Linear(3, 4)
    module.register_buffer("table", torch.zeros(100))
    tied = torch.nn.Sequential(module, module)
    assert count_parameters(tied) == 16
    module.bias.requires_grad_(False)
    assert count_parameters(tied, trainable_only=True) == 12


# --------------------------------------------------------------------- official key layout


def official_compressor_shapes(depth: int = 12, width: int = 768, tokens: int = 512) -> dict[str, tuple]:
    """The official RE10K ``mv_B1`` state dict (prefix ``compressor.`` stripped), SCENETOK.md §9."""
    hidden = 2048
    shapes: dict[str, tuple] = {
        "scene_tokens": (1, tokens, width),
        "y_embed.proj.weight": (width, 32, 2, 2), "y_embed.proj.bias": (width,),
        "feat_rope.freqs_cos": (64, 64), "feat_rope.freqs_sin": (64, 64),
        "pose_embed.model.model.1.weight": (width, 1536),
        "out_proj.0.weight": (128, width), "out_proj.0.bias": (128,),
    }
    for i in range(depth):
        last = i == depth - 1
        prefix = f"aggregate.{i}."
        for norm in ("norm1", "norm2", "norm4") + (() if last else ("norm3",)):
            shapes[prefix + f"{norm}.weight"] = (width,)
        for attn in ("attn1", "attn2"):
            shapes[prefix + f"{attn}.qkv.weight"] = (3 * width, width)
            shapes[prefix + f"{attn}.qkv.bias"] = (3 * width,)
            shapes[prefix + f"{attn}.proj.weight"] = (width, width)
            shapes[prefix + f"{attn}.proj.bias"] = (width,)
        for part in ("to_q", "to_k", "to_v", "proj"):
            shapes[prefix + f"attn3.{part}.weight"] = (width, width)
            shapes[prefix + f"attn3.{part}.bias"] = (width,)
        for mlp in ("mlp2",) + (() if last else ("mlp1",)):
            shapes[prefix + f"{mlp}.w12.weight"] = (2 * hidden, width)
            shapes[prefix + f"{mlp}.w12.bias"] = (2 * hidden,)
            shapes[prefix + f"{mlp}.w3.weight"] = (width, hidden)
            shapes[prefix + f"{mlp}.w3.bias"] = (width,)
        shapes[prefix + "adaLN_modulation.1.weight"] = (6 * width, width)
        shapes[prefix + "adaLN_modulation.1.bias"] = (6 * width,)
    return shapes


def official_renderer_shapes(depth: int = 24, width: int = 1024) -> dict[str, tuple]:
    """The official RE10K ``lightningdit_L_1`` state dict (prefix ``denoiser.`` stripped), §9."""
    hidden, head_dim = 2730, 64
    shapes: dict[str, tuple] = {
        "pose_embed.model.model.1.weight": (width, 6144),
        "cnd_proj.weight": (width, 64), "cnd_proj.bias": (width,),
        "model.x_embedder.proj.weight": (width, 128, 1, 1), "model.x_embedder.proj.bias": (width,),
        "model.t_embedder.mlp.0.weight": (width, 256), "model.t_embedder.mlp.0.bias": (width,),
        "model.t_embedder.mlp.2.weight": (width, width), "model.t_embedder.mlp.2.bias": (width,),
        "model.final_layer.norm_final.weight": (width,),
        "model.final_layer.linear.weight": (128, width), "model.final_layer.linear.bias": (128,),
        "model.final_layer.adaLN_modulation.1.weight": (2 * width, width),
        "model.final_layer.adaLN_modulation.1.bias": (2 * width,),
    }
    for i in range(depth):
        prefix = f"model.blocks.{i}."
        shapes[prefix + "norm1.weight"] = shapes[prefix + "norm2.weight"] = (width,)
        shapes[prefix + "attn.qkv.weight"] = (3 * width, width)
        shapes[prefix + "attn.qkv.bias"] = (3 * width,)
        for attn in ("attn", "attn2"):
            shapes[prefix + f"{attn}.q_norm.weight"] = shapes[prefix + f"{attn}.k_norm.weight"] = (head_dim,)
            shapes[prefix + f"{attn}.proj.weight"] = (width, width)
            shapes[prefix + f"{attn}.proj.bias"] = (width,)
        for part in ("to_q", "to_k", "to_v"):
            shapes[prefix + f"attn2.{part}.weight"] = (width, width)
            shapes[prefix + f"attn2.{part}.bias"] = (width,)
        shapes[prefix + "mlp.w12.weight"] = (2 * hidden, width)
        shapes[prefix + "mlp.w12.bias"] = (2 * hidden,)
        shapes[prefix + "mlp.w3.weight"] = (width, hidden)
        shapes[prefix + "mlp.w3.bias"] = (width,)
        shapes[prefix + "adaLN_modulation.1.weight"] = (6 * width, width)
        shapes[prefix + "adaLN_modulation.1.bias"] = (6 * width,)
    return shapes


def remap(official: dict[str, tuple], key_map: dict[str, str | None]) -> dict[str, tuple]:
    mapped: dict[str, tuple] = {}
    for key, shape in official.items():
        ours = rename_key(key, key_map)
        if ours is not None:
            assert ours not in mapped, f"two official keys map to {ours}"
            mapped[ours] = shape
    return mapped


def test_official_compressor_layout_maps_onto_ours():
    official = official_compressor_shapes()
    assert sum(torch.Size(s).numel() for k, s in official.items() if "feat_rope" not in k) == 238_013_824
    ours = {k: tuple(v.shape) for k, v in re10k_compressor("L").state_dict().items()}
    assert remap(official, perceiver.official_key_map()) == ours


def test_official_renderer_layout_maps_onto_ours():
    official = official_renderer_shapes()
    assert sum(torch.Size(s).numel() for s in official.values()) == 564_188_256
    ours = {k: tuple(v.shape) for k, v in re10k_renderer("L").state_dict().items()}
    ours.pop("null_token")
    assert remap(official, dit.official_key_map()) == ours
