"""``scenetok bench``: every section is written, ratios are computed from the measurements, the
GPU suite's recipes are valid, and the measuring helpers measure."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from scenetok import bench
from scenetok.cli import main
from scenetok.recipe import RecipeError, load_recipe
from scenetok.train.loop import adamw_implementation, train_recipe

TINY = Path(__file__).parent / "recipes" / "tiny.yaml"


def test_quick_cpu_bench_writes_every_section_with_computed_ratios(tmp_path, capsys):
    run = tmp_path / "run"
    train_recipe(TINY, ["train.steps=2"], run_dir=run, progress=False)
    out = tmp_path / "results"
    assert main(["bench", "--quick", "--out", str(out), "--run", str(run)]) == 0
    assert "bench_cpu_quick.json" in capsys.readouterr().out
    report = json.loads((out / "bench_cpu_quick.json").read_text())
    markdown = (out / "bench_cpu_quick.md").read_text()

    assert report["suite"] == "cpu" and report["quick"] is True
    assert report["machine"]["date"] and report["machine"]["torch"] == torch.__version__
    for name in bench.SECTIONS:
        if name == "compile":  # the quick suite skips torch.compile (a minute for its first step)
            assert "compile_steps = 0" in report[name]["skipped"]
        else:
            assert "skipped" not in report[name], name
    for heading in ("Matmul peak", "Context scaling", "Training throughput", "Breakdown of one step",
                    "Training-step changes", "Sampling steps and solver", "Peak memory", "Findings"):
        assert f"{heading}" in markdown
    assert bench.check_finite(report) == []

    # Ratios are derived from the measured times, not written down.
    rows = report["context_scaling"]["rows"]
    assert [r["context_views"] for r in rows] == [2, 4]
    for row in rows:
        first = rows[0]["render_ms_per_target_view"]
        assert row["render_ratio"] == pytest.approx(row["render_ms_per_target_view"] / first)
        assert row["encode_ratio"] == pytest.approx(row["encode_ms"] / rows[0]["encode_ms"])
    claims = report["context_scaling"]["claims"]
    assert claims["render_ratio_4_vs_2"] == pytest.approx(rows[1]["render_ratio"])
    assert claims["render_flat (<= 1.1)"] == (rows[1]["render_ratio"] <= 1.1)

    training = report["training"]
    assert set(training["models"]) == {"quickstart", "S"}
    peak = report["matmul_peak"]["flops_per_s"]
    for model in training["models"].values():
        assert model["flops_per_step"] > 0 and model["steps_per_s"] > 0
        step_s = model["step_ms"] / 1e3
        assert model["steps_per_s"] == pytest.approx(1 / step_s)
        assert model["mfu"] == pytest.approx(model["flops_per_step"] / step_s / peak)
        parts = sum(v for k, v in model["breakdown_ms"].items() if k != "total")
        assert parts == pytest.approx(model["breakdown_ms"]["total"])
        assert model["breakdown_ms"]["encode"] > 0 and model["breakdown_ms"]["decoder_forward"] > 0
        assert model["breakdown_ms"]["backward"] > 0 and model["breakdown_ms"]["optimizer"] > 0
    # The S preset really is bigger than the quickstart model.
    assert training["models"]["S"]["parameters"] > training["models"]["quickstart"]["parameters"]

    for change in report["changes"]["changes"].values():
        assert change["step_speedup"] == pytest.approx(change["before_ms"]["total"] / change["after_ms"]["total"])

    sampling = report["sampling"]
    assert sampling["trained_step"] == 2
    assert {(r["solver"], r["steps"]) for r in sampling["rows"]} == {
        ("euler", 1), ("euler", 2), ("heun", 1), ("heun", 2)}
    first = sampling["rows"][0]
    for row in sampling["rows"]:
        assert 0 < row["psnr"] < 100 and -1 <= row["ssim"] <= 1
        assert row["psnr_delta_db_vs_first"] == pytest.approx(row["psnr"] - first["psnr"])
    # With two steps Euler and Heun are different solvers on the same inputs (one Heun step is Euler).
    by = {(r["solver"], r["steps"]): r for r in sampling["rows"]}
    assert by[("euler", 2)]["psnr"] != by[("heun", 2)]["psnr"]

    memory = report["memory"]["rows"]
    assert [r["image_size"] for r in memory if r["varies"] == "image_size"] == [16, 32]
    assert [r["num_tokens"] for r in memory if r["varies"] == "num_tokens"] == [8, 16]
    small, large = (r for r in memory if r["varies"] == "image_size")
    assert large["train_step_mb"] > small["train_step_mb"] > 0  # 4x the pixels needs more memory
    assert large["train_ratio_vs_first"] == pytest.approx(large["train_step_mb"] / small["train_step_mb"])


def test_compile_section_times_eager_against_compiled_steps(tmp_path, monkeypatch):
    # torch.compile stays out of the tests (its first call takes ~75 s): Module.compile is replaced
    # by a recorder, which checks that the section asks for compilation and does its arithmetic.
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    sizes = bench.suite_sizes("cpu", quick=True)
    sizes.compile_steps = 2
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "user-cache"))
    report = bench.run_bench("cpu", out=tmp_path, quick=True, sections=["compile"], sizes=sizes)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "user-cache")  # restored
    row = report["compile"]
    assert compiled and row["repeats"] == 2 and row["model"] == "quickstart"
    assert row["step_speedup"] == pytest.approx(row["eager_ms"] / row["compiled_ms"])
    saved_s = (row["eager_ms"] - row["compiled_ms"]) / 1e3
    if saved_s > 0:
        assert row["break_even_steps"] == pytest.approx(row["compile_s"] / saved_s)
        assert row["pays_back_in_quickstart"] == (row["break_even_steps"] < row["quickstart_steps"])
    else:
        assert row["break_even_steps"] is None and row["pays_back_in_quickstart"] is False
    assert "torch.compile" in (tmp_path / "bench_cpu_quick.md").read_text()


def test_sampling_is_skipped_with_a_note_without_a_run(tmp_path):
    report = bench.run_bench("cpu", out=tmp_path, quick=True, sections=["sampling"])
    assert "--run" in report["sampling"]["skipped"]
    assert "--run" in (tmp_path / "bench_cpu_quick.md").read_text()
    assert report["memory"] == {"skipped": "not selected"}
    with pytest.raises(ValueError, match="unknown bench section"):
        bench.run_bench("cpu", out=tmp_path, quick=True, sections=["speed"])


@pytest.mark.parametrize("quick", [True, False])
def test_gpu_suite_recipes_are_valid_l_models_at_256(quick):
    """The GPU suite cannot run here; its recipes are checked instead (composed, validated and built
    on the meta device by load_recipe), for every model and memory configuration it would run."""
    sizes = bench.suite_sizes("gpu", quick)
    assert sizes.dtype == "bfloat16" and sizes.synthetic_data
    for name, overrides in sizes.models.items():
        recipe = load_recipe(sizes.base, [*sizes.base_overrides, *overrides, f"train.batch_size={sizes.train_batch}"])
        assert recipe["dataset"].config.image_size == [256, 256]
        assert recipe["decoder"].config.width == 1024 and recipe["token_compressor"].config.width == 768
        assert recipe.sections["train"].precision == "bf16"
        assert recipe["decoder"].config.depth == (1 if quick else 24)
    for resolution in sizes.memory_resolutions:
        load_recipe(sizes.base, [*sizes.base_overrides, f"dataset.image_size={resolution}"])
    for tokens in sizes.memory_tokens:
        load_recipe(sizes.base, [*sizes.base_overrides, f"token_compressor.num_tokens={tokens}"])


def test_gpu_suite_without_cuda_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "--suite", "gpu", "--quick", "--out", str(tmp_path)]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    with pytest.raises(SystemExit):
        main(["bench", "--suite", "tpu"])


def test_peak_memory_counts_a_temporary_allocation():
    def allocate() -> None:
        block = torch.empty(8 * 2**20, dtype=torch.uint8)
        block.fill_(1)
        del block

    peak = bench.peak_memory_bytes(allocate, torch.device("cpu"))
    assert 8 * 2**20 <= peak < 9 * 2**20


def test_timed_is_the_median_of_the_calls():
    calls = []
    seconds = bench.timed(lambda: calls.append(1), repeats=3, device=torch.device("cpu"), warmup=2)
    assert len(calls) == 5 and 0 <= seconds < 1


def test_adamw_implementation_choice_and_validation():
    cpu = torch.device("cpu")
    assert adamw_implementation("auto", cpu) == {"fused": True}
    assert adamw_implementation("forloop", cpu) == {"foreach": False}
    recipe = load_recipe(TINY, ["train.adamw_impl=forloop"])
    assert recipe.sections["train"].adamw_impl == "forloop"
    with pytest.raises(RecipeError, match="adamw_impl"):
        load_recipe(TINY, ["train.adamw_impl=sgd"])


def test_fused_and_forloop_adamw_train_alike(tmp_path):
    """The fused default changes speed, not the optimisation: a few steps land on the same loss."""
    fused = train_recipe(TINY, ["train.steps=3"], run_dir=tmp_path / "fused", progress=False)
    loop = train_recipe(TINY, ["train.steps=3", "train.adamw_impl=forloop"], run_dir=tmp_path / "loop",
                        progress=False)
    assert math.isclose(fused.metrics["loss"], loop.metrics["loss"], rel_tol=1e-4)


def test_bench_runs_without_the_test_extras():
    """`scenetok bench` is a user command: it must not need pytest (a test-only dependency)."""
    import subprocess
    import sys

    code = "import sys, scenetok.bench; assert 'pytest' not in sys.modules, 'bench imports pytest'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
