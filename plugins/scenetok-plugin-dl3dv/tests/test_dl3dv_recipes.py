"""The shipped recipes: the paper's DL3DV configuration validates, and a tiny one trains."""

from __future__ import annotations

import pytest

from scenetok.cli import main as scenetok_main
from scenetok.recipe import RecipeError, load_recipe
from scenetok.model import SceneTok
from scenetok_plugin_dl3dv.commands import recipe_path
from scenetok_plugin_dl3dv.dataset import DL3DVDataset
from scenetok_plugin_dl3dv.testing import write_synthetic_dl3dv


def test_paper_recipe_validates_without_weights_or_data(capsys):
    assert scenetok_main(["validate", str(recipe_path("dl3dv"))]) == 0
    assert "scenetok-plugin-dl3dv==0.2.0" in capsys.readouterr().out
    recipe = load_recipe(recipe_path("dl3dv"))
    dataset = recipe["dataset"]
    assert dataset.cls is DL3DVDataset and dataset.info.provider == "scenetok-plugin-dl3dv==0.2.0"
    config = dataset.config
    assert (config.context_views, config.target_views, config.target_clips, config.image_size) == (16, 34, 2, [256, 256])
    assert config.benchmark and config.resolution == "images_4"
    assert recipe["token_compressor"].config.num_tokens == 1024
    decoder = recipe["decoder"].config
    assert (decoder.width, decoder.depth, decoder.camera_patch_size) == (1024, 24, 8)
    assert (decoder.window, decoder.rope_chunks) == (10, 2)
    sampler = recipe["sampler"].config
    assert (sampler.timesteps, sampler.shift) == ("shifted", 4.0)
    assert recipe["image_compressor"].config.checkpoint.endswith("vavae-imagenet256-f16d32-dinov2.pt")
    target = recipe["target_image_compressor"]
    assert target.name == "wan22" and target.config.chunk_frames == 17
    # 34 target frames = 2 Wan chunks of 17 = 10 latent frames = the decoder window
    assert target.cls.latent_spec(target.config).latent_frames(34) == decoder.window


def test_paper_recipe_catches_a_target_count_that_misses_the_wan_chunks():
    with pytest.raises(RecipeError, match="dataset.target_views"):
        load_recipe(recipe_path("dl3dv"), ["dataset.target_views=32", "dataset.target_clips=1"])


def test_tiny_recipe_validates_from_the_cli(capsys):
    assert scenetok_main(["validate", str(recipe_path("dl3dv_tiny"))]) == 0
    assert "dl3dv" in capsys.readouterr().out


def test_two_training_steps_through_the_plugin(tmp_path, hashes):
    write_synthetic_dl3dv(tmp_path / "dl3dv", hashes[:3], num_frames=12, folders=("images_8",))
    # the recipe by its shipped name, as a user would (`scenetok recipes` lists it)
    assert scenetok_main(["train", "dl3dv_tiny", "--run", str(tmp_path / "run"), "--no-progress",
                          f"dataset.root={tmp_path / 'dl3dv'}", "train.steps=2", "train.minutes=0",
                          "train.warmup_steps=1", "train.batch_size=2"]) == 0
    model = SceneTok.from_pretrained(tmp_path / "run")
    assert model.trained_step == 2
    assert model.recipe["dataset"].name == "dl3dv"
    assert (tmp_path / "run" / "recipe.yaml").read_text().count("scenetok-plugin-dl3dv") >= 1
