"""Issue 19: what a new user hits in the first hour (index/eval view counts, empty evaluations,
errors that name the right file and key, plugin listing, run records, logging)."""

import json
import logging
from pathlib import Path

import pytest

from scenetok.cli import main

ROOT = Path(__file__).parents[1]
TINY = str(Path(__file__).parent / "recipes" / "tiny.yaml")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 2-step run of the tiny recipe (shared by the tests that need a checkpoint)."""
    from scenetok.train.loop import train_recipe

    run_dir = tmp_path_factory.mktemp("usability") / "run"
    train_recipe(TINY, ["train.steps=2"], run_dir=run_dir, progress=False)
    return run_dir


# -- item 1: the index uses the evaluation view counts; an evaluation that scores nothing fails ---


def test_data_index_uses_the_eval_view_counts(capsys, tmp_path):
    out_file = tmp_path / "index.json"
    code, out, _ = run(capsys, "data", "index", TINY, "--out", out_file, "eval.context_views=3",
                       "dataset.num_scenes=6")
    assert code == 0
    # tiny.yaml: dataset 2 context / 2 target, eval.target_views 4, eval.context_views overridden.
    assert "3 context (eval.context_views)" in out and "4 target (eval.target_views)" in out
    entries = json.loads(out_file.read_text())
    assert entries
    for entry in entries.values():
        assert len(entry["target"]) == 4
        assert len(entry["context"]) >= 3
        assert set(entry["target"]) - set(entry["context"])


def test_data_index_says_when_it_falls_back_to_the_dataset_counts(capsys, tmp_path):
    code, out, _ = run(capsys, "data", "index", TINY, "--out", tmp_path / "i.json", "eval.target_views=0",
                       "dataset.num_scenes=4")
    assert code == 0
    assert "2 target (dataset.target_views; eval.target_views is unset)" in out


def test_eval_fails_when_every_target_is_a_context_frame(capsys, tmp_path, trained_run):
    index = tmp_path / "same.json"
    from scenetok.data.dataset import build_dataset
    from scenetok.recipe import load_recipe

    scenes = build_dataset(load_recipe(TINY), split="test").scenes()[:2]
    index.write_text(json.dumps({scene: {"context": [0, 1], "target": [0, 1]} for scene in scenes}))
    code, out, err = run(capsys, "eval", trained_run, "--index", index, "--out", tmp_path / "eval",
                         "--no-progress", "eval.lpips_net=alex")
    assert code == 1
    assert "no frame was scored" in err
    assert "2 scenes: every target frame is a context frame" in err
    assert "eval.target_views" in err


def test_eval_of_an_index_of_unknown_scenes_warns_once_and_fails(capsys, caplog, tmp_path, trained_run):
    index = tmp_path / "other.json"
    index.write_text(json.dumps({f"other_{i}": {"context": [0, 5], "target": [2, 3]} for i in range(300)}))
    with caplog.at_level(logging.WARNING):
        code, _, err = run(capsys, "eval", trained_run, "--index", index, "--out", tmp_path / "eval",
                           "--no-progress")
    assert code == 1
    assert "300 index entries name scenes that are not in the dataset's 'test' split" in err
    about_scenes = [r for r in caplog.records if "other_" in r.getMessage()]
    assert len(about_scenes) == 1, [r.getMessage() for r in about_scenes[:5]]
    assert "300 of the 300 entries" in about_scenes[0].getMessage()


# -- item 6: plugins listing; validate says which weights a recipe needs -------------------------


@pytest.mark.parametrize("argv", [("plugins", "list", "samplers"), ("plugins", "sampler"), ("plugins", "samplers")])
def test_plugins_kind_filter_in_every_spelling(capsys, argv):
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert "samplers (scenetok.samplers)" in out and "flow" in out
    assert "decoders" not in out


def test_plugins_pattern_prints_only_kinds_with_a_match(capsys):
    code, out, _ = run(capsys, "plugins", "--pattern", "*vae*")
    assert code == 0
    assert "vavae" in out and "image_compressors" in out
    assert "(none installed)" not in out and "decoders" not in out
    code, out, _ = run(capsys, "plugins", "--pattern", "nothing-like-this")
    assert "no installed component matches 'nothing-like-this'" in out


def test_validate_warns_about_missing_weights(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("SCENETOK_WEIGHTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # the recipe's relative weights/ path does not exist here
    code, out, _ = run(capsys, "validate", "re10k/scenetok")
    assert code == 0
    assert "warning: weights image_compressor.checkpoint (image_compressor vavae) missing" in out
    assert "vavae-imagenet256-f16d32-dinov2.pt" in out
    code, out, err = run(capsys, "validate", "re10k/scenetok", "--weights")
    assert code == 1 and "1 required weights file(s) are missing" in err
    # Present weights are found and reported (an empty file is enough: nothing is loaded).
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "vavae-imagenet256-f16d32-dinov2.pt").write_bytes(b"")
    monkeypatch.setenv("SCENETOK_WEIGHTS_DIR", str(tmp_path / "w"))
    code, out, _ = run(capsys, "validate", "re10k/scenetok", "--weights", "image_compressor.checkpoint=")
    assert code == 0, out
    assert "found:" in out and "vavae-imagenet256" in out


def test_weights_hints_name_real_recipe_keys(monkeypatch, tmp_path):
    from scenetok.eval.metrics import LPIPSMetric
    from scenetok.weights import MissingWeightsError, resolve_weights

    monkeypatch.delenv("SCENETOK_WEIGHTS_DIR", raising=False)
    with pytest.raises(MissingWeightsError) as error:
        resolve_weights("", default_name="x.pt", component="vavae", source="somewhere")
    assert "`image_compressor.checkpoint`" in str(error.value)
    assert "vavae.checkpoint" not in str(error.value)
    assert "`image_compressor.random_init: true`" in str(error.value)
    metric = LPIPSMetric("alex", backbone_weights=tmp_path / "none.pth")
    assert "eval.lpips_weights" in metric.unavailable_reason
    assert "backbone_weights" not in metric.unavailable_reason


# -- item 5: periodic log lines, bars only on a terminal, loss.png terms, TensorBoard ------------


def test_train_logs_periodic_lines_without_a_bar_when_not_on_a_terminal(capsys, caplog, tmp_path):
    with caplog.at_level(logging.INFO, logger="scenetok.train.loop"):
        code, _, err = run(capsys, "train", TINY, "--run", tmp_path / "run", "train.steps=4", "train.log_every=2",
                           "train.checkpoint_every=4")
    assert code == 0
    # pytest's stderr is not a terminal: no tqdm bar even without --no-progress.
    assert "step/s" not in err and "it/s" not in err and "train:" not in err
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "4/4"]
    for line in lines:
        for part in ("loss ", "mse ", "kl ", "lr ", "steps/s", "ETA "):
            assert part in line, line


def test_progress_line_eta_from_steps_or_budget():
    from scenetok.train.loop import progress_line

    metrics = {"loss": 0.5, "mse": 0.4, "kl": 0.1, "lr": 1e-3, "steps_per_s": 2.0}
    assert progress_line(10, 130, metrics, elapsed=5.0, deadline=None).endswith("ETA 1:00")
    # A minutes budget that ends first wins.
    assert progress_line(10, 130, metrics, elapsed=5.0, deadline=100.0, now=70.0).endswith("ETA 0:30")
    assert progress_line(10, None, metrics, elapsed=5.0, deadline=None).endswith("ETA ?")


def test_loss_png_plots_the_loss_terms_not_the_kl_weight(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from scenetok.render_io import loss_curve_png

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s, "mse": 0.9 / s, "kl": 0.1, "lr": 1e-3,
                                           "kl_weight": 1e-6}) + "\n" for s in range(1, 5)))
    labels = []
    original = Figure.savefig

    def spy(self, *args, **kwargs):
        labels.extend(axis.get_ylabel() for axis in self.axes)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    loss_curve_png(metrics, tmp_path / "loss.png")
    assert labels == ["loss", "mse", "kl", "lr"]


def test_tensorboard_logger_writes_events_or_says_what_to_install(tmp_path):
    from scenetok import tensorboard_logger
    from scenetok.recipe import RecipeError, load_recipe

    overrides = ["train.steps=4", "train.log_every=1", "train.validate_every=2", "train.loggers=[tensorboard]"]
    if not tensorboard_logger.available():
        with pytest.raises(RecipeError, match=r"train.loggers: .*pip install 'scenetok\[tensorboard\]'"):
            load_recipe(TINY, overrides)
        return
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from scenetok.train.loop import train_recipe

    run_dir = tmp_path / "run"
    train_recipe(TINY, overrides, run_dir=run_dir, progress=False)
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/mse", "train/kl", "train/lr", "train/steps_per_s"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    logged = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(logged, rel=1e-6)
    assert {"validation", "loss_curves"} <= set(tags["images"])
    assert [e.step for e in events.Images("validation")] == [2, 4]


def test_unknown_logger_is_a_recipe_error():
    from scenetok.recipe import RecipeError, load_recipe

    with pytest.raises(RecipeError, match="train.loggers: unknown logger"):
        load_recipe(TINY, ["train.loggers=[tensorbord]"])


# -- item 7: run.json, `scenetok runs`, render sizes, and the smaller items ----------------------


def test_run_json_records_how_the_run_was_made(trained_run):
    record = json.loads((trained_run / "run.json").read_text())
    assert record["status"] == "finished" and record["step"] == 2
    session = record["sessions"][-1]
    assert session["overrides"] == ["train.steps=2"]
    assert session["recipe"].endswith("tiny.yaml")
    assert session["command"] and session["started"] and session["ended"]
    assert session["versions"]["scenetok"] and session["versions"]["torch"]
    assert "scenetok-plugin-dl3dv" in session["versions"]  # plugin distributions too
    git = session["git"]
    assert git is None or len(git["commit"]) == 40


def test_run_json_records_a_failed_session(tmp_path, monkeypatch):
    from scenetok.train import loop

    def boom(self):
        raise RuntimeError("disk full")

    monkeypatch.setattr(loop.Trainer, "fit", boom)
    with pytest.raises(RuntimeError):
        loop.train_recipe(TINY, ["train.steps=1"], run_dir=tmp_path / "run", progress=False)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "failed: RuntimeError: disk full"


def test_runs_lists_step_status_and_best_metric(capsys, tmp_path, trained_run):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / "a")
    (runs / "a" / "eval").mkdir(exist_ok=True)
    (runs / "a" / "eval" / "eval.json").write_text(json.dumps({"methods": {"model": {"mean": {"psnr": 21.5}}}}))
    (runs / "a" / "eval_other").mkdir()
    (runs / "a" / "eval_other" / "eval.json").write_text(json.dumps({"methods": {"model": {"mean": {"psnr": 19.0}}}}))
    (runs / "group" / "b").mkdir(parents=True)
    (runs / "group" / "b" / "recipe.yaml").write_text("seed: 0\n")
    (runs / "not_a_run").mkdir()
    code, out, _ = run(capsys, "runs", runs)
    assert code == 0
    lines = out.splitlines()
    a = next(line for line in lines if line.startswith(str(runs / "a")))
    assert a.split()[1:3] == ["2", "finished"] and "PSNR 21.50 (eval)" in a
    assert any(line.startswith(str(runs / "group" / "b")) and "empty" in line for line in lines)
    assert "not_a_run" not in out
    code, out, _ = run(capsys, "runs", runs, "--json")
    assert {Path(r["run"]).name for r in json.loads(out)} == {"a", "b"}


def test_render_size_and_upscale(capsys, tmp_path, trained_run):
    from PIL import Image

    code, _, _ = run(capsys, "render", trained_run, "--out", tmp_path / "up", "--upscale", "3", "--frames", "2",
                     "--no-progress")
    assert code == 0
    assert Image.open(tmp_path / "up" / "frames" / "frame_0000.png").size == (48, 48)
    code, _, _ = run(capsys, "render", trained_run, "--out", tmp_path / "sized", "--size", "40", "24",
                     "--frames", "2", "--no-progress")
    assert code == 0
    assert Image.open(tmp_path / "sized" / "frames" / "frame_0000.png").size == (24, 40)  # (W, H)


def test_eval_of_a_missing_run_folder_says_so(capsys, tmp_path):
    code, _, err = run(capsys, "eval", tmp_path / "nope")
    assert code == 2
    assert f"no such run or checkpoint folder: {tmp_path / 'nope'}" in err


def test_swap_notes_are_reported_once(capsys, caplog):
    with caplog.at_level(logging.INFO):
        code, out, err = run(capsys, "validate", TINY, "sampler.name=ddpm")
    assert code == 0
    text = out + err + "\n".join(r.getMessage() for r in caplog.records)
    assert text.count("sampler: 'flow' -> 'ddpm': kept: timestep_mode") == 1


def test_eval_md_shows_the_render_steps_used(tmp_path, trained_run):
    from scenetok.eval.evaluate import evaluate_run

    report = evaluate_run(trained_run, out_dir=tmp_path / "eval", progress=False, allow_random_lpips=True,
                          overrides=["render.steps=3"])
    assert report.data["metadata"]["render"]["steps"] == 3
    assert "'steps': 3" in (tmp_path / "eval" / "eval.md").read_text()


# -- item 3: errors blame the right file and key ---------------------------------------------------


def test_command_line_override_is_blamed_on_the_command_line(capsys):
    code, _, err = run(capsys, "validate", "quickstart", "train.decay=linear")
    assert code == 2
    assert "<command line>: train.decay: train.decay must be constant" in err
    assert "quickstart.yaml" not in err


def test_a_child_recipes_key_is_blamed_on_the_child(capsys, tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {ROOT / 'scenetok' / 'recipes' / 'quickstart.yaml'}\ntoken_compressor: {{heads: 5}}\n")
    code, _, err = run(capsys, "validate", child)
    assert code == 2
    assert f"{child}: token_compressor.heads: width (128) / heads (5)" in err


def test_image_size_string_gets_a_clear_message(capsys):
    code, _, err = run(capsys, "validate", "quickstart", "dataset.image_size=abc")
    assert code == 2
    assert "dataset.image_size: image_size must be an int or [height, width], got the string 'abc'" in err
    assert "invalid literal" not in err


def test_patch_size_error_names_its_component(capsys):
    code, _, err = run(capsys, "validate", "quickstart", "dataset.image_size=4")
    assert code == 2
    assert "token_compressor 'perceiver'" in err and "token_compressor.patch_size 2" in err


def test_an_image_size_problem_is_reported_once(capsys):
    code, _, err = run(capsys, "validate", "quickstart", "dataset.image_size=[2,2]")
    assert code == 2
    assert err.count("is not divisible by") == 1
    assert "target_image_compressor" not in err


# -- item 2: evaluating a run on another dataset; --split vs dataset.split -------------------------


def test_replacing_the_dataset_keeps_the_trained_image_size(tmp_path, trained_run):
    from scenetok.model import SceneTok

    # The run was trained at 16 px; `transforms` would default to 64 px once the node is replaced.
    model = SceneTok.from_pretrained(trained_run, ["dataset.name=transforms", f"dataset.root={tmp_path}"])
    assert model.image_size == (16, 16)
    assert list(model.recipe["dataset"].config.image_size) == [16, 16]


def test_a_different_image_size_names_the_key(trained_run):
    from scenetok.model import SceneTok
    from scenetok.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"dataset.image_size: \[32, 32\] differs from the trained model's \[16, 16\]"):
        SceneTok.from_pretrained(trained_run, ["dataset.image_size=32"])


def test_preview_split_conflict_is_an_error(capsys, tmp_path):
    code, _, err = run(capsys, "data", "preview", TINY, "--out", tmp_path, "--split", "test", "dataset.split=train")
    assert code == 2
    assert "--split test conflicts with dataset.split=train" in err


def test_preview_uses_a_dataset_split_override(capsys, tmp_path, monkeypatch):
    seen = {}

    def build(recipe, split=None, **changes):
        seen["split"] = split
        raise SystemExit(0)

    import scenetok.data.dataset as dataset_module

    monkeypatch.setattr(dataset_module, "build_dataset", build)
    with pytest.raises(SystemExit):
        main(["data", "preview", TINY, "--out", str(tmp_path), "dataset.split=validation"])
    assert seen["split"] == "validation"


# -- item 4: a run made with a plugin that is not installed any more -------------------------------


def test_uninstalled_plugin_of_a_run_names_its_distribution(tmp_path, trained_run):
    from scenetok.checkpoint import load_checkpoint, save_checkpoint
    from scenetok.model import SceneTok
    from scenetok.recipe import RecipeError

    checkpoint = load_checkpoint(trained_run)
    recipe = json.loads(json.dumps(checkpoint.recipe))
    recipe["sampler"] = {"name": "cosflow"}
    recipe["provenance"]["sampler"] = {"name": "cosflow", "distribution": "scenetok-plugin-cosflow",
                                       "version": "0.0.1", "entry_point": "cosflow:Sampler"}
    other = tmp_path / "run"
    save_checkpoint(other, checkpoint.step, checkpoint.tensors, checkpoint.state, recipe)
    with pytest.raises(RecipeError) as error:
        SceneTok.from_pretrained(other)
    message = str(error.value)
    assert "from scenetok-plugin-cosflow==0.0.1" in message
    assert "pip install 'scenetok-plugin-cosflow==0.0.1'" in message
    assert f"step_{checkpoint.step:06d}/recipe.json" in message


# -- item 7 (smaller): help text on every option; missing data names dataset.root and the README ---


def _all_parsers(parser, path=()):
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, (*path, name))


def test_every_option_of_every_command_has_help_text():
    from scenetok.cli import build_parser

    missing = []
    commands = set()
    for path, parser in _all_parsers(build_parser()):
        commands.add(" ".join(path))
        for action in parser._actions:
            if action.help is None and action.dest != "help" and action.option_strings:
                missing.append(f"scenetok {' '.join(path)} {action.option_strings[0]}")
            if action.help is None and not action.option_strings and not action.choices:
                missing.append(f"scenetok {' '.join(path)} {action.dest}")
    assert {"model summary", "data preview", "data index", "data cache", "dl3dv index", "runs"} <= commands
    assert not missing, missing


def test_missing_dataset_folder_names_the_key_and_the_plugin_readme(capsys, tmp_path):
    code, _, err = run(capsys, "data", "preview", "dl3dv", "--out", tmp_path, f"dataset.root={tmp_path / 'nope'}")
    assert code == 2
    assert f"dataset.root: {tmp_path / 'nope'} is not a folder" in err
    assert "scenetok-plugin-dl3dv README" in err


def test_first_preview_prints_no_matplotlib_info(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, MPLCONFIGDIR=str(tmp_path / "mpl"), HF_HUB_OFFLINE="1")  # a first run: font cache built
    result = subprocess.run([sys.executable, "-m", "scenetok.cli", "data", "preview", TINY, "--out", str(tmp_path),
                             "dataset.num_scenes=2"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "matplotlib" not in result.stderr + result.stdout
