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
