"""Image compressors (pixel, vavae, sdvae, wan22) at tiny sizes with random weights: shapes follow the
latent spec, ranges, exact/consistent round trips, local weight loading and the errors around it."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from scenetok.weights import MissingWeightsError
from scenetok.components.image_compressors.pixel import PixelCompressor
from scenetok.components.image_compressors.sdvae import SDVAE
from scenetok.components.image_compressors.vavae import VAVAE, VAVAE_LATENT_MEAN, VAVAE_LATENT_STD
from scenetok.components.image_compressors.wan22 import Wan22VAE
from scenetok.testing.contracts import ImageCompressorContract

TINY_VAVAE = dict(VAVAE.presets["tiny"], random_init=True)
TINY_SDVAE = dict(SDVAE.presets["tiny"], random_init=True)
TINY_WAN = dict(Wan22VAE.presets["tiny"], random_init=True)


# ----------------------------------------------------------------------------------------------
# Contract suites (shapes from the latent spec, [0, 1] decode, deterministic mean, config schema)
# ----------------------------------------------------------------------------------------------


class TestPixelContract(ImageCompressorContract):
    component_class = PixelCompressor

    def make_config(self):
        return PixelCompressor.Config(patch_size=4)


class TestVAVAEContract(ImageCompressorContract):
    component_class = VAVAE

    def make_config(self):
        return VAVAE.Config(**TINY_VAVAE)


class TestSDVAEContract(ImageCompressorContract):
    component_class = SDVAE

    def make_config(self):
        return SDVAE.Config(**TINY_SDVAE)


class TestWan22Contract(ImageCompressorContract):
    component_class = Wan22VAE
    image_size = (16, 16)

    def make_config(self):
        return Wan22VAE.Config(**TINY_WAN)


# ----------------------------------------------------------------------------------------------
# pixel
# ----------------------------------------------------------------------------------------------


def test_pixel_round_trip_is_exact_and_channel_order_is_pixel_unshuffle():
    compressor = PixelCompressor(PixelCompressor.Config(patch_size=2))
    # multiples of 1/256 are exact in float32 through x*2-1 and back
    images = torch.randint(0, 257, (2, 3, 3, 8, 12)).float() / 256
    latents = compressor.encode(images)
    assert latents.shape == (2, 3, 12, 4, 6) and compressor.spec.channels == 12
    assert latents.min() >= -1 and latents.max() <= 1
    assert torch.equal(compressor.decode(latents), images)
    assert torch.equal(latents[1, 2], F.pixel_unshuffle(images[1, 2], 2) * 2 - 1)

    random_images = torch.rand(1, 2, 3, 8, 8)
    torch.testing.assert_close(compressor.decode(compressor.encode(random_images)), random_images, atol=1e-7, rtol=0)


def test_pixel_rejects_bad_input():
    compressor = PixelCompressor(PixelCompressor.Config(patch_size=4))
    with pytest.raises(ValueError, match="not divisible by patch_size 4"):
        compressor.encode(torch.rand(1, 1, 3, 10, 8))
    with pytest.raises(ValueError, match=r"\(B, V, 3, H, W\)"):
        compressor.encode(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="patch_size"):
        PixelCompressor.Config(patch_size=0)


# ----------------------------------------------------------------------------------------------
# vavae
# ----------------------------------------------------------------------------------------------


def test_vavae_builtin_statistics_standardise_the_posterior(caplog):
    with caplog.at_level(logging.WARNING):
        compressor = VAVAE(VAVAE.Config(**TINY_VAVAE))
    assert "RANDOM INITIALISATION" in caplog.text
    assert VAVAE.trainable is False and not compressor.autoencoder.training
    assert not any(p.requires_grad for p in compressor.parameters())
    assert compressor.spec.channels == 32 and compressor.spec.spatial_factor == 16

    images = torch.rand(1, 2, 3, 32, 32)
    raw = compressor.autoencoder.encode(images.reshape(2, 3, 32, 32) * 2 - 1).latent_dist.mode()
    mean, std = torch.tensor(VAVAE_LATENT_MEAN), torch.tensor(VAVAE_LATENT_STD)
    expected = (raw - mean[:, None, None]) / std[:, None, None]
    torch.testing.assert_close(compressor.encode(images)[0], expected)

    torch.manual_seed(3)
    first = compressor.encode(images, sample=True)
    torch.manual_seed(3)
    assert torch.equal(first, compressor.encode(images, sample=True))
    assert not torch.equal(first, compressor.encode(images))


def test_vavae_statistics_file_and_identity_fallback(tmp_path, caplog):
    channels = 4
    stats = {"mean": torch.randn(1, channels, 1, 1), "std": torch.rand(1, channels, 1, 1) + 0.5}
    torch.save(stats, tmp_path / "latents_stats.pt")
    with_stats = VAVAE(VAVAE.Config(**TINY_VAVAE, latent_channels=channels,
                                    latent_stats=str(tmp_path / "latents_stats.pt")))
    images = torch.rand(1, 1, 3, 32, 32)
    raw = with_stats.autoencoder.encode(images[0] * 2 - 1).latent_dist.mode()
    torch.testing.assert_close(with_stats.encode(images)[0], (raw - stats["mean"]) / stats["std"])
    # decode inverts the standardisation before the decoder
    expected = (with_stats.autoencoder.decode(raw).sample * 0.5 + 0.5).clamp(0, 1)
    torch.testing.assert_close(with_stats.decode(with_stats.encode(images))[0], expected, atol=1e-5, rtol=1e-4)

    with caplog.at_level(logging.WARNING):
        VAVAE(VAVAE.Config(**TINY_VAVAE, latent_channels=channels))
    assert "NOT standardised" in caplog.text

    torch.save({"mean": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="'mean' and 'std'"):
        VAVAE(VAVAE.Config(**TINY_VAVAE, latent_channels=channels, latent_stats=str(tmp_path / "bad.pt")))


def test_missing_weights_say_what_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("SCENETOK_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(MissingWeightsError) as error:
        VAVAE(VAVAE.Config())
    message = str(error.value)
    assert "vavae-imagenet256-f16d32-dinov2.pt" in message and str(tmp_path) in message
    assert "huggingface.co/hustvl/vavae-imagenet256-f16d32-dinov2" in message

    monkeypatch.delenv("SCENETOK_WEIGHTS_DIR")
    with pytest.raises(MissingWeightsError, match=r"sd-vae-ft-ema.*SCENETOK_WEIGHTS_DIR"):
        SDVAE(SDVAE.Config())
    with pytest.raises(MissingWeightsError, match=r"no/such/wan.*Wan2\.2-TI2V-5B-Diffusers"):
        Wan22VAE(Wan22VAE.Config(checkpoint="no/such/wan"))
    with pytest.raises(ValueError, match="not both"):
        VAVAE.Config(checkpoint="x.pt", random_init=True)


def test_weights_dir_resolves_relative_checkpoints(tmp_path, monkeypatch):
    reference = SDVAE(SDVAE.Config(**TINY_SDVAE))
    reference.autoencoder.save_pretrained(tmp_path / "my-vae")
    monkeypatch.setenv("SCENETOK_WEIGHTS_DIR", str(tmp_path))
    loaded = SDVAE(SDVAE.Config(**{**TINY_SDVAE, "random_init": False}, checkpoint="my-vae"))
    for (name, a), (_, b) in zip(reference.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


# ----------------------------------------------------------------------------------------------
# sdvae
# ----------------------------------------------------------------------------------------------


def test_sdvae_from_local_folder_and_single_file(tmp_path):
    reference = SDVAE(SDVAE.Config(**TINY_SDVAE))
    reference.autoencoder.save_pretrained(tmp_path / "vae")
    folder_config = {**TINY_SDVAE, "random_init": False}
    loaded = SDVAE(SDVAE.Config(**folder_config, checkpoint=str(tmp_path / "vae")))
    assert not loaded.autoencoder.training and not any(p.requires_grad for p in loaded.parameters())

    images = torch.rand(1, 2, 3, 32, 32)
    latents = loaded.encode(images)
    assert latents.shape == (1, 2, 4, 4, 4)
    raw = reference.autoencoder.encode(images[0] * 2 - 1).latent_dist.mode()
    torch.testing.assert_close(latents[0], raw * 0.18215)
    torch.testing.assert_close(loaded.decode(latents), reference.decode(latents))

    single = SDVAE(SDVAE.Config(**folder_config, checkpoint=str(tmp_path / "vae" / "diffusion_pytorch_model.safetensors"),
                                config_dir=str(tmp_path / "vae")))
    torch.testing.assert_close(single.encode(images), latents)

    with pytest.raises(MissingWeightsError, match="config_dir"):
        SDVAE(SDVAE.Config(**folder_config, checkpoint=str(tmp_path / "vae" / "diffusion_pytorch_model.safetensors")))
    with pytest.raises(ValueError, match="latent_channels=4"):
        SDVAE(SDVAE.Config(**{**folder_config, "latent_channels": 8}, checkpoint=str(tmp_path / "vae")))


def test_sdvae_shift_and_scale_are_inverted_by_decode():
    compressor = SDVAE(SDVAE.Config(**TINY_SDVAE, scale=0.5, shift=0.25))
    images = torch.rand(1, 1, 3, 16, 16)
    raw = compressor.autoencoder.encode(images[0] * 2 - 1).latent_dist.mode()
    latents = compressor.encode(images)
    torch.testing.assert_close(latents[0], (raw - 0.25) * 0.5)
    expected = (compressor.autoencoder.decode(raw).sample * 0.5 + 0.5).clamp(0, 1)
    torch.testing.assert_close(compressor.decode(latents)[0], expected, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# wan22
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wan() -> Wan22VAE:
    return Wan22VAE(Wan22VAE.Config(**TINY_WAN))


def test_wan22_encodes_17_frame_chunks_independently(wan):
    spec = wan.spec
    assert (spec.channels, spec.spatial_factor, spec.temporal_factor, spec.first_frame_alone, spec.chunk_frames) == (
        4, 8, 4, True, 17)
    images = torch.rand(1, 34, 3, 16, 16)
    latents = wan.encode(images)
    assert latents.shape == (1, 10, 4, 2, 2)
    first, second = wan.encode(images[:, :17]), wan.encode(images[:, 17:])
    torch.testing.assert_close(latents, torch.cat([first, second], dim=1))

    decoded = wan.decode(latents)
    assert decoded.shape == images.shape and decoded.min() >= 0 and decoded.max() <= 1
    torch.testing.assert_close(decoded[:, 17:], wan.decode(second))

    with pytest.raises(ValueError, match="17-frame chunk"):
        wan.encode(torch.rand(1, 20, 3, 16, 16))
    with pytest.raises(ValueError, match="multiple of the 5 latent frames"):
        wan.decode(latents[:, :7])


def test_wan22_single_sequence_and_config_validation():
    compressor = Wan22VAE(Wan22VAE.Config(**TINY_WAN, chunk_frames=0))
    assert compressor.encode(torch.rand(1, 9, 3, 16, 16)).shape == (1, 3, 4, 2, 2)
    assert compressor.decode(torch.zeros(1, 3, 4, 2, 2)).shape == (1, 9, 3, 16, 16)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        Wan22VAE.Config(chunk_frames=16)
    with pytest.raises(ValueError, match="temperal_downsample"):
        Wan22VAE.Config(temperal_downsample=[True, True, True])


def test_wan22_from_local_folder_applies_its_statistics(tmp_path, wan):
    channels = 4
    mean, std = torch.randn(channels), torch.rand(channels) + 0.5
    wan.autoencoder.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
    try:
        wan.autoencoder.save_pretrained(tmp_path / "pipeline" / "vae")
    finally:
        wan.autoencoder.register_to_config(latents_mean=[0.0] * channels, latents_std=[1.0] * channels)
    loaded = Wan22VAE(Wan22VAE.Config(**{**TINY_WAN, "random_init": False}, chunk_frames=5,
                                      checkpoint=str(tmp_path / "pipeline")))
    assert torch.equal(loaded.latent_mean.flatten(), mean) and torch.equal(loaded.latent_std.flatten(), std)
    images = torch.rand(1, 5, 3, 16, 16)
    raw = wan.autoencoder.encode(images.transpose(1, 2) * 2 - 1).latent_dist.mode()  # (1, C, 2, h, w)
    expected = ((raw - mean[:, None, None, None]) / std[:, None, None, None]).transpose(1, 2)
    latents = loaded.encode(images)
    torch.testing.assert_close(latents, expected, atol=1e-5, rtol=1e-4)
    decoded = (wan.autoencoder.decode(raw).sample.transpose(1, 2) * 0.5 + 0.5).clamp(0, 1)
    torch.testing.assert_close(loaded.decode(latents), decoded, atol=1e-5, rtol=1e-4)


def test_paper_size_wan22_matches_published_parameter_count():
    from scenetok.components.image_compressors.wan22 import _build

    with torch.device("meta"):
        model = _build(Wan22VAE.Config(random_init=True))
    assert sum(p.numel() for p in model.parameters()) == 704_688_668
    assert len(model.state_dict()) == 196
    spec = Wan22VAE.latent_spec(Wan22VAE.Config())
    assert (spec.channels, spec.spatial_factor, spec.latent_frames(34)) == (48, 16, 10)
