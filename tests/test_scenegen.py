"""SceneGen: the generator network, its parity with the official code, conditioning, CFG, sampling.

Parity fixtures: ``tests/fixtures/scenegen/official.safetensors``, written by
``tests/fixtures/scenegen/make_fixtures.py`` from the official scene generator (commit in the file's
metadata) at a tiny width on CPU. Reference numbers: /work/shared/reference/SCENETOK.md §6, §9, §10.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from scenetok.components.samplers.ddpm import DDPMSampler
from scenetok.components.samplers.flow import FlowSampler
from scenetok.components.scene_generators.dit import (
    DiTSceneGenerator,
    load_official_state_dict,
    official_key_map,
)
from scenetok.nn.utils import count_parameters, rename_key
from scenetok.scenegen.core import (
    SceneGenConfig,
    condition_dropout,
    guided_prediction,
    relative_to_first_condition,
    sample_tokens,
    training_loss,
)
from scenetok.testing.contracts import random_cameras
from scenetok.types import Cameras

FIXTURE = Path(__file__).parent / "fixtures" / "scenegen" / "official.safetensors"


# --------------------------------------------------------------------------------- sizes


def paper_generator(preset: str = "L") -> DiTSceneGenerator:
    with torch.device("meta"):
        return DiTSceneGenerator(DiTSceneGenerator.default_config(preset), num_tokens=512, token_dim=64,
                                 in_channels=32, latent_size=(16, 16))


def test_paper_generator_has_the_official_parameter_count():
    model = paper_generator("L")
    # SCENETOK.md §6.1: 1,255,053,376 network + 2 x 591,360 camera patch embeddings.
    assert count_parameters(model) == 1_256_236_096
    assert count_parameters(model.camera_embed) == 591_360
    assert count_parameters(model.anchor_camera_embed) == 591_360
    assert model.camera_embed.grid_size == (16, 16)  # 128-px Plücker map, patch 8 -> one token per latent cell
    # the sin-cos tables are recomputed, not stored (the official ones are 16384 x 1536 each)
    assert not any("pos_embed" in key and "camera" in key for key in model.state_dict())


def test_official_b_width_count():
    # SCENETOK.md §6.1: "B_1 159,002,176" (same overrides).
    assert count_parameters(paper_generator("B")) == 159_002_176


def official_generator_shapes(depth: int = 24, width: int = 1536) -> dict[str, tuple]:
    """The official ``lightningdit_1p0B_1`` state dict (prefix stripped), SCENETOK.md §9."""
    hidden = 4096
    shapes: dict[str, tuple] = {
        "model.x_embedder.weight": (width, 64), "model.x_embedder.bias": (width,),
        "model.c_embedder.proj.weight": (width, 32, 1, 1), "model.c_embedder.proj.bias": (width,),
        "model.t_embedder.mlp.0.weight": (width, 256), "model.t_embedder.mlp.0.bias": (width,),
        "model.t_embedder.mlp.2.weight": (width, width), "model.t_embedder.mlp.2.bias": (width,),
        "model.pos_embed": (1, 512, width), "model.null_tokens": (1, 1, width),
        "model.final_layer.norm_final.weight": (width,),
        "model.final_layer.linear.weight": (64, width), "model.final_layer.linear.bias": (64,),
        "model.final_layer.adaLN_modulation.1.weight": (2 * width, width),
        "model.final_layer.adaLN_modulation.1.bias": (2 * width,),
    }
    for embed in ("pose_embed", "anchor_pose_embed"):
        shapes[f"{embed}.model.model.proj.weight"] = (width, 6, 8, 8)
        shapes[f"{embed}.model.model.proj.bias"] = (width,)
        shapes[f"{embed}.model.model.pos_embed"] = (1, 16384, width)
    for i in range(depth):
        p = f"model.blocks.{i}."
        shapes.update({
            p + "norm1.weight": (width,), p + "norm2.weight": (width,),
            p + "attn.qkv.weight": (3 * width, width), p + "attn.qkv.bias": (3 * width,),
            p + "attn.proj.weight": (width, width), p + "attn.proj.bias": (width,),
            p + "mlp.w12.weight": (2 * hidden, width), p + "mlp.w12.bias": (2 * hidden,),
            p + "mlp.w3.weight": (width, hidden), p + "mlp.w3.bias": (width,),
            p + "adaLN_modulation.1.weight": (6 * width, width), p + "adaLN_modulation.1.bias": (6 * width,),
        })
        for attn in ("attn", "attn2"):
            shapes[p + f"{attn}.q_norm.weight"] = (64,)
            shapes[p + f"{attn}.k_norm.weight"] = (64,)
        for part in ("to_q", "to_k", "to_v", "proj"):
            shapes[p + f"attn2.{part}.weight"] = (width, width)
            shapes[p + f"attn2.{part}.bias"] = (width,)
    return shapes


def test_official_key_map_covers_the_paper_checkpoint_layout():
    ours = {k: tuple(v.shape) for k, v in paper_generator("L").state_dict().items()}
    mapped = {}
    for key, shape in official_generator_shapes().items():
        new = rename_key(key, official_key_map())
        if new is None:
            assert key.endswith("pos_embed") and "pose_embed" in key  # only the sin-cos tables are dropped
            continue
        assert ours[new] == shape, key
        mapped[new] = key
    assert set(mapped) == set(ours)  # bijective onto our parameters


def test_unmapped_official_key_is_a_clear_error():
    with pytest.raises(KeyError, match="model.blocks.0.attn3.qkv.weight"):
        load_official_state_dict({"scene_generator.model.blocks.0.attn3.qkv.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="scene_generator"):
        load_official_state_dict({"denoiser.cnd_proj.weight": torch.zeros(1)})


# --------------------------------------------------------------------------------- parity


@pytest.fixture(scope="module")
def official():
    metadata = safe_open(str(FIXTURE), "pt").metadata()
    assert metadata["official_commit"] == "b7aed48391242145715c53cb615097a807bc9688"
    return json.loads(metadata["config"]), load_file(str(FIXTURE))


def load_fixture_generator(official, bf16: bool = True) -> DiTSceneGenerator:
    c, tensors = official
    config = DiTSceneGenerator.Config(width=c["hidden"], depth=c["depth"], heads=c["heads"],
                                      camera_resolution=c["camera_resolution"], camera_patch_size=c["camera_patch"],
                                      camera_bf16_rounding=bf16, ray_epsilon=1e-6)
    model = DiTSceneGenerator(config, num_tokens=c["tokens"], token_dim=c["token_dim"],
                              in_channels=c["latent_channels"], latent_size=(c["latent_size"],) * 2).eval()
    weights = {k[len("weights."):]: v for k, v in tensors.items() if k.startswith("weights.")}
    model.load_state_dict(load_official_state_dict(weights), strict=True)
    return model


def fixture_cameras(tensors) -> tuple[Cameras, Cameras]:
    return (Cameras(tensors["relative.cond_extrinsics"], tensors["inputs.cond_intrinsics"]),
            Cameras(tensors["relative.anchor_extrinsics"], tensors["inputs.anchor_intrinsics"]))


def test_pose_relativisation_matches_official(official):
    _, t = official
    cond = Cameras(t["inputs.cond_extrinsics"], t["inputs.cond_intrinsics"])
    anchors = Cameras(t["inputs.anchor_extrinsics"], t["inputs.anchor_intrinsics"])
    rel_cond, rel_anchors = relative_to_first_condition(cond, anchors)
    torch.testing.assert_close(rel_cond.extrinsics, t["relative.cond_extrinsics"], atol=1e-5, rtol=0)
    torch.testing.assert_close(rel_anchors.extrinsics, t["relative.anchor_extrinsics"], atol=1e-5, rtol=0)
    torch.testing.assert_close(rel_cond.extrinsics[:, 0], torch.eye(4).expand(2, 4, 4), atol=1e-6, rtol=0)
    torch.testing.assert_close(rel_anchors.intrinsics, anchors.intrinsics)


def test_relative_to_first_condition_scales_to_the_anchor_spread(official):
    from scenetok.geometry.conventions import camera_spread

    _, t = official
    cond, anchors = fixture_cameras(t)
    plain_cond, plain_anchors = relative_to_first_condition(cond, anchors)
    # Measured on the first two anchors only (the rest could be a render path).
    scaled_cond, scaled_anchors = relative_to_first_condition(cond, anchors, scene_scale=0.3, num_anchors=2)
    torch.testing.assert_close(camera_spread(scaled_anchors[:, :2]), torch.full((2,), 0.3), atol=1e-5, rtol=0)
    factor = 0.3 / camera_spread(plain_anchors[:, :2])
    torch.testing.assert_close(scaled_anchors.extrinsics[..., :3, 3],
                               plain_anchors.extrinsics[..., :3, 3] * factor[:, None, None], atol=1e-5, rtol=0)
    torch.testing.assert_close(scaled_cond.extrinsics[:, 0], torch.eye(4).expand(2, 4, 4), atol=1e-6, rtol=0)
    torch.testing.assert_close(scaled_cond.extrinsics[..., :3, :3], plain_cond.extrinsics[..., :3, :3])


def test_forward_uncond_and_cfg_match_official(official):
    c, t = official
    model = load_fixture_generator(official)
    cond, anchors = fixture_cameras(t)
    args = (t["inputs.state"], t["inputs.network_timesteps"], t["inputs.latents"], cond, anchors)
    with torch.no_grad():
        forward = model(*args, t["inputs.cond_mask"].bool())
        uncond = model(*args, torch.zeros(2, 3, dtype=torch.bool))
        cfg = guided_prediction(model, *args, t["inputs.cond_mask"].bool(), guidance=c["guidance"])
    torch.testing.assert_close(forward, t["outputs.forward"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(uncond, t["outputs.uncond"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cfg, t["outputs.cfg"], atol=1e-4, rtol=1e-4)


def test_bf16_camera_rounding_is_what_the_official_outputs_need(official):
    # Without the compatibility switch our fp32 camera embedding moves the output by ~3e-4.
    _, t = official
    model = load_fixture_generator(official, bf16=False)
    cond, anchors = fixture_cameras(t)
    with torch.no_grad():
        out = model(t["inputs.state"], t["inputs.network_timesteps"], t["inputs.latents"], cond, anchors,
                    t["inputs.cond_mask"].bool())
    assert (out - t["outputs.forward"]).abs().max() > 1e-4


def test_sampling_run_matches_official(official):
    c, t = official
    model = load_fixture_generator(official)
    cond, anchors = fixture_cameras(t)
    sampler = FlowSampler(FlowSampler.Config(timesteps="shifted", shift=c["shift"], timestep_mode="per_sample"))
    tokens = sample_tokens(model, sampler, t["inputs.latents"], cond, anchors, t["inputs.sample_mask"].bool(),
                           guidance=c["guidance"], steps=c["steps"], noise=t["inputs.noise"])
    torch.testing.assert_close(tokens, t["outputs.sample"], atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------------- conditioning


def tiny_generator(seed: int = 0, **overrides) -> DiTSceneGenerator:
    torch.manual_seed(seed)
    config = DiTSceneGenerator.default_config("T", **{"width": 32, "heads": 2, "camera_dropout": 0.0, **overrides})
    model = DiTSceneGenerator(config, num_tokens=6, token_dim=4, in_channels=4, latent_size=(4, 4))
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def test_condition_sequence_layout_null_views_and_anchor_pooling():
    model = tiny_generator()
    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(2, 2, 4, 4, 4, generator=generator)
    cond, anchors = random_cameras(2, 2, generator), random_cameras(2, 5, generator)
    mask = torch.tensor([[True, False], [True, True]])
    with torch.no_grad():
        y = model.condition_sequence(latents, cond, anchors, mask)
        assert y.shape == (2, 3 * 16 + 5, 32)  # 3 view slots x 16 tokens + one token per anchor
        null = model.null_token[0, 0]
        torch.testing.assert_close(y[0, 16:48], null.expand(32, -1))  # view 1 absent + padded slot 2
        torch.testing.assert_close(y[1, 32:48], null.expand(16, -1))  # only the padded slot
        assert not torch.allclose(y[1, 16:32], null.expand(16, -1))
        expected_view0 = model.cond_embed(latents[:, 0]) + model.camera_embed(cond)[:, 0]
        torch.testing.assert_close(y[:, :16], expected_view0)
        pooled = model.anchor_camera_embed(anchors).mean(dim=2)
        torch.testing.assert_close(y[:, 48:], pooled)


def test_too_many_views_and_bad_shapes_are_clear_errors():
    model = tiny_generator()
    inputs = dict(noisy_tokens=torch.randn(1, 6, 4), timesteps=torch.zeros(1, 6),
                  cond_latents=torch.randn(1, 4, 4, 4, 4), cond_cameras=random_cameras(1, 4),
                  anchor_cameras=random_cameras(1, 2))
    with pytest.raises(ValueError, match="4 conditioning views; this generator takes 1 to 3"):
        model(**inputs)
    inputs.update(cond_latents=torch.randn(1, 1, 4, 4, 4), cond_cameras=random_cameras(1, 1))
    with pytest.raises(ValueError, match=r"timesteps must be \(B, N\)"):
        model(**{**inputs, "timesteps": torch.zeros(1)})


def test_relativisation_is_invariant_to_a_global_rigid_motion():
    generator = torch.Generator().manual_seed(0)
    cond, anchors = random_cameras(2, 3, generator), random_cameras(2, 4, generator)
    motion = torch.eye(4)
    motion[:3, :3] = torch.linalg.qr(torch.randn(3, 3, generator=generator))[0]
    motion[:3, 3] = torch.tensor([1.0, -2.0, 0.5])
    moved_cond = Cameras(motion @ cond.extrinsics, cond.intrinsics)
    moved_anchors = Cameras(motion @ anchors.extrinsics, anchors.intrinsics)
    a = relative_to_first_condition(cond, anchors)
    b = relative_to_first_condition(moved_cond, moved_anchors)
    torch.testing.assert_close(a[0].extrinsics, b[0].extrinsics, atol=1e-5, rtol=0)
    torch.testing.assert_close(a[1].extrinsics, b[1].extrinsics, atol=1e-5, rtol=0)


def test_condition_dropout_keeps_view_zero_and_drops_whole_samples():
    mask = condition_dropout(20_000, 3, view_keep_prob=0.5, uncond_prob=0.1,
                             generator=torch.Generator().manual_seed(0))
    unconditional = ~mask.any(1)
    assert abs(unconditional.float().mean().item() - 0.1) < 0.01
    conditional = mask[~unconditional]
    assert bool(conditional[:, 0].all())  # view 0 is present in every conditional sample
    assert abs(conditional[:, 1:].float().mean().item() - 0.5) < 0.02
    assert condition_dropout(4, 3, 1.0, 0.0).all()
    assert not condition_dropout(4, 3, 1.0, 1.0).any()


def test_guidance_combines_conditional_and_unconditional():
    model = tiny_generator()
    generator = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 6, 4, generator=generator), torch.full((2, 6), 500.0)
    latents = torch.randn(2, 1, 4, 4, 4, generator=generator)
    cond, anchors = random_cameras(2, 1, generator), random_cameras(2, 3, generator)
    with torch.no_grad():
        c = model(x, t, latents, cond, anchors)
        u = model(x, t, latents, cond, anchors, torch.zeros(2, 1, dtype=torch.bool))
        torch.testing.assert_close(guided_prediction(model, x, t, latents, cond, anchors, None, 3.0), u + 3 * (c - u))
        torch.testing.assert_close(guided_prediction(model, x, t, latents, cond, anchors, None, 1.0), c)
    assert not torch.allclose(c, u, atol=1e-4)


def test_camera_dropout_only_in_training():
    model = tiny_generator(camera_dropout=0.5)
    cams = random_cameras(64, 1)
    embedding = model.camera_embed(cams)
    assert torch.equal(model._camera_dropout(embedding), embedding)  # eval
    model.train()
    dropped = model._camera_dropout(embedding, torch.Generator().manual_seed(0))
    assert torch.equal(dropped, model._camera_dropout(embedding, torch.Generator().manual_seed(0)))  # reproducible
    zeroed = (dropped.flatten(1) == 0).all(1)
    assert 10 < int(zeroed.sum()) < 54
    torch.testing.assert_close(dropped[~zeroed], embedding[~zeroed])


def test_scenegen_config_validation():
    with pytest.raises(ValueError, match="scenegen.token_scale"):
        SceneGenConfig(token_scale=0)
    with pytest.raises(ValueError, match="scenegen.uncond_prob"):
        SceneGenConfig(uncond_prob=1.5)
    config = SceneGenConfig(token_scale=0.1)
    torch.testing.assert_close(config.unscale(config.scale(torch.ones(2))), torch.ones(2))


# --------------------------------------------------------------------------------- learning


def test_tiny_generator_overfits_token_sets_and_samples_them_back():
    """Four scenes, each a fixed token set and its own conditioning image: after a short training
    the sampler must return each scene's own tokens from that scene's image."""
    torch.manual_seed(0)
    config = DiTSceneGenerator.default_config("T", width=64, heads=4, camera_dropout=0.0)
    model = DiTSceneGenerator(config, num_tokens=6, token_dim=4, in_channels=4, latent_size=(4, 4))
    generator = torch.Generator().manual_seed(0)
    scenes = 4
    targets = torch.randn(scenes, 6, 4, generator=generator)
    latents = torch.randn(scenes, 1, 4, 4, 4, generator=generator) * 2
    cond, anchors = relative_to_first_condition(random_cameras(scenes, 1, generator),
                                                random_cameras(scenes, 3, generator))
    sampler = FlowSampler(FlowSampler.Config(timesteps="shifted", shift=1.0, timestep_mode="per_sample",
                                             prediction="sample"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    mask = torch.ones(scenes, 1, dtype=torch.bool)
    model.train()
    for _ in range(400):
        loss = training_loss(model, sampler, targets, latents, cond, anchors, mask, generator=generator).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    sampled = sample_tokens(model, sampler, latents, cond, anchors, mask, guidance=1.0, steps=20,
                            generator=torch.Generator().manual_seed(5))
    error = (sampled - targets).pow(2).mean(dim=(1, 2))
    between = (targets[:, None] - targets[None]).pow(2).mean(dim=(2, 3))
    nearest_other = between.masked_fill(torch.eye(scenes, dtype=torch.bool), float("inf")).min(1).values
    assert loss.item() < 0.05
    assert bool((error < 0.1 * nearest_other).all()), (error, nearest_other)


def test_ddpm_sampler_drives_the_same_loop():
    model = tiny_generator()
    sampler = DDPMSampler(DDPMSampler.default_config("ddim", timestep_mode="per_sample"))
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 1, 4, 4, 4, generator=generator)
    cond, anchors = random_cameras(2, 1, generator), random_cameras(2, 3, generator)
    tokens = sample_tokens(model, sampler, latents, cond, anchors, guidance=2.0, steps=5, generator=generator)
    assert tokens.shape == (2, 6, 4) and bool(torch.isfinite(tokens).all())
    loss = training_loss(model, sampler, torch.randn(2, 6, 4), latents, cond, anchors,
                         torch.ones(2, 1, dtype=torch.bool), generator=generator)
    assert loss.shape == (2,) and bool(torch.isfinite(loss).all())
