"""The paper's RE10K recipe trains from a latent cache that holds context *and* target latents.

The shipped ``re10k/scenetok`` recipe is used as is, with only sizes shrunk: VA-VAE context latents
and Video DC-AE targets (both tiny and random-init), perceiver + DiT renderer over an 8-latent
window, logit-normal per-chunk timesteps, compressor freezing.
"""

from __future__ import annotations

import json

import pytest
import torch

from scenetok.checkpoint import load_checkpoint
from scenetok.cli import main
from scenetok.recipe import RecipeError, load_recipe
from scenetok.train.loop import train_recipe

RE10K = "re10k/scenetok"  # the shipped recipe, by name

#: The RE10K recipe at test size: every structural choice stays, only widths and sizes shrink.
TINY_RE10K = [
    "image_compressor.preset=tiny", "image_compressor.checkpoint=", "image_compressor.random_init=true",
    "target_image_compressor.preset=tiny", "target_image_compressor.checkpoint=",
    "target_image_compressor.random_init=true",
    "token_compressor.width=32", "token_compressor.heads=2", "token_compressor.depth=2",
    "token_compressor.num_tokens=8", "token_compressor.token_dim=8",
    "token_compressor.camera_resolution=8", "token_compressor.camera_patch_size=0",
    "decoder.width=32", "decoder.heads=2", "decoder.depth=2", "decoder.camera_resolution=8",
    "decoder.camera_patch_size=0",
    "dataset.name=rooms", "dataset.preset=easy", "dataset.image_size=64", "dataset.context_views=3",
    "dataset.target_views=32", "dataset.frames_per_scene=40", "dataset.shadows=false", "dataset.num_scenes=4",
    "train.steps=3", "train.batch_size=2", "train.freeze_compressor_after=2", "train.checkpoint_every=3",
    "train.num_workers=0", "train.log_every=1", "train.warmup_steps=1",
    # The paper skips steps whose gradient norm exceeds 1; a tiny random-init model's is ~1.2.
    "train.skip_grad_norm=0",
]


@pytest.fixture(scope="module")
def re10k_cache(tmp_path_factory):
    out = tmp_path_factory.mktemp("re10k") / "cache"
    assert main(["data", "cache", RE10K, "--out", str(out), "--no-progress", *TINY_RE10K]) == 0
    return out


def test_cache_holds_context_and_target_latents_of_their_own_compressors(re10k_cache):
    manifest = json.loads((re10k_cache / "manifest.json").read_text())
    assert manifest["compressor"]["name"] == "vavae"
    assert manifest["target_compressor"]["name"] == "video_dcae"
    assert manifest["parts"]["context"]["latent_shapes"] == [[3, 32, 4, 4]]
    # 32 frames -> 8 latent frames of the tiny Video DC-AE (8 channels, /32)
    assert manifest["parts"]["target"]["latent_shapes"] == [[8, 8, 2, 2]]


def test_the_re10k_recipe_trains_on_the_cache(tmp_path, re10k_cache):
    recipe = load_recipe(RE10K, TINY_RE10K)
    assert recipe["target_image_compressor"].name == "video_dcae"
    assert recipe["decoder"].config.window == 8 and recipe["sampler"].config.timestep_mode == "per_chunk"

    run = tmp_path / "run"
    result = train_recipe(RE10K, [*TINY_RE10K, f"train.latent_cache={re10k_cache}"], run_dir=run, progress=False)
    assert result.reason == "finished" and result.step == 3
    checkpoint = load_checkpoint(run)
    assert checkpoint.state["compressor_frozen"] is True  # freeze_compressor_after=2 took effect
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert [line["skipped"] for line in lines if "skipped" in line] == [0.0, 0.0, 0.0]  # the optimizer ran


def test_a_cache_of_other_target_latents_is_refused(tmp_path, re10k_cache):
    other = [o for o in TINY_RE10K if not o.startswith("target_image_compressor.")]
    other += ["target_image_compressor.name=precomputed", f"train.latent_cache={re10k_cache}"]
    with pytest.raises((RecipeError, ValueError), match="video_dcae"):
        train_recipe(RE10K, other, run_dir=tmp_path / "run", progress=False)
