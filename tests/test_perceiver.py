"""The perceiver token compressor at tiny size on CPU."""

from __future__ import annotations

import pytest
import torch

from scenetok.components.token_compressors.perceiver import PerceiverCompressor
from scenetok.interfaces import DiagonalGaussian
from scenetok.testing.contracts import random_cameras
from scenetok.types import Cameras

IN_CHANNELS = 4
LATENT_SIZE = (8, 8)  # patch 2 -> 4x4 view tokens, matching the T preset's 16/4 camera grid



@pytest.fixture(scope="module")
def compressor() -> PerceiverCompressor:
    torch.manual_seed(0)
    return PerceiverCompressor(PerceiverCompressor.default_config("T"), in_channels=IN_CHANNELS,
                               latent_size=LATENT_SIZE).eval()


def inputs(batch: int, views: int, seed: int = 0) -> tuple[torch.Tensor, Cameras]:
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, views, IN_CHANNELS, *LATENT_SIZE, generator=generator)
    return latents, random_cameras(batch, views, generator)


@pytest.mark.parametrize("views", [1, 12, 16])
def test_output_shapes_for_any_number_of_views(compressor, views):
    latents, cameras = inputs(2, views)
    with torch.no_grad():
        dist = compressor(latents, cameras)
    assert isinstance(dist, DiagonalGaussian)
    num_tokens, token_dim = PerceiverCompressor.token_shape(compressor.config)
    assert dist.mean.shape == dist.logvar.shape == (2, num_tokens, token_dim) == (2, 32, 16)
    assert torch.isfinite(dist.mean).all() and torch.isfinite(dist.logvar).all()
    assert dist.kl().shape == (2,)


def test_permutation_invariant_over_views(compressor):
    latents, cameras = inputs(2, 12)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = compressor(latents, cameras)
        permuted = compressor(latents[:, perm], cameras[:, perm])
    torch.testing.assert_close(permuted.mean, reference.mean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(permuted.logvar, reference.logvar, atol=1e-4, rtol=1e-4)


def test_output_depends_on_latents_cameras_and_view_layout(compressor):
    latents, cameras = inputs(1, 4)
    other_latents, other_cameras = inputs(1, 4, seed=5)
    with torch.no_grad():
        reference = compressor(latents, cameras).mean
        assert not torch.allclose(compressor(other_latents, cameras).mean, reference, atol=1e-3)
        assert not torch.allclose(compressor(latents, other_cameras).mean, reference, atol=1e-3)
        # Tokens inside a view carry 2D positions: flipping every view spatially changes the result.
        flipped = compressor(latents.flip(-1), cameras).mean
    assert not torch.allclose(flipped, reference, atol=1e-3)


def test_batch_elements_are_independent(compressor):
    latents, cameras = inputs(3, 5)
    with torch.no_grad():
        batched = compressor(latents, cameras).mean
        single = compressor(latents[1:2], cameras[1:2]).mean
    torch.testing.assert_close(batched[1:2], single, atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = PerceiverCompressor(PerceiverCompressor.default_config("T"), in_channels=IN_CHANNELS,
                                latent_size=LATENT_SIZE)
    latents, cameras = inputs(2, 3)
    dist = model(latents, cameras)
    (dist.sample(torch.Generator().manual_seed(0)).square().mean() + 1e-3 * dist.kl().mean()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


def test_gradient_checkpointing_matches():
    torch.manual_seed(0)
    plain = PerceiverCompressor(PerceiverCompressor.default_config("T"), in_channels=IN_CHANNELS,
                                latent_size=LATENT_SIZE)
    checkpointed = PerceiverCompressor(PerceiverCompressor.default_config("T", gradient_checkpointing=True),
                                       in_channels=IN_CHANNELS, latent_size=LATENT_SIZE)
    checkpointed.load_state_dict(plain.state_dict())
    latents, cameras = inputs(1, 2)
    plain(latents, cameras).mean.sum().backward()
    checkpointed(latents, cameras).mean.sum().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_inputs_are_not_modified(compressor):
    latents, cameras = inputs(1, 2)
    copies = latents.clone(), cameras.extrinsics.clone(), cameras.intrinsics.clone()
    with torch.no_grad():
        compressor(latents, cameras)
    assert torch.equal(latents, copies[0])
    assert torch.equal(cameras.extrinsics, copies[1]) and torch.equal(cameras.intrinsics, copies[2])


def test_config_and_build_validation():
    with pytest.raises(ValueError, match="camera grid does not align"):
        PerceiverCompressor(PerceiverCompressor.default_config("T"), in_channels=4, latent_size=(16, 16))
    with pytest.raises(ValueError, match="camera_kind"):
        PerceiverCompressor.default_config("T", camera_kind="fourier")
    with pytest.raises(ValueError, match="heads"):
        PerceiverCompressor.default_config("T", heads=3)
    with pytest.raises(ValueError, match="camera_patch_size"):
        PerceiverCompressor.default_config("T", camera_resolution=18)
    model = PerceiverCompressor(PerceiverCompressor.default_config("T"), in_channels=4, latent_size=(8, 8))
    latents, cameras = inputs(1, 2)
    with pytest.raises(ValueError, match="cameras"):
        model(latents, cameras[:, :1])
    with pytest.raises(ValueError, match="channels"):
        model(latents[:, :, :3], cameras)


def test_scene_query_init_and_non_square_latents():
    torch.manual_seed(0)
    config = PerceiverCompressor.default_config("T", num_tokens=256, width=64)
    model = PerceiverCompressor(config, in_channels=4, latent_size=(8, 12))
    assert model.scene_queries.std().item() == pytest.approx(5.0, rel=0.05)
    assert model.camera_embed.map_size == (16, 24)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        dist = model(torch.randn(1, 3, 4, 8, 12, generator=generator), random_cameras(1, 3, generator))
    assert dist.mean.shape == (1, 256, 16)
