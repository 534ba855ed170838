"""The DiT renderer at tiny size on CPU."""

from __future__ import annotations

import pytest
import torch

from scenetok.components.decoders.dit import DiTDecoder
from scenetok.interfaces import LatentSpec
from scenetok.testing.contracts import random_cameras
from scenetok.types import Cameras

IN_CHANNELS = 4
LATENT_SIZE = (4, 4)  # patch 1 -> 4x4 tokens, matching the T preset's 16/4 camera grid
TOKEN_DIM = 16
VIDEO_SPEC = LatentSpec(channels=IN_CHANNELS, spatial_factor=8, temporal_factor=4)
WAN_SPEC = LatentSpec(channels=IN_CHANNELS, spatial_factor=16, temporal_factor=4, first_frame_alone=True,
                      chunk_frames=17)



def build(spec: LatentSpec = VIDEO_SPEC, **overrides) -> DiTDecoder:
    config = DiTDecoder.default_config("T", **{"window": 10, **overrides})
    return DiTDecoder(config, in_channels=IN_CHANNELS, latent_size=LATENT_SIZE, token_dim=TOKEN_DIM,
                      latent_spec=spec)


def wake(model: DiTDecoder, seed: int = 0) -> DiTDecoder:
    """Give the zero-initialised (adaLN-Zero, output) weights random values, as after training, so
    every input actually reaches the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))
    return model


def inputs(batch: int, frames: int, spec: LatentSpec = VIDEO_SPEC, seed: int = 0, tokens: int = 8):
    generator = torch.Generator().manual_seed(seed)
    raw_frames = {VIDEO_SPEC: 4 * frames, WAN_SPEC: 17 * frames // 5}[spec]
    latents = torch.randn(batch, frames, IN_CHANNELS, *LATENT_SIZE, generator=generator)
    timesteps = torch.rand(batch, frames, generator=generator) * 999
    cameras = random_cameras(batch, raw_frames, generator)
    scene_tokens = torch.randn(batch, tokens, TOKEN_DIM, generator=generator)
    return latents, timesteps, cameras, scene_tokens


@pytest.fixture(scope="module")
def decoder() -> DiTDecoder:
    torch.manual_seed(0)
    return wake(build()).eval()


@pytest.mark.parametrize("frames", [8, 10])
def test_shapes_for_8_and_10_latent_frames(decoder, frames):
    latents, timesteps, cameras, scene_tokens = inputs(2, frames)
    with torch.no_grad():
        out = decoder(latents, timesteps, cameras, scene_tokens)
    assert out.shape == latents.shape
    assert torch.isfinite(out).all()
    assert DiTDecoder.max_latent_frames(decoder.config) == 10


def test_fresh_model_predicts_zero():
    # adaLN-Zero + zero output layer: the untrained renderer is the zero function.
    torch.manual_seed(0)
    latents, timesteps, cameras, scene_tokens = inputs(1, 2)
    with torch.no_grad():
        out = build()(latents, timesteps, cameras, scene_tokens)
    assert not out.any()


def test_classifier_free_guidance_paths(decoder):
    latents, timesteps, cameras, scene_tokens = inputs(2, 2)
    with torch.no_grad():
        conditional = decoder(latents, timesteps, cameras, scene_tokens)
        unconditional = decoder(latents, timesteps, cameras, None)
        all_masked = decoder(latents, timesteps, cameras, scene_tokens,
                             token_mask=torch.ones(2, 8, dtype=torch.bool))
        half_mask = torch.zeros(2, 8, dtype=torch.bool)
        half_mask[:, ::2] = True
        half_masked = decoder(latents, timesteps, cameras, scene_tokens, token_mask=half_mask)
    assert not torch.allclose(conditional, unconditional, atol=1e-4)
    # One null token is the same context as N copies of it.
    torch.testing.assert_close(all_masked, unconditional, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(half_masked, conditional, atol=1e-4)
    assert not torch.allclose(half_masked, unconditional, atol=1e-4)


def test_conditioning_inputs_all_matter(decoder):
    latents, timesteps, cameras, scene_tokens = inputs(1, 4)
    _, other_timesteps, other_cameras, other_tokens = inputs(1, 4, seed=3)
    with torch.no_grad():
        reference = decoder(latents, timesteps, cameras, scene_tokens)
        for changed in (
            decoder(latents, other_timesteps, cameras, scene_tokens),
            decoder(latents, timesteps, other_cameras, scene_tokens),
            decoder(latents, timesteps, cameras, other_tokens),
        ):
            assert not torch.allclose(changed, reference, atol=1e-4)
        # Scene tokens are an unordered set.
        perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(decoder(latents, timesteps, cameras, scene_tokens[:, perm]), reference,
                                   atol=1e-5, rtol=1e-5)


def test_per_frame_timesteps_act_per_frame():
    # One embedding per latent frame, each from its own timestep.
    torch.manual_seed(0)
    model = wake(build())
    timesteps = torch.tensor([[10.0, 500.0, 990.0]])
    embedded = model.timestep_embed(timesteps)
    assert embedded.shape == (1, 3, model.config.width)
    assert not torch.allclose(embedded[0, 0], embedded[0, 1])
    torch.testing.assert_close(embedded[0, 2], model.timestep_embed(torch.tensor([990.0]))[0])


def test_wan_style_camera_grouping_runs():
    torch.manual_seed(0)
    model = wake(build(WAN_SPEC, rope_chunks=2)).eval()
    latents, timesteps, cameras, scene_tokens = inputs(1, 10, spec=WAN_SPEC)
    assert cameras.shape == (1, 34)
    with torch.no_grad():
        out = model(latents, timesteps, cameras, scene_tokens)
    assert out.shape == (1, 10, IN_CHANNELS, *LATENT_SIZE)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="latent frames"):
        model(latents, timesteps, cameras[:, :33], scene_tokens)


def test_rope_chunks_restart_frame_positions():
    # With 2 RoPE chunks, two identical halves of a sequence with identical conditioning give
    # identical outputs only if each half sees the same positions; with one chunk they differ.
    torch.manual_seed(0)
    latents, timesteps, cameras, scene_tokens = inputs(1, 2)
    halves = (torch.cat([latents, latents], 1), torch.cat([timesteps, timesteps], 1),
              Cameras.cat([cameras, cameras]))
    results = {}
    for chunks in (1, 2):
        model = wake(build(rope_chunks=chunks)).eval()
        with torch.no_grad():
            results[chunks] = model(*halves, scene_tokens)
    torch.testing.assert_close(results[2][:, :2], results[2][:, 2:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(results[1][:, :2], results[1][:, 2:], atol=1e-4)


def test_gradients_reach_every_parameter_after_warmup_steps():
    # adaLN-Zero closes every gate and zeroes the output layer, so only the output layer learns in
    # step 1; the gates open in step 2; from step 3 on every parameter receives gradient.
    torch.manual_seed(0)
    model = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    latents, timesteps, cameras, scene_tokens = inputs(2, 2)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, :3] = True  # exercise the null token and the projected tokens in one pass
    target = torch.randn(latents.shape, generator=torch.Generator().manual_seed(1))
    silent_per_step = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = (model(latents, timesteps, cameras, scene_tokens, token_mask=mask) - target).square().mean()
        loss.backward()
        silent_per_step.append(
            [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        )
        optimizer.step()
    assert "final_layer.linear.weight" not in silent_per_step[0]
    assert "blocks.0.self_attn.qkv.weight" in silent_per_step[0]
    assert not silent_per_step[-1], f"no gradient for {silent_per_step[-1]}"


def test_validation_errors(decoder):
    latents, timesteps, cameras, scene_tokens = inputs(1, 2)
    with pytest.raises(ValueError, match="window"):
        decoder(torch.randn(1, 11, IN_CHANNELS, *LATENT_SIZE), torch.zeros(1, 11),
                random_cameras(1, 44, torch.Generator().manual_seed(0)), scene_tokens)
    with pytest.raises(ValueError, match="timesteps"):
        decoder(latents, timesteps[:, 0], cameras, scene_tokens)
    with pytest.raises(ValueError, match="token_mask"):
        decoder(latents, timesteps, cameras, scene_tokens, token_mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="equal RoPE chunks"):
        build(rope_chunks=2)(torch.randn(1, 3, IN_CHANNELS, *LATENT_SIZE), torch.zeros(1, 3),
                             random_cameras(1, 12, torch.Generator().manual_seed(0)), scene_tokens)
    with pytest.raises(ValueError, match="camera grid does not align"):
        DiTDecoder(DiTDecoder.default_config("T"), in_channels=IN_CHANNELS, latent_size=(8, 8),
                   token_dim=TOKEN_DIM, latent_spec=VIDEO_SPEC)
    with pytest.raises(ValueError, match="heads"):
        DiTDecoder.default_config("T", width=64, heads=16)


def test_inputs_are_not_modified(decoder):
    latents, timesteps, cameras, scene_tokens = inputs(1, 2)
    originals = [t.clone() for t in (latents, timesteps, cameras.extrinsics, cameras.intrinsics, scene_tokens)]
    with torch.no_grad():
        decoder(latents, timesteps, cameras, scene_tokens, token_mask=torch.ones(1, 8, dtype=torch.bool))
    for original, current in zip(originals, (latents, timesteps, cameras.extrinsics, cameras.intrinsics, scene_tokens)):
        assert torch.equal(original, current)
