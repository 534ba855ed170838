"""SceneGen on top of a (tiny, untrained) SceneTok: training samples, generation inputs and files,
single-image evaluation. The training loop, CLI and run loading are tested in test_scenegen_cli.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scenetok.components.samplers.flow import FlowSampler
from scenetok.components.scene_generators.dit import DiTSceneGenerator
from scenetok.geometry.conventions import make_relative
from scenetok.sections import SceneGenConfig
from scenetok.scenegen import generate as G
from scenetok.scenegen.model import SceneGen
from scenetok.types import Cameras, collate_scenes

TINY = Path(__file__).parent / "recipes" / "tiny.yaml"


@pytest.fixture(scope="module")
def setup():
    from scenetok.data.dataset import build_dataset
    from scenetok.model import SceneTok
    from scenetok.recipe import load_recipe

    torch.manual_seed(0)
    recipe = load_recipe(TINY)
    scenetok = SceneTok(recipe).eval()
    generator = DiTSceneGenerator(DiTSceneGenerator.default_config("T", width=32, heads=2), num_tokens=8,
                                  token_dim=8, in_channels=48, latent_size=(4, 4))
    sampler = FlowSampler(FlowSampler.Config(timesteps="shifted", shift=4, timestep_mode="per_sample"))
    model = SceneGen(scenetok, generator, sampler, SceneGenConfig(max_condition_views=3, steps=2))
    return recipe, model, build_dataset(recipe, split="train")


def test_training_sample_split_and_frozen_scenetok(setup):
    _, model, dataset = setup
    batch = collate_scenes([dataset[0], dataset[1]])
    cond, anchors = model.split_batch(batch, torch.Generator().manual_seed(0))
    assert cond.num_views == 3 and anchors.num_views == batch.context.num_views
    # conditioning view 0 is one of the anchors, and the reference of every pose
    torch.testing.assert_close(cond.cameras.extrinsics[:, 0], torch.eye(4).expand(2, 4, 4), atol=1e-5, rtol=0)
    matches = (anchors.cameras.extrinsics - torch.eye(4)).abs().flatten(2).amax(-1) < 1e-5  # (B, Va)
    assert bool(matches.any(1).all())
    for b in range(2):  # conditioning view 0 is that anchor's image
        (which,) = matches[b].nonzero()[0].tolist()
        assert torch.equal(cond.images[b, 0], batch.context.images[b, which])
        assert int(cond.indices[b, 0]) == int(batch.context.indices[b, which])
    assert torch.equal(cond.images[:, 1:], batch.target.images[:, :2])
    # the choice is drawn per sample: the two samples' anchor positions sometimes differ
    positions = set()
    for seed in range(12):
        chosen = model.split_batch(batch, torch.Generator().manual_seed(seed))[0].indices[:, 0]
        positions.add(tuple(int((batch.context.indices[b] == chosen[b]).nonzero()[0]) for b in range(2)))
    assert len({p for p in positions if p[0] != p[1]}) > 0 and len(positions) > 1

    model.train()
    assert not model.scenetok.training  # the frozen SceneTok never leaves eval mode
    out = model(batch, generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert all(p.grad is None for p in model.scenetok.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.generator.parameters())
    model.generator.zero_grad(set_to_none=True)
    model.eval()


def test_too_few_target_views_for_the_conditioning_is_a_clear_error(setup):
    _, model, dataset = setup
    batch = collate_scenes([dataset[0]])
    batch = type(batch)(batch.context, batch.target.replace(images=batch.target.images[:, :1],
                                                            cameras=batch.target.cameras[:, :1],
                                                            indices=batch.target.indices[:, :1]), batch.scenes)
    with pytest.raises(ValueError, match="max_condition_views=3 needs at least 2 target views"):
        model.split_batch(batch)


def write_png(path: Path, height: int, width: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((height, width, 3)) * 255).astype("uint8")).save(path)
    return path


def test_condition_images_are_resized_and_centre_cropped(tmp_path):
    image = np.zeros((40, 80, 3), dtype=np.uint8)
    image[:, 20:60] = 255  # the centre square is white, the sides black
    Image.fromarray(image).save(tmp_path / "wide.png")
    images, plans = G.load_condition_images([tmp_path / "wide.png"], (16, 16))
    assert images.shape == (1, 3, 16, 16)
    assert images.min() > 0.9  # only the white centre survives the crop
    assert plans[0].resized == (16, 32) and plans[0].offset == (0, 8)


def test_bad_condition_images_are_one_line_errors(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    good = write_png(tmp_path / "a.png", 8, 8)
    cases = [([tmp_path / "missing.png"], "missing.png: no such image file"),
             ([tmp_path / "broken.png"], "broken.png: not a readable image"),
             ([good] * 4, "got 4 conditioning images; this generator takes at most 3"),
             ([], "at least one conditioning image")]
    for paths, message in cases:
        with pytest.raises(G.SceneGenInputError, match=message) as info:
            G.load_condition_images(paths, (16, 16))
        assert "\n" not in str(info.value)


def camera_entry(extrinsics: torch.Tensor, intrinsics: torch.Tensor) -> dict:
    return {"extrinsics": extrinsics.tolist(), "intrinsics": intrinsics.tolist()}


def test_camera_file_relativises_to_the_first_image_and_crops_intrinsics(tmp_path):
    from scenetok.testing.contracts import random_cameras

    cams = random_cameras(1, 5, torch.Generator().manual_seed(0))[0]
    data = {"conditioning": [camera_entry(cams.extrinsics[i], cams.intrinsics[i]) for i in range(2)],
            "anchors": [camera_entry(cams.extrinsics[i], cams.intrinsics[i]) for i in range(1, 5)]}
    (tmp_path / "cams.json").write_text(json.dumps(data))
    parsed = G.read_camera_file(tmp_path / "cams.json")
    images, plans = G.load_condition_images([write_png(tmp_path / "a.png", 16, 32),
                                             write_png(tmp_path / "b.png", 16, 32, 1)], (16, 16))
    request = G.make_request(images, plans, camera_file=parsed, template=cams, trajectory="spline", frames=6)
    torch.testing.assert_close(request.cond_cameras.extrinsics[0], torch.eye(4), atol=1e-5, rtol=0)
    expected = make_relative(cams, 0)
    torch.testing.assert_close(request.anchors.extrinsics, expected.extrinsics[1:], atol=1e-5, rtol=1e-5)
    # a 2:1 image cropped to a square: fx doubles, cx stays centred
    torch.testing.assert_close(request.cond_cameras.intrinsics[0, 0, 0], 2 * cams.intrinsics[0, 0, 0])
    assert request.trajectory.extrinsics.shape == (6, 4, 4)


def test_bad_camera_files_are_clear_errors(tmp_path):
    path = tmp_path / "cams.json"
    for content, message in [("{", "not valid JSON"), ("[]", "expected a JSON object"),
                             ('{"anchors": [], "conditioning": []}', "'conditioning' must be a non-empty list"),
                             ('{"conditioning": [{"extrinsics": [[1]], "intrinsics": [[1]]}], "anchors": [1]}',
                              r"conditioning\[0\] must hold a finite 4x4"),
                             ('{"conditioning": [], "anchors": [], "extra": 1}', "unknown keys")]:
        path.write_text(content)
        with pytest.raises(G.SceneGenInputError, match=message):
            G.read_camera_file(path)
    with pytest.raises(G.SceneGenInputError, match="no such camera file"):
        G.read_camera_file(tmp_path / "none.json")


def test_several_images_need_a_camera_file(tmp_path):
    from scenetok.testing.contracts import random_cameras

    images, plans = G.load_condition_images([write_png(tmp_path / "a.png", 8, 8), write_png(tmp_path / "b.png", 8, 8)],
                                            (16, 16))
    with pytest.raises(G.SceneGenInputError, match="2 images need their poses: pass --cameras FILE"):
        G.make_request(images, plans, camera_file=None, template=random_cameras(1, 3)[0], trajectory="spline",
                       frames=4)


def test_generate_writes_frames_video_tokens_that_rerender_identically(setup, tmp_path):
    recipe, model, dataset = setup
    images, plans = G.load_condition_images([write_png(tmp_path / "a.png", 20, 30)], (16, 16))
    sample = dataset.load_selection(dataset.scenes()[0], [0, 3], [1])
    template = make_relative(Cameras(sample["context"]["extrinsics"], sample["context"]["intrinsics"]), 0)
    request = G.make_request(images, plans, camera_file=None, template=template, trajectory="orbit", frames=4)
    tokens, frames = G.generate_scene(model, request, steps=2, guidance=2.0, seed=3)
    again, _ = G.generate_scene(model, request, steps=2, guidance=2.0, seed=3)
    assert torch.equal(tokens, again)  # deterministic in the seed
    paths = G.write_outputs(tmp_path / "out", frames, tokens, request.trajectory, images, {"seed": 3}, fps=4)
    assert len(list(paths["frames"].glob("frame_*.png"))) == 4
    assert paths["video"].exists() and paths["video"].suffix in (".mp4", ".gif")
    stored, cameras, metadata = G.read_tokens(paths["tokens"])
    assert torch.equal(stored, tokens) and metadata == {"seed": 3}
    rerendered = G.render_tokens(model.scenetok, stored, cameras, seed=metadata["seed"])
    assert torch.equal(rerendered, frames)


def test_tokens_file_errors(tmp_path):
    from safetensors.torch import save_file

    save_file({"other": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(G.SceneGenInputError, match="not a scenetok tokens file"):
        G.read_tokens(tmp_path / "x.safetensors")
    (tmp_path / "y.safetensors").write_bytes(b"garbage")
    with pytest.raises(G.SceneGenInputError, match="unreadable tokens file"):
        G.read_tokens(tmp_path / "y.safetensors")


def test_single_image_evaluation_scores_every_method_on_the_same_frames(setup, tmp_path):
    from scenetok.data.index import write_evaluation_index
    from scenetok.data.dataset import build_dataset
    from scenetok.scenegen.evaluate import evaluate_scenegen

    recipe, model, _ = setup
    test = build_dataset(recipe, split="test")
    index = write_evaluation_index(test, tmp_path / "index.json", context_views=2, target_views=4, seed=0)
    dataset = build_dataset(recipe, split="test", index=str(index))
    report = evaluate_scenegen(model, dataset, dataset.evaluation_entries(), config=recipe.sections["eval"],
                               out_dir=tmp_path / "eval", steps=2, guidance=2.0, progress=False)
    methods = report.data["methods"]
    assert set(methods) == {"scenegen", "copy_condition", "scenetok_reconstruction"}
    frames = {m["mean"]["num_frames"] for m in methods.values()}
    assert len(frames) == 1 and frames.pop() > 0
    stats = report.data["metadata"]["token_statistics"]
    assert set(stats) == {"generated", "real"} and stats["real"]["std"] > 0
    assert (tmp_path / "eval" / "eval_grid.png").exists() and "copy_condition" in report.markdown
