"""The paper's RE10K recipe trains from a latent cache that holds context *and* target latents.

The shipped ``recipes/re10k/scenetok.yaml`` is used as is, with only sizes shrunk: VA-VAE context
latents (a tiny random-init VA-VAE), ``precomputed`` Video-DC-AE-shaped targets (128 channels,
/32 spatial, 4 frames per latent), perceiver + DiT renderer, logit-normal per-chunk timesteps,
compressor freezing. Scenetok has no Video DC-AE, so the cache's targets come from a stand-in
video encoder with the same latent spec -- exactly what ``precomputed`` accepts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from scenetok.cli import main
from scenetok.interfaces import ImageCompressor, LatentSpec
from scenetok.recipe import RecipeError, load_recipe
from scenetok.checkpoint import load_checkpoint
from scenetok.train.loop import train_recipe

RE10K = "re10k/scenetok"  # the shipped recipe, by name

#: The RE10K recipe at test size: every structural choice stays, only widths and sizes shrink.
TINY_RE10K = [
    "image_compressor.preset=tiny", "image_compressor.checkpoint=", "image_compressor.random_init=true",
    "token_compressor.width=32", "token_compressor.heads=2", "token_compressor.depth=2",
    "token_compressor.num_tokens=8", "token_compressor.token_dim=8",
    "token_compressor.camera_resolution=8", "token_compressor.camera_patch_size=0",
    "decoder.width=32", "decoder.heads=2", "decoder.depth=2", "decoder.camera_resolution=8",
    "decoder.camera_patch_size=0",
    "dataset.name=rooms", "dataset.preset=easy", "dataset.image_size=64", "dataset.context_views=3",
    "dataset.target_views=32", "dataset.frames_per_scene=40", "dataset.shadows=false", "dataset.num_scenes=4",
    "train.steps=3", "train.batch_size=2", "train.freeze_compressor_after=2", "train.checkpoint_every=3",
    "train.num_workers=0", "train.log_every=1", "train.warmup_steps=1",
]


class TinyVideoEncoder(ImageCompressor):
    """Stand-in for Video DC-AE: 4 frames -> 1 latent frame, /32 spatial, 128 channels (a fixed
    random projection of pooled colours)."""

    @dataclass
    class Config:
        """Attributes:
        channels: latent channels.
        """

        channels: int = 128

    trainable = False

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.register_buffer("projection", torch.randn(config.channels, 3, generator=torch.Generator().manual_seed(0)))

    @classmethod
    def latent_spec(cls, config):
        return LatentSpec(channels=config.channels, spatial_factor=32, temporal_factor=4)

    def encode(self, images, sample=False):
        b, v = images.shape[:2]
        frames = images.unflatten(1, (v // 4, 4)).mean(2)  # (B, F, 3, H, W)
        pooled = torch.nn.functional.avg_pool2d(frames.flatten(0, 1), 32).unflatten(0, (b, v // 4))
        return torch.einsum("oc,bfchw->bfohw", self.projection, pooled * 2 - 1)

    def decode(self, latents):
        raise NotImplementedError


@pytest.fixture
def video_cache(tmp_path, registry_override):
    registry_override("image_compressor", "tinyvideo", TinyVideoEncoder)
    out = tmp_path / "cache"
    # `data cache` with the encoder that makes the targets' latents in place of `precomputed`.
    code = main(["data", "cache", str(RE10K), "--out", str(out), "--no-progress", *TINY_RE10K,
                 "target_image_compressor.name=tinyvideo"])
    assert code == 0
    return out


def test_cache_holds_context_and_target_latents_of_their_own_compressors(video_cache):
    manifest = json.loads((video_cache / "manifest.json").read_text())
    assert manifest["compressor"]["name"] == "vavae"
    assert manifest["target_compressor"]["name"] == "tinyvideo"
    assert manifest["target_compressor"]["latent_spec"]["temporal_factor"] == 4
    assert manifest["parts"]["context"]["latent_shapes"] == [[3, 32, 4, 4]]
    assert manifest["parts"]["target"]["latent_shapes"] == [[8, 128, 2, 2]]


def test_the_re10k_recipe_trains_on_the_cache(tmp_path, video_cache):
    recipe = load_recipe(RE10K, TINY_RE10K)
    assert recipe["target_image_compressor"].name == "precomputed"
    assert recipe["decoder"].config.window == 8 and recipe["sampler"].config.timestep_mode == "per_chunk"

    run = tmp_path / "run"
    result = train_recipe(RE10K, [*TINY_RE10K, f"train.latent_cache={video_cache}"], run_dir=run, progress=False)
    assert result.reason == "finished" and result.step == 3
    checkpoint = load_checkpoint(run)
    assert checkpoint.state["compressor_frozen"] is True  # freeze_compressor_after=2 took effect
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_a_cache_of_another_latent_spec_is_refused(tmp_path, video_cache):
    wrong = [*TINY_RE10K, "target_image_compressor.channels=64", f"train.latent_cache={video_cache}"]
    with pytest.raises(RecipeError, match=r"train.latent_cache .*target latents were cached by 'tinyvideo'"):
        train_recipe(RE10K, wrong, run_dir=tmp_path / "run", progress=False)


def test_data_cache_refuses_precomputed_encoders(tmp_path, capsys):
    assert main(["data", "cache", str(RE10K), "--out", str(tmp_path / "c"), *TINY_RE10K]) == 2
    assert "target_image_compressor is 'precomputed': it cannot encode images" in capsys.readouterr().err
