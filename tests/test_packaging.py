"""Recipes ship with the package and are addressable by name; `plugins show` covers every section;
recipes stored by scenetok 0.1 still load; a built wheel runs the README's commands."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from scenetok.cli import main
from scenetok.recipe import RecipeError, find_recipe, list_recipes, load_recipe_dict, upgrade_stored_recipe

ROOT = Path(__file__).parents[1]


def test_shipped_recipes_of_core_and_plugins_are_listed_and_found_by_name(capsys):
    shipped = list_recipes()
    assert shipped["quickstart"][1] == "scenetok" and shipped["re10k/scenetok"][1] == "scenetok"
    assert shipped["dl3dv"][1] == "scenetok-plugin-dl3dv"
    assert find_recipe("quickstart") == shipped["quickstart"][0]
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "dl3dv_tiny" in out
    assert main(["validate", "quickstart", "train.steps=5"]) == 0
    with pytest.raises(RecipeError, match="Did you mean 'quickstart'"):
        find_recipe("quikstart")


def test_the_top_level_recipes_folder_is_the_shipped_one():
    assert (ROOT / "recipes").resolve() == (ROOT / "scenetok" / "recipes").resolve()


def test_plugins_show_covers_core_sections_and_inherited_fields(capsys):
    assert main(["plugins", "show", "render"]) == 0
    out = capsys.readouterr().out
    assert "steps: int = 25" in out and "inference steps" in out and "guidance" in out
    assert main(["plugins", "show", "train"]) == 0
    assert "validate_every" in capsys.readouterr().out
    # `split` is declared on SceneDatasetConfig, which the transforms dataset's Config inherits
    assert main(["plugins", "show", "dataset", "transforms"]) == 0
    out = capsys.readouterr().out
    assert "split: str = 'train'" in out and '``"validation"`` or ``"test"``' in out


def test_a_recipe_stored_by_scenetok_0_1_loads():
    old = {
        "recipe_version": 1,
        "image_compressor": {"name": "pixel", "patch_size": 4},
        "token_compressor": {"name": "perceiver", "preset": "T", "num_tokens": 8, "token_dim": 8,
                             "camera_patch_size": 0},
        "decoder": {"name": "dit", "preset": "T", "window": 4, "camera_patch_size": 0},
        "sampler": {"name": "flow", "steps": 7},
        "dataset": {"name": "rooms", "image_size": 32},
        "eval": {"steps": 0, "strategy": "pyramid", "cfg_scale": 1.0, "deterministic": True},
        "render": {"steps": 0, "window": 0, "context_frames": -1, "cfg_scale": 2.0},
        "provenance": {"sampler": {"name": "flow"}},
    }
    recipe = load_recipe_dict(upgrade_stored_recipe(old), source="old/recipe.json")
    render = recipe.sections["render"]
    assert (render.steps, render.window, render.context_frames, render.guidance) == (7, None, None, 2.0)
    assert "steps" not in old["render"] or old["render"]["steps"] == 0  # the stored data is untouched


@pytest.mark.slow
def test_a_built_wheel_ships_the_recipes_and_runs_the_readme_commands(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True)
    (wheel,) = wheels.glob("scenetok-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "scenetok/recipes/quickstart.yaml" in names and "scenetok/recipes/re10k/scenetok.yaml" in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    # From an empty folder, with the installed wheel first on the path (not this checkout).
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    work = tmp_path / "elsewhere"
    work.mkdir()
    for command, expected in ((["recipes", "--paths"], str(target / "scenetok" / "recipes" / "quickstart.yaml")),
                              (["validate", "quickstart"], "quickstart: OK"),
                              # the README's main job, shortened to two steps
                              (["quickstart", "--out", "qs", "--no-progress", "train.steps=2", "eval.max_scenes=2",
                                "render.frames=4"], "model vs nearest context view")):
        done = subprocess.run([sys.executable, "-m", "scenetok.cli", *command], cwd=work, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout, done.stdout
    assert (work / "qs" / "render" / "render.mp4").is_file()
