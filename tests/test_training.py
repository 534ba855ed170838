"""The main job end to end: train -> checkpoint -> resume -> eval -> render, on a tiny recipe."""

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from scenetok.recipe import load_recipe
from scenetok.checkpoint import list_checkpoints, load_checkpoint
from scenetok.model import SceneTok
from scenetok.train.loop import Trainer, TrainingAborted, train_recipe

TINY = Path(__file__).parent / "recipes" / "tiny.yaml"


def weights(run_dir):
    return load_checkpoint(run_dir).tensors["model"]


def test_end_to_end_train_eval_render(tmp_path):
    from scenetok.eval.evaluate import evaluate_run
    from scenetok.render import render_run

    run = tmp_path / "run"
    result = train_recipe(TINY, ["train.validate_every=4"], run_dir=run, progress=False)
    assert result.reason == "finished" and result.step == 4
    assert (run / "recipe.yaml").exists() and (run / "loss.png").exists()
    assert (run / "validation" / "step_000004.png").exists()
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert all(math.isfinite(line["loss"]) for line in lines)

    report = evaluate_run(run, progress=False, allow_random_lpips=True)
    methods = report.data["methods"]
    assert set(methods) == {"model", "nearest_context", "mean_context"}
    assert methods["model"]["mean"]["num_frames"] > 0
    for name in ("eval.json", "eval.md", "eval_grid.png"):
        assert (run / "eval" / name).exists()
    # The same targets are scored for every method.
    assert methods["model"]["mean"]["num_frames"] == methods["nearest_context"]["mean"]["num_frames"]

    out = render_run(run, out_dir=tmp_path / "render", trajectory="spline", frames=4, progress=False)
    assert len(list((out / "frames").glob("*.png"))) == 4
    assert (out / "render.mp4").exists() or (out / "render.gif").exists()


def test_resume_is_exact(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_recipe(TINY, ["train.steps=4"], run_dir=straight, progress=False)
    train_recipe(TINY, ["train.steps=2"], run_dir=split, progress=False)
    # "Killed" after step 2: re-running the same command with the longer budget resumes.
    train_recipe(TINY, ["train.steps=4"], run_dir=split, progress=False)
    a, b = weights(straight), weights(split)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_refuses_a_different_recipe(tmp_path):
    from scenetok.recipe import RecipeError

    train_recipe(TINY, ["train.steps=1"], run_dir=tmp_path, progress=False)
    with pytest.raises(RecipeError, match="decoder.depth"):
        train_recipe(TINY, ["train.steps=2", "decoder.depth=2"], run_dir=tmp_path, progress=False)


def test_nan_steps_are_skipped_and_abort_after_n(tmp_path, monkeypatch):

    recipe = load_recipe(TINY, ["train.max_consecutive_skips=3", "train.steps=10", "train.checkpoint_every=1"])
    trainer = Trainer(recipe, tmp_path, progress=False)
    real_loss = SceneTok.loss
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = real_loss(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 2:  # two good steps, then NaN forever
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(SceneTok, "loss", poisoned)
    result = trainer.fit()
    assert result.reason == "aborted"
    assert trainer.skipped_total == 3
    # The last good checkpoint (step 2) is the newest one; no checkpoint of a skipped step.
    assert load_checkpoint(tmp_path).step == 2
    with pytest.raises(TrainingAborted):
        trainer.consecutive_skips = 2
        trainer.train_step([next(iter(trainer._loader(None)))])


def test_a_skipped_first_step_still_advances_the_schedule_without_a_warning(tmp_path):
    recipe = load_recipe(TINY, ["train.skip_grad_norm=1e-12", "train.max_consecutive_skips=5",
                                "train.warmup_steps=4"])
    trainer = Trainer(recipe, tmp_path, progress=False)
    batch = next(iter(trainer._loader(None)))
    lr_before = trainer.optimizer.param_groups[0]["lr"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyTorch's "scheduler before optimizer" warning would raise here
        stats = trainer.train_step([batch])
    assert stats["skipped"] == 1.0 and trainer.step == 1
    assert trainer.optimizer.param_groups[0]["lr"] > lr_before  # the warm-up moved on


def test_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path):
    train_recipe(TINY, ["train.steps=4", "train.checkpoint_every=2"], run_dir=tmp_path, progress=False)
    newest = list_checkpoints(tmp_path)[-1]
    target = newest / "model.safetensors"
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    model = SceneTok.from_pretrained(tmp_path)
    assert model.trained_step == 2


def test_checkpoint_trained_with_flow_refuses_ddpm(tmp_path):
    from scenetok.recipe import RecipeError

    train_recipe(TINY, ["train.steps=1"], run_dir=tmp_path, progress=False)
    with pytest.raises(RecipeError, match="cannot be rendered"):
        SceneTok.from_pretrained(tmp_path, ["sampler.name=ddpm"])
    # the same sampler with another prediction target is another process too
    with pytest.raises(RecipeError, match="cannot be rendered"):
        SceneTok.from_pretrained(tmp_path, ["sampler.prediction=sample"])
    # settings that do not change the process are fine, and take effect
    model = SceneTok.from_pretrained(tmp_path, ["render.steps=3", "sampler.solver=heun"])
    assert model.render_config.steps == 3 and model.sampler.config.solver == "heun"


@pytest.mark.slow
def test_two_process_torchrun_gloo(tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "scenetok.cli", "train", str(TINY), "--run-dir", str(run), "--no-progress", "train.steps=2"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = load_checkpoint(run)
    assert checkpoint.step == 2
    assert "distributed: rank 0 of 2 (gloo)" in done.stderr
