"""`scenetok ablate`: grid/labels, all-errors-at-once validation, resume, failures, the CLI."""

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from scenetok.ablate import (
    AblationError,
    InProcessRunner,
    RunFailed,
    is_finished,
    load_ablation,
    read_status,
    run_ablation,
)
from scenetok.cli import main
from scenetok.recipe import list_recipes

ROOT = Path(__file__).resolve().parent.parent
TINY = Path(__file__).parent / "recipes" / "tiny.yaml"
BUDGET = "budget: {train.steps: 2, train.checkpoint_every: 1, eval.max_scenes: 1}\n"


def ablation_file(tmp_path, body, name="tiny-ablation"):
    path = tmp_path / "ablation.yaml"
    path.write_text(f"ablation: {name}\nbase: {TINY}\n{BUDGET}" + textwrap.dedent(body))
    return path


class CountingRunner(InProcessRunner):
    """Runs in process; records which runs were trained; fails the variants it is told to."""

    def __init__(self, fail=(), stop_at=None):
        self.trained, self.fail, self.stop_at = [], set(fail), dict(stop_at or {})

    def train(self, run):
        self.trained.append(run.name)
        if run.variant in self.fail:
            raise RunFailed("boom")
        if run.variant in self.stop_at:  # an interruption: the run stops early with a checkpoint
            from scenetok.train.loop import train_recipe

            train_recipe(run.run_dir / "variant.yaml", [f"train.steps={self.stop_at[run.variant]}"],
                         run_dir=run.run_dir, progress=False)
            return
        super().train(run)


# ----------------------------------------------------------------------------------------------
# planning and validation
# ----------------------------------------------------------------------------------------------


def test_grid_expands_to_the_product_with_readable_labels(tmp_path):
    path = ablation_file(tmp_path, """
        seeds: [0, 5]
        grid:
          sampler.name: [flow, ddpm]
          decoder.depth: [1, 2]
        """)
    ablation = load_ablation(path, tmp_path / "out", count_parameters=False)
    assert [v.label for v in ablation.variants] == [
        "sampler=flow,depth=1", "sampler=flow,depth=2", "sampler=ddpm,depth=1", "sampler=ddpm,depth=2"]
    assert ablation.variants[3].overrides == {"sampler.name": "ddpm", "decoder.depth": 2}
    assert [r.name for r in ablation.runs][:2] == ["sampler=flow,depth=1/seed_0", "sampler=flow,depth=1/seed_5"]
    assert [r.recipe.seed for r in ablation.runs][:2] == [0, 5]
    assert all(r.recipe.sections["train"].steps == 2 for r in ablation.runs)  # the shared budget
    # What each variant changes relative to the base: the swap, and the shared keys it changed.
    assert ablation.variants[0].summary == "(base)"
    # Defaults of the two samplers that differ show up too: only keys set in the recipe carry over.
    assert ablation.variants[3].summary == ("decoder.depth: 1 -> 2; sampler: flow -> ddpm (timesteps: logit_normal "
                                            "-> uniform, solver: euler -> ddim, prediction: flow -> epsilon)")
    assert ablation.variants[3].changes["decoder.depth"] == [1, 2]


def test_labelled_variants_and_seed_count(tmp_path):
    path = ablation_file(tmp_path, """
        seeds: 3
        variants:
          base: {}
          wide: {decoder.width: 64, token_compressor.width: 64}
        """)
    ablation = load_ablation(path, tmp_path / "out", seeds=2)  # --seeds overrides the file
    assert [v.label for v in ablation.variants] == ["base", "wide"]
    assert ablation.seeds == [0, 1]
    assert ablation.variants[1].parameters > ablation.variants[0].parameters > 0


def test_every_error_is_reported_at_once_with_file_variant_and_key(tmp_path):
    path = ablation_file(tmp_path, """
        variants:
          base: {}
          typo-name: {sampler.name: ddpmm}
          typo-key: {decoder.widht: 3}
          again: {decoder.depth: 1}
          budget: {train.steps: 9}
        """)
    with pytest.raises(AblationError) as info:
        load_ablation(path, tmp_path / "out")
    errors = info.value.errors
    assert len(errors) == 1, errors  # file-level problems stop before the recipes are built
    assert errors[0] == (f"{path}: variant 'budget': train.steps: set by the shared budget; every variant "
                         "trains and is evaluated with the same budget")
    path.write_text(path.read_text().replace("  budget: {train.steps: 9}\n", ""))
    with pytest.raises(AblationError) as info:
        load_ablation(path, tmp_path / "out")
    errors = info.value.errors
    assert len(errors) == 3, errors
    assert errors[0].startswith(f"{path}: variant 'typo-name': ") and "sampler.name" in errors[0] \
        and "Did you mean 'ddpm'" in errors[0]
    assert errors[1].startswith(f"{path}: variant 'typo-key': ") and "decoder.widht: unknown key" in errors[1]
    assert errors[2] == (f"{path}: variant 'again': resolves to the same recipe as variant 'base' "
                         "(overrides: {'decoder.depth': 1})")


@pytest.mark.parametrize("body, message", [
    ("grid: {sampler.name: []}\n", "grid: expands to 0 variants (sampler.name: empty list)"),
    ("max_variants: 3\ngrid: {sampler.name: [flow, ddpm], decoder.depth: [1, 2]}\n",
     "grid: expands to 4 variants, more than max_variants=3"),
    ("grid: {sampler: [flow]}\n", "grid: key 'sampler' must be dotted"),
    ("variants: {a: {}}\ngrid: {sampler.name: [flow]}\n", "give either a grid or a list of variants"),
    ("variants: {a b: {}}\n", "variants.a b: a label must be"),
    ("variants: {a: {}}\nseeds: 0\n", "seeds: must be >= 1"),
    ("variants: {a: {}}\nbudgett: {}\n", "budgett: unknown key"),
])
def test_bad_ablation_files(tmp_path, body, message):
    with pytest.raises(AblationError) as info:
        load_ablation(ablation_file(tmp_path, body), tmp_path / "out")
    assert any(message in e for e in info.value.errors), info.value.errors


def test_cli_bad_input_exits_2_with_one_line_per_problem_and_writes_nothing(tmp_path, capsys):
    path = ablation_file(tmp_path, "variants: {a: {sampler.name: nope}, b: {decoder.nope: 1}}\n")
    out = tmp_path / "out"
    assert main(["ablate", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert err[0].startswith(f"scenetok ablate: error: {path}: variant 'a': ") and "sampler.name" in err[0]
    assert err[1].startswith(f"scenetok ablate: error: {path}: variant 'b': ") and "decoder.nope" in err[1]
    assert not out.exists()


def test_an_out_dir_of_another_ablation_is_refused_untouched(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "ablation.json").write_text(json.dumps({"ablation": "other", "runs": []}))
    path = ablation_file(tmp_path, "variants: {a: {}}\n")
    assert main(["ablate", str(path), "--out", str(out)]) == 2
    assert "holds runs of ablation 'other', not 'tiny-ablation'" in capsys.readouterr().err
    assert json.loads((out / "ablation.json").read_text()) == {"ablation": "other", "runs": []}
    assert sorted(p.name for p in out.iterdir()) == ["ablation.json"]
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    assert main(["ablate", str(path), "--out", str(stray)]) == 2
    assert "holds files that are not from `scenetok ablate`" in capsys.readouterr().err


def test_dry_run_prints_variants_changes_and_parameters_and_writes_nothing(tmp_path, capsys):
    path = ablation_file(tmp_path, "variants: {flow: {}, ddpm: {sampler.name: ddpm}}\n")
    out = tmp_path / "out"
    assert main(["ablate", str(path), "--out", str(out), "--dry-run", "--seeds", "2"]) == 0
    text = capsys.readouterr().out
    assert "2 variants x 2 seed(s) = 4 runs" in text
    # Unchanged shared keys (timestep_mode carried over) are not listed.
    assert "sampler: flow -> ddpm (timesteps: logit_normal -> uniform, solver: euler -> ddim, " \
        "prediction: flow -> epsilon)" in text
    assert "note: sampler: 'flow' -> 'ddpm': kept: timestep_mode; dropped: none" in text
    assert text.count("trainable params") == 2 and " (base)" in text
    assert f"{out}/ddpm/seed_1  (new)" in text and "-m scenetok.cli train" in text
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------------


def test_resume_skips_finished_runs_and_continues_interrupted_ones(tmp_path):
    path = ablation_file(tmp_path, "variants: {a: {}, b: {decoder.depth: 2}}\n")
    out = tmp_path / "out"
    ablation = load_ablation(path, out)
    first = CountingRunner(stop_at={"b": 1})
    result = run_ablation(ablation, out, runner=first)
    assert first.trained == ["a/seed_0", "b/seed_0"]
    assert read_status(out / "a" / "seed_0")["state"] == "done"
    assert read_status(out / "b" / "seed_0")["state"] == "interrupted"
    assert result.failed == ["b/seed_0"]

    second = CountingRunner()
    result = run_ablation(load_ablation(path, out), out, runner=second)
    assert second.trained == ["b/seed_0"] and result.skipped == ["a/seed_0"] and not result.failed
    # b resumed from its step-1 checkpoint: one more step, not two from scratch.
    steps = [json.loads(line)["step"] for line in (out / "b" / "seed_0" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert all(is_finished(run) for run in ablation.runs)
    assert read_status(out / "b" / "seed_0")["attempts"] == 2

    third = CountingRunner()
    run_ablation(load_ablation(path, out), out, runner=third)
    assert third.trained == []


def test_a_failed_variant_is_recorded_and_the_rest_continue(tmp_path):
    path = ablation_file(tmp_path, "variants: {a: {}, bad: {decoder.depth: 2}, c: {decoder.width: 16}}\n")
    out = tmp_path / "out"
    result = run_ablation(load_ablation(path, out), out, jobs=2, runner=CountingRunner(fail={"bad"}))
    assert result.failed == ["bad/seed_0"]
    assert read_status(out / "bad" / "seed_0") | {"state": "failed", "error": "RunFailed: boom"} == \
        read_status(out / "bad" / "seed_0")
    assert read_status(out / "c" / "seed_0")["state"] == "done"
    markdown = (out / "results.md").read_text()
    assert "| a |" in markdown and "| c |" in markdown
    assert f"failed: bad ({out / 'bad' / 'seed_0'}): RunFailed: boom" in markdown


def test_ctrl_c_marks_the_run_interrupted_and_starts_nothing_else(tmp_path):
    class Interrupted(CountingRunner):
        def train(self, run):
            self.trained.append(run.name)
            raise KeyboardInterrupt

    path = ablation_file(tmp_path, "variants: {a: {}, b: {decoder.depth: 2}}\n")
    out = tmp_path / "out"
    runner = Interrupted()
    with pytest.raises(KeyboardInterrupt):
        run_ablation(load_ablation(path, out), out, runner=runner)
    assert runner.trained == ["a/seed_0"]
    assert read_status(out / "a" / "seed_0")["state"] == "interrupted"
    assert not (out / "b").exists()


def test_a_changed_ablation_does_not_reuse_old_runs(tmp_path, capsys):
    path = ablation_file(tmp_path, "variants: {a: {decoder.depth: 2}}\n")
    out = tmp_path / "out"
    run_ablation(load_ablation(path, out), out, runner=CountingRunner())
    before = (out / "a" / "seed_0" / "variant.yaml").read_text()
    path.write_text(path.read_text().replace("decoder.depth: 2", "decoder.depth: 3"))
    assert main(["ablate", str(path), "--out", str(out)]) == 2
    assert f"variant 'a': decoder.depth: {out / 'a' / 'seed_0'} was run with 2, the ablation now gives 3" \
        in capsys.readouterr().err
    assert (out / "a" / "seed_0" / "variant.yaml").read_text() == before


def test_cli_runs_a_variant_as_train_and_eval_processes(tmp_path, capsys):
    path = ablation_file(tmp_path, "variants: {b: {decoder.depth: 2}}\n")
    out = tmp_path / "out"
    assert main(["ablate", str(path), "--out", str(out)]) == 0, capsys.readouterr().err
    run = out / "b" / "seed_0"
    assert read_status(run)["state"] == "done"
    assert json.loads((run / "eval" / "eval.json").read_text())["metadata"]["step"] == 2
    assert "scenetok.cli train" in (run / "ablate.log").read_text()
    assert yaml.safe_load((run / "recipe.yaml").read_text())["decoder"]["depth"] == 2
    results = json.loads((out / "results.json").read_text())
    assert [row["variant"] for row in results["rows"]] == ["b"]
    assert (out / "loss.png").exists()
    assert "1 runs (0 already finished)" in capsys.readouterr().out
    # Run again: nothing to do.
    assert main(["ablate", str(path), "--out", str(out)]) == 0
    assert "1 runs (1 already finished)" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["sampler", "tokens", "compressor"])
def test_shipped_ablations_validate_and_fit_a_cpu(name, tmp_path):
    ablation = load_ablation(name, tmp_path / "out")  # shipped: found by name
    assert ablation.file == ROOT / "scenetok" / "recipes" / "ablations" / f"{name}.yaml"
    assert not any(shipped.startswith("ablations/") for shipped in list_recipes())  # not recipes
    assert len(ablation.variants) >= 2
    for run in ablation.runs:
        train = run.recipe.sections["train"]
        assert train.steps <= 300 and train.minutes == 0  # a step budget, small enough for 2 cores
    if name == "compressor":
        sdvae = ablation.runs[1].recipe["image_compressor"]
        assert sdvae.name == "sdvae" and sdvae.config.random_init  # stated as random init in the file
        assert ablation.runs[1].recipe["target_image_compressor"].name == "pixel"
