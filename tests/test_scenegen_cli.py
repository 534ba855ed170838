"""SceneGen end to end on a tiny SceneTok run: recipes, the shared training loop (smoke, exact
resume), `scenetok generate`, `render --tokens`, `eval` and `model summary`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scenetok.checkpoint import load_checkpoint
from scenetok.cli import main
from scenetok.recipe import RecipeError, load_recipe
from scenetok.train.loop import train_recipe

RECIPES = Path(__file__).parent / "recipes"
TINY = RECIPES / "tiny.yaml"
SCENEGEN = RECIPES / "scenegen_tiny.yaml"


@pytest.fixture(scope="module")
def scenetok_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("scenetok") / "run"
    train_recipe(TINY, ["train.steps=2"], run_dir=run, progress=False)
    return run


def on(run: Path, *extra: str) -> list[str]:
    return [f"scenegen.scenetok_run={run}", *extra]


@pytest.fixture(scope="module")
def scenegen_run(scenetok_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("scenegen") / "run"
    result = train_recipe(SCENEGEN, on(scenetok_run, "train.steps=2", "train.validate_every=2"), run_dir=run,
                          progress=False)
    assert result.reason == "finished" and result.step == 2
    return run


def test_training_smoke_writes_the_usual_run_files(scenegen_run):
    lines = [json.loads(line) for line in (scenegen_run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert all(np.isfinite(line["loss"]) for line in lines)
    assert (scenegen_run / "loss.png").exists() and (scenegen_run / "recipe.yaml").exists()
    assert (scenegen_run / "validation" / "step_000002.png").exists()  # single-image generation grid
    checkpoint = load_checkpoint(scenegen_run)
    # only the generator is trained and stored; the frozen SceneTok comes from its own run
    assert checkpoint.tensors["model"] and all(k.startswith("scene_generator.") for k in checkpoint.tensors["model"])


def weights(run: Path) -> dict:
    return load_checkpoint(run).tensors["model"]


def test_resume_is_exact(scenetok_run, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_recipe(SCENEGEN, on(scenetok_run, "train.steps=4"), run_dir=straight, progress=False)
    train_recipe(SCENEGEN, on(scenetok_run, "train.steps=2"), run_dir=split, progress=False)
    train_recipe(SCENEGEN, on(scenetok_run, "train.steps=4"), run_dir=split, progress=False)
    a, b = weights(straight), weights(split)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_the_trainer_optimises_only_the_generator(scenetok_run, tmp_path):
    from scenetok.train.loop import Trainer

    trainer = Trainer(load_recipe(SCENEGEN, on(scenetok_run)), tmp_path, progress=False)
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in trainer.model.generator.parameters()}
    assert not any(p.requires_grad for p in trainer.model.scenetok.parameters())
    assert list(trainer.networks) == ["scene_generator"]


def test_scenegen_recipe_checks(scenetok_run, tmp_path):
    assert main(["validate", str(SCENEGEN), *on(scenetok_run)]) == 0
    with pytest.raises(RecipeError, match="scenegen.scenetok_run: .* is not a SceneTok run directory"):
        load_recipe(SCENEGEN, on(tmp_path / "nothing"))
    with pytest.raises(RecipeError, match=r"dataset.image_size: \[32, 32\] differs from the frozen SceneTok's"):
        load_recipe(SCENEGEN, on(scenetok_run, "dataset.image_size=32"))
    with pytest.raises(RecipeError, match="decoder: a SceneGen recipe takes these from scenegen.scenetok_run"):
        load_recipe(SCENEGEN, on(scenetok_run, "decoder.name=dit"))
    with pytest.raises(RecipeError, match="scenegen: only a SceneGen recipe"):
        load_recipe(TINY, ["scenegen.guidance=2"])


def test_paper_recipe_summary_prints_the_parameter_count(capsys):
    assert main(["model", "summary", "scenegen/re10k"]) == 0
    assert "1,256,236,096 parameters" in capsys.readouterr().out


def write_png(path: Path, size: tuple[int, int] = (24, 40)) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((*size, 3)) * 255).astype("uint8")).save(path)
    return path


def read_frames(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted(folder.glob("frame_*.png"))]


def test_generate_from_one_png_and_rerender_the_tokens(scenegen_run, tmp_path, capsys):
    image = write_png(tmp_path / "room.png")  # not 16x16: resized and centre-cropped
    out = tmp_path / "generated"
    assert main(["generate", str(scenegen_run), "--images", str(image), "--out", str(out), "--frames", "4",
                 "--no-progress"]) == 0
    assert "re-render: scenetok render" in capsys.readouterr().out
    frames = read_frames(out / "frames")
    assert len(frames) == 4 and frames[0].shape == (16, 16, 3)
    assert any((out / name).exists() for name in ("render.mp4", "render.gif"))
    assert (out / "tokens.safetensors").exists() and (out / "conditioning" / "image_0000.png").exists()

    rerender = tmp_path / "rerender"
    assert main(["render", str(scenegen_run), "--tokens", str(out / "tokens.safetensors"), "--out",
                 str(rerender)]) == 0
    again = read_frames(rerender / "frames")
    assert len(again) == 4 and all(np.array_equal(a, b) for a, b in zip(frames, again))


def test_generate_input_errors_are_one_line(scenegen_run, tmp_path, capsys):
    image = write_png(tmp_path / "a.png")
    for images, message in [([str(tmp_path / "missing.png")], "missing.png: no such image file"),
                            ([str(image)] * 4, "got 4 conditioning images; this generator takes at most 3"),
                            ([str(image)] * 2, "2 images need their poses: pass --cameras FILE")]:
        code = main(["generate", str(scenegen_run), "--images", *images, "--out", str(tmp_path / "out"),
                     "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and "\n" not in err


def test_loading_a_scenegen_run_follows_the_scenetok_loading_rules(scenegen_run):
    from scenetok.scenegen.runs import load_scenegen

    model = load_scenegen(scenegen_run, ["scenegen.guidance=1.5"])
    assert model.config.guidance == 1.5
    # the token noise process a generator was trained with is kept, as for a SceneTok run
    with pytest.raises(RecipeError, match="cannot be rendered"):
        load_scenegen(scenegen_run, ["sampler.name=ddpm"])


def test_eval_on_a_scenegen_run_scores_against_both_references(scenegen_run, tmp_path, capsys):
    assert main(["eval", str(scenegen_run), "--out", str(tmp_path / "eval"), "--max-scenes", "1",
                 "--no-progress"]) == 0
    data = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert set(data["methods"]) == {"scenegen", "copy_condition", "scenetok_reconstruction"}
    assert "generated" in data["metadata"]["token_statistics"]
    # the effective sampler settings are reported, never None for "the recipe's default"
    assert data["metadata"]["steps"] >= 1 and data["metadata"]["guidance"] is not None
    assert "copy_condition" in capsys.readouterr().out


@pytest.mark.slow
def test_two_process_torchrun_gloo(scenetok_run, tmp_path):
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "scenetok.cli", "train", str(SCENEGEN), "--run-dir", str(run), "--no-progress", "train.steps=2",
               f"scenegen.scenetok_run={scenetok_run}"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_checkpoint(run).step == 2
    assert "distributed: rank 1 of 2 (gloo)" in done.stderr
