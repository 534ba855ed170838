"""`scenetok compare`: tables and plots from run folders (data only; no component imported)."""

import csv
import json
import statistics

import pytest
import yaml
from PIL import Image

from scenetok.cli import main
from scenetok.compare import compare_runs

BASE = {
    "recipe_version": 1, "seed": 0,
    "image_compressor": {"name": "pixel", "patch_size": 4},
    "token_compressor": {"name": "perceiver", "num_tokens": 64},
    "decoder": {"name": "dit", "depth": 3},
    "sampler": {"name": "flow", "prediction": "sample", "steps": 1},
    "dataset": {"name": "rooms"},
    "train": {"steps": 100, "minutes": 0.0},
    "provenance": {"sampler": {"name": "flow", "distribution": "scenetok", "version": "0.1.0"}},
}


def make_run(run_dir, recipe, psnr, ssim, lpips=None, steps=100, ablation=None, variant=None, seed=0,
             nearest=20.0, loss=1.0, seconds=60.0):
    run_dir.mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "seed": seed}))
    methods = {"model": {"mean": {"psnr": psnr, "ssim": ssim, "lpips": lpips}},
               "nearest_context": {"mean": {"psnr": nearest, "ssim": 0.5, "lpips": None}},
               "mean_context": {"mean": {"psnr": nearest - 1, "ssim": 0.4, "lpips": None}}}
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "eval.json").write_text(json.dumps({"metadata": {"step": steps}, "methods": methods}))
    (run_dir / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "time": s * 0.5, "loss": loss / s}) + "\n" for s in range(1, steps + 1, 10)))
    if ablation:
        (run_dir / "variant.json").write_text(json.dumps({
            "ablation": ablation, "variant": variant, "seed": seed, "parameters": 1000, "base_recipe": BASE}))
        (run_dir / "status.json").write_text(json.dumps({"state": "done", "train_seconds": seconds,
                                                         "eval_seconds": 6.0}))
    return run_dir


def with_sampler(name, **fields):
    recipe = json.loads(json.dumps(BASE))
    recipe["sampler"] = {"name": name, **fields}
    return recipe


def test_table_and_plots_on_synthetic_results(tmp_path):
    runs = tmp_path / "abl"
    psnr = {"flow": [23.0, 23.4], "ddpm": [21.0, 22.0]}
    for variant, recipe in (("flow", BASE), ("ddpm", with_sampler("ddpm", prediction="v", steps=1))):
        for seed, value in enumerate(psnr[variant]):
            make_run(runs / variant / f"seed_{seed}", recipe, value, 0.6 if variant == "flow" else 0.7,
                     ablation="a", variant=variant, seed=seed, loss=1.0 if variant == "flow" else 2.0)
    comparison = compare_runs(sorted((runs / v / s) for v in psnr for s in ("seed_0", "seed_1")), tmp_path / "out")
    rows = {row["variant"]: row for row in comparison.data["rows"]}
    assert list(rows) == ["ddpm", "flow"]  # sorted input order
    flow = rows["flow"]["metrics"]["psnr"]
    assert flow["mean"] == pytest.approx(23.2) and flow["std"] == pytest.approx(statistics.stdev([23.0, 23.4]))
    assert flow["n"] == 2 and rows["flow"]["seeds"] == [0, 1]
    assert rows["flow"]["best"] == ["psnr"] and rows["ddpm"]["best"] == ["ssim"]  # LPIPS unavailable: no best
    assert rows["ddpm"]["changes"] == "sampler: flow -> ddpm (prediction: sample -> v)"
    assert rows["flow"]["changes"] == "(base)"
    assert rows["flow"]["wall_minutes"] == pytest.approx(66.0 / 60)

    md = (tmp_path / "out" / "results.md").read_text()
    assert "| flow | (base) | 1,000 | 100 | 1.1 | 2 | **23.20 ± 0.28** | 0.600 ± 0.000 |" in md
    assert "| ddpm | sampler: flow -> ddpm (prediction: sample -> v) | 1,000 | 100 | 1.1 | 2 | 21.50 ± 0.71 | " \
           "**0.700 ± 0.000** |" in md
    assert md.count("baseline: copy the nearest context view") == 1 and "| 20.00 |" in md
    assert "LPIPS: unavailable in every run" in md

    with (tmp_path / "out" / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [(r["kind"], r["variant"]) for r in table] == [
        ("variant", "ddpm"), ("variant", "flow"), ("baseline", "nearest_context"), ("baseline", "mean_context")]
    assert float(table[1]["psnr_mean"]) == pytest.approx(23.2) and table[1]["best"] == "psnr"
    assert json.loads((tmp_path / "out" / "results.json").read_text())["rows"][1]["variant"] == "flow"
    for name in ("metrics.png", "loss.png"):
        with Image.open(tmp_path / "out" / name) as image:
            assert image.format == "PNG" and image.size[0] > 300


def test_compare_runs_of_an_uninstalled_plugin(tmp_path, capsys):
    plugin = with_sampler("warpflow", power=2.0)  # no such component is installed
    plugin["provenance"] = {"sampler": {"name": "warpflow", "distribution": "scenetok-plugin-warp", "version": "1"}}
    make_run(tmp_path / "flow", BASE, 22.0, 0.6)
    make_run(tmp_path / "warp", plugin, 22.5, 0.61)
    assert main(["compare", str(tmp_path / "flow"), str(tmp_path / "warp"), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "| warp | sampler: flow -> warpflow | ? | 100 | 0.8 | 1 | **22.50** | **0.610** |" in out
    assert "the recipe of the first run" in out


def test_plain_runs_of_one_recipe_with_different_seeds_are_one_row(tmp_path):
    make_run(tmp_path / "s0", BASE, 22.0, 0.6, seed=0)
    make_run(tmp_path / "s1", BASE, 23.0, 0.6, seed=1)
    comparison = compare_runs([tmp_path / "s0", tmp_path / "s1"], tmp_path / "cmp")
    (row,) = comparison.data["rows"]
    assert row["variant"] == "s0" and row["metrics"]["psnr"]["mean"] == pytest.approx(22.5)


def test_compare_bad_input_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty"), "--out", str(tmp_path / "cmp")]) == 2
    assert f"{tmp_path / 'empty'}: not a run directory (no recipe.yaml)" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()
