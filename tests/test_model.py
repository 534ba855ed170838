"""SceneTok composition: one recipe, swapped components, shapes, CFG, cache equivalence."""

from pathlib import Path

import pytest
import torch

from scenetok.data.dataset import build_dataset
from scenetok.data.export import moved_extrinsics
from scenetok.model import SceneTok, summary
from scenetok.recipe import load_recipe
from scenetok.types import collate_scenes

TINY = Path(__file__).parent / "recipes" / "tiny.yaml"
TINY32 = ["dataset.image_size=32", "token_compressor.patch_size=2", "decoder.patch_size=2"]
SWAPS = {
    "pixel": "image_compressor={name: pixel, patch_size: 4}",
    "sdvae": "image_compressor={name: sdvae, random_init: true, block_out_channels: [16, 16, 16], "
             "norm_num_groups: 8, layers_per_block: 1}",
    "vavae": "image_compressor={name: vavae, preset: tiny, random_init: true}",
}


def batch_of(recipe, count=2, split="train"):
    dataset = build_dataset(recipe, split=split)
    return collate_scenes([dataset[i] for i in range(count)])


def train_steps(recipe, steps=3):
    torch.manual_seed(0)
    model = SceneTok(recipe)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    batch = batch_of(recipe)
    losses = []
    for step in range(steps):
        out = model.loss(batch, generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["loss"].detach()))
    return model, batch, losses


@pytest.mark.parametrize("name", ["pixel", "sdvae", "vavae"])
def test_image_compressor_swap_trains_with_one_override(name):
    recipe = load_recipe(TINY, TINY32 + [SWAPS[name]])
    assert recipe["image_compressor"].name == name
    model, batch, losses = train_steps(recipe)
    assert all(torch.isfinite(torch.tensor(losses)))
    frames = model.reconstruct(batch, steps=2)
    assert frames.shape == batch.target.images.shape


@pytest.mark.parametrize("sampler", ["flow", "ddpm"])
def test_sampler_swap_trains_and_renders(sampler):
    recipe = load_recipe(TINY, [f"sampler.name={sampler}", "render.steps=3"])
    assert recipe["sampler"].name == sampler
    model, batch, losses = train_steps(recipe)
    assert all(torch.isfinite(torch.tensor(losses)))
    model.eval()
    frames = model.reconstruct(batch)
    assert frames.shape == batch.target.images.shape and 0 <= float(frames.min()) <= float(frames.max()) <= 1


def test_deterministic_mode_renders_the_same_video_twice():
    recipe = load_recipe(TINY)
    model, batch, _ = train_steps(recipe, steps=1)
    model.eval()
    a = model.reconstruct(batch, generator=torch.Generator().manual_seed(3))
    b = model.reconstruct(batch, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_long_trajectory_rollout_and_cfg():
    recipe = load_recipe(TINY, ["decoder.window=2"])
    model, batch, _ = train_steps(recipe, steps=1)
    model.eval()
    tokens = model.encode(model.relative_batch(batch, 1).context).mode()
    cameras = batch.target.cameras
    long = type(cameras)(cameras.extrinsics.repeat(1, 3, 1, 1), cameras.intrinsics.repeat(1, 3, 1, 1))
    for strategy in ("full_sequence", "autoregressive", "pyramid"):
        frames = model.render(tokens, long, steps=2, strategy=strategy, context_frames=1)
        assert frames.shape[:2] == (2, 6)
    guided = model.render(tokens, cameras, steps=2, guidance=3.0, generator=torch.Generator().manual_seed(0))
    plain = model.render(tokens, cameras, steps=2, guidance=1.0, generator=torch.Generator().manual_seed(0))
    assert guided.shape == plain.shape


def test_cfg_dropout_and_token_masking_reach_the_null_token():
    recipe = load_recipe(TINY, ["model.cfg_dropout=1.0"])
    model, batch, _ = train_steps(recipe, steps=1)
    model.zero_grad()
    model.loss(batch)["loss"].backward()
    assert model.decoder.null_token.grad is not None and model.decoder.null_token.grad.abs().sum() > 0
    recipe = load_recipe(TINY, ["model.token_mask_ratio=0.5"])
    model = SceneTok(recipe).train()
    mask = model._training_token_mask(torch.zeros(64, 8, 8), torch.Generator().manual_seed(0))
    assert 0 < mask.float().mean() < 0.5


def test_poses_are_made_relative_to_a_context_view():
    recipe = load_recipe(TINY)
    model = SceneTok(recipe)
    batch = batch_of(recipe)
    relative = model.relative_batch(batch, 1)
    eye = torch.eye(4).expand(2, 4, 4)
    torch.testing.assert_close(relative.context.cameras.extrinsics[:, 1], eye, atol=1e-5, rtol=0)
    # Relative poses do not depend on the world frame: move the world, same result.
    shift = torch.eye(4)
    shift[:3, 3] = torch.tensor([5.0, -2.0, 1.0])
    moved = type(batch)(batch.context.replace(cameras=type(batch.context.cameras)(
        shift @ batch.context.cameras.extrinsics, batch.context.cameras.intrinsics)),
        batch.target.replace(cameras=type(batch.target.cameras)(
            shift @ batch.target.cameras.extrinsics, batch.target.cameras.intrinsics)), batch.scenes)
    torch.testing.assert_close(model.relative_batch(moved, 1).target.cameras.extrinsics,
                               relative.target.cameras.extrinsics, atol=1e-4, rtol=0)


def _world_moved(batch, scale, offset):
    """``batch`` seen in a world scaled by ``scale`` about the origin and shifted by ``offset``
    (what another SfM run of the same capture gives): images unchanged."""
    def move(views):
        extrinsics = moved_extrinsics(views.cameras.extrinsics, scale, offset)
        return views.replace(cameras=type(views.cameras)(extrinsics, views.cameras.intrinsics))
    return type(batch)(move(batch.context), move(batch.target), batch.scenes)


def test_scene_scale_makes_renders_independent_of_world_scale():
    recipe = load_recipe(TINY, ["model.scene_scale=0.5"])
    torch.manual_seed(0)
    model = SceneTok(recipe).eval()
    with torch.no_grad():  # away from the zero-initialised output layers, so cameras reach the output
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    batch = batch_of(recipe)
    moved = _world_moved(batch, 7.0, [3.0, -1.0, 2.0])
    relative = model.relative_batch(batch, 1)
    spread = relative.context.cameras.centers
    spread = (spread - spread.mean(1, keepdim=True)).norm(dim=-1).mean(1)
    torch.testing.assert_close(spread, torch.full_like(spread, 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(model.relative_batch(moved, 1).target.cameras.extrinsics,
                               relative.target.cameras.extrinsics, atol=1e-4, rtol=0)
    noise_seed = 3
    same = [model.reconstruct(b, generator=torch.Generator().manual_seed(noise_seed)) for b in (batch, moved)]
    torch.testing.assert_close(same[0], same[1], atol=1e-4, rtol=0)
    # Off (the default, as the paper): the world's scale reaches the network.
    plain = SceneTok(load_recipe(TINY)).eval()
    plain.load_state_dict(model.state_dict())
    differ = [plain.reconstruct(b, generator=torch.Generator().manual_seed(noise_seed)) for b in (batch, moved)]
    assert (differ[0] - differ[1]).abs().max() > 1e-3


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_scene_scale_rejects_bad_values(value):
    with pytest.raises(Exception, match="model.scene_scale"):
        load_recipe(TINY, [f"model.scene_scale={value}"])


def test_summary_of_the_paper_recipe():
    root = Path(__file__).parents[1] / "recipes" / "re10k" / "scenetok.yaml"
    info = summary(load_recipe(root))
    assert info["components"]["token_compressor"]["parameters"] == 238_013_824
    # The renderer adds one learned null token (1024 floats) to the official 564,188,256.
    assert info["components"]["decoder"]["parameters"] == 564_188_256 + 1024
    assert info["floats_per_scene"] == 32_768


def test_training_on_cached_latents_matches_raw_images(tmp_path):
    from scenetok.data.cache import cache_latents
    from scenetok.checkpoint import load_checkpoint
    from scenetok.train.loop import train_recipe

    recipe = load_recipe(TINY, ["dataset.num_scenes=8"])
    spec = recipe["image_compressor"]
    cache_latents(build_dataset(recipe, split="train"), spec.cls(spec.config), tmp_path / "cache",
                  compressor_name=spec.name, progress=False)
    common = ["dataset.num_scenes=8", "train.steps=3"]
    train_recipe(TINY, common, run_dir=tmp_path / "raw", progress=False)
    train_recipe(TINY, common + [f"train.latent_cache={tmp_path / 'cache'}"], run_dir=tmp_path / "cached",
                 progress=False)
    raw = load_checkpoint(tmp_path / "raw").tensors["model"]
    cached = load_checkpoint(tmp_path / "cached").tensors["model"]
    for key in raw:
        torch.testing.assert_close(raw[key], cached[key], atol=1e-6, rtol=1e-5, msg=key)


def test_a_tiny_model_overfits_one_scene():
    """The classic sanity check: one scene, one fixed draw of timesteps/noise/tokens, repeated."""
    recipe = load_recipe(TINY)
    torch.manual_seed(0)
    model = SceneTok(recipe)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    batch = batch_of(recipe, count=1)
    losses = []
    for _ in range(120):
        out = model.loss(batch, generator=torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["mse"]))
    assert losses[-1] < losses[0] / 20, (losses[0], losses[-1])
