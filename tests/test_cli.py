"""The `scenetok` command line: help everywhere, plugins, validate, model summary, data tools."""

import json
from pathlib import Path

import pytest

from scenetok.cli import build_parser, main

ROOT = Path(__file__).parents[1]
QUICKSTART = str(ROOT / "recipes" / "quickstart.yaml")


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_command_has_help(capsys):
    parser = build_parser()
    commands = [["plugins"], ["validate"], ["model", "summary"], ["train"], ["eval"], ["render"],
                ["quickstart"], ["data", "preview"], ["data", "index"], ["data", "convert"], ["data", "export"], ["data", "cache"]]
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(command + ["--help"])
        assert exit_info.value.code == 0
        assert "usage: scenetok " + " ".join(command) in capsys.readouterr().out


def test_plugins_json_lists_all_six_groups(capsys):
    code, out, _ = run(capsys, "plugins", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data["components"]) == {"image_compressor", "token_compressor", "decoder", "sampler", "dataset",
                                      "scene_generator"}
    names = {c["name"] for group in data["components"].values() for c in group}
    assert {"pixel", "vavae", "sdvae", "wan22", "perceiver", "dit", "flow", "ddpm", "rooms", "re10k",
            "transforms"} <= names
    assert [c["name"] for c in data["components"]["scene_generator"]] == ["dit"]
    assert data["python"]


def test_plugins_check_and_show(capsys):
    code, out, _ = run(capsys, "plugins", "--check", "--json")
    assert code == 0, out
    checks = [c["check"] for group in json.loads(out)["components"].values() for c in group]
    assert checks and all(check == "ok" for check in checks)
    code, out, _ = run(capsys, "plugins", "show", "decoder", "dit")
    assert code == 0
    assert "camera_patch_size: int = 16" in out and "presets:" in out and "L: {" in out


def test_validate_ok_and_did_you_mean(capsys):
    code, out, _ = run(capsys, "validate", QUICKSTART)
    assert code == 0 and "OK" in out
    code, _, err = run(capsys, "validate", QUICKSTART, "decoder.name=ditt")
    assert code == 2
    assert "did you mean 'dit'" in err.lower()


def test_validate_reports_two_wrong_fields_with_file_and_key(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {QUICKSTART}\ndecoder: {{depth: deep, widht: 3}}\n")
    code, _, err = run(capsys, "validate", str(bad))
    assert code == 2
    assert f"{bad.resolve()}: decoder.depth" in err
    assert f"{bad.resolve()}: decoder.widht" in err


def test_overrides_after_options_and_name_swap_report(capsys):
    code, out, _ = run(capsys, "validate", QUICKSTART, "--print", "sampler.name=ddpm")
    assert code == 0
    assert out.count("note: sampler: 'flow' -> 'ddpm': kept: timesteps, shift, timestep_mode; "
                     "dropped: prediction ('sample' not valid)") == 1
    assert "name: ddpm" in out


def test_model_summary_json(capsys):
    code, out, _ = run(capsys, "model", "summary", QUICKSTART, "--json")
    assert code == 0
    info = json.loads(out)
    assert info["floats_per_scene"] == 64 * 32
    assert info["components"]["decoder"]["parameters"] > 0


def test_data_preview_and_index(capsys, tmp_path):
    code, out, _ = run(capsys, "data", "preview", QUICKSTART, "--out", str(tmp_path / "preview"))
    assert code == 0
    pngs = list((tmp_path / "preview").glob("*.png"))
    assert pngs and pngs[0].stat().st_size > 1000
    code, out, _ = run(capsys, "data", "index", QUICKSTART, "dataset.num_scenes=3", "--out", str(tmp_path / "i.json"))
    assert code == 0
    index = json.loads((tmp_path / "i.json").read_text())
    assert len(index) == 3 and all({"context", "target"} <= set(v) for v in index.values())


def test_data_export_writes_a_transforms_dataset_eval_can_read(capsys, tmp_path):
    code, out, _ = run(capsys, "data", "export", QUICKSTART, "dataset.num_scenes=2", "dataset.frames_per_scene=6",
                       "--out", str(tmp_path / "x"), "--scale", "4", "--offset", "1", "0", "-2", "--no-progress")
    assert code == 0 and "dataset.name=transforms" in out
    scenes = sorted(p.name for p in (tmp_path / "x" / "test").iterdir())
    meta = json.loads((tmp_path / "x" / "test" / scenes[0] / "transforms.json").read_text())
    assert len(scenes) == 2 and len(meta["frames"]) == 6 and meta["scale"] == 4.0
    code, out, _ = run(capsys, "data", "preview", QUICKSTART, "dataset.name=transforms",
                       f"dataset.root={tmp_path / 'x'}", "--split", "test", "--out", str(tmp_path / "preview"))
    assert code == 0


def test_missing_recipe_is_a_clear_error(capsys):
    code, _, err = run(capsys, "validate", "no/such/recipe.yaml")
    assert code == 2 and "recipe file not found" in err
