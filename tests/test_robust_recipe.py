"""Issue 18: bounded recipe parsing, validate-time ranges for every setting, CLI arguments checked
before any work, and a size check that refuses models the machine cannot train."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scenetok.cli import main
from scenetok.recipe import RecipeError, compose, load_recipe


def one_line_error(capsys, *argv: str) -> str:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = [line for line in captured.err.strip().splitlines() if not line.startswith(("usage:", " "))]
    assert lines and "Traceback" not in captured.err, captured.err
    return captured.err


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
description: *i
"""


@pytest.mark.parametrize("content, message", [
    (BILLION_LAUGHS, "after expanding YAML aliases"),
    ("a: &a {b: *a}\n", "refers to itself"),
    ("a: &a [*a]\n", "refers to itself"),
    ("a: " + "[" * 40 + "]" * 40 + "\n", "nested deeper than"),
    ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested deeper than|more than a recipe may hold"),
    ("a: '" + "x" * 1_100_000 + "'\n", "more than a recipe may hold"),
    ("- just\n- a list\n", "mapping at the top level"),
    ("a: [unclosed\n", "not valid YAML"),
])
def test_hostile_recipe_files_fail_fast(tmp_path: Path, capsys, content: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    started = time.monotonic()
    with pytest.raises(RecipeError, match=message):
        compose(path)
    assert time.monotonic() - started < 5
    assert "error:" in one_line_error(capsys, "validate", str(path))


@pytest.mark.parametrize("target", ["/dev/zero", "DIR", "/dev/null/nope"])
def test_extends_must_name_a_regular_file(tmp_path: Path, capsys, target: str) -> None:
    if target == "DIR":
        (tmp_path / "folder").mkdir()
        target = str(tmp_path / "folder")
    path = tmp_path / "child.yaml"
    path.write_text(f"extends: {target}\n")
    with pytest.raises(RecipeError, match="regular YAML file|not found"):
        compose(path)
    one_line_error(capsys, "validate", str(path))


def test_a_directory_as_the_recipe_is_one_line(tmp_path: Path, capsys) -> None:
    assert "regular YAML file" in one_line_error(capsys, "validate", str(tmp_path))


def test_override_values_are_bounded(capsys) -> None:
    with pytest.raises(RecipeError, match="refers to itself"):
        compose("quickstart", ["description=&a [*a]"])


def test_huge_model_is_refused_with_numbers_without_building(capsys) -> None:
    started = time.monotonic()
    err = one_line_error(capsys, "validate", "quickstart", "decoder.depth=1000000000")
    assert time.monotonic() - started < 30
    assert "trainable parameters" in err and "GiB" in err and "this machine has" in err


def test_size_check_uses_the_machine_size(monkeypatch) -> None:
    load_recipe("quickstart")  # fits here
    monkeypatch.setenv("SCENETOK_MEMORY_BYTES", "1000")
    with pytest.raises(RecipeError, match=r"2,282,620 trainable parameters .* this machine has 0.0 GiB"):
        load_recipe("quickstart")


@pytest.mark.parametrize("override, message", [
    ("train.checkpoint_every=0", "train.checkpoint_every must be >= 1"),
    ("train.log_every=0", "train.log_every must be >= 1"),
    ("train.keep_checkpoints=0", "train.keep_checkpoints must be >= 1"),
    ("train.lr=-1", "train.lr must be finite and > 0"),
    ("train.lr=.nan", "train.lr must be finite and > 0"),
    ("train.num_workers=-1", "train.num_workers must be >= 0"),
    ("train.ema_decay=2", r"train.ema_decay must be in \[0, 1\)"),
    ("train.ema_decay=1", r"train.ema_decay must be in \[0, 1\)"),
    ("train.warmup_steps=-3", "train.warmup_steps must be >= 0"),
    ("train.kl_weights=[-1,-1]", "train.kl_weights must be finite and >= 0"),
    ("train.steps=-5", "train.steps must be >= 0"),
    ("train.betas=[0.9,1.5]", "train.betas"),
    ("dataset.context_views=100", "dataset.context_views: 100 distinct context views"),
    ("eval.max_scenes=-1", "eval.max_scenes must be >= 0"),
    ("eval.steps=-2", "eval.steps: unknown key"),
    ("render.guidance=.inf", "render.guidance must be finite"),
])
def test_every_setting_is_range_checked_at_validate(capsys, override: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe("quickstart", [override])
    one_line_error(capsys, "validate", "quickstart", override)


def test_ranges_are_documented_for_plugins_show(capsys) -> None:
    assert main(["plugins", "show", "train"]) == 0
    out = capsys.readouterr().out
    for text in ("keep_checkpoints: int = 3", ">= 1", "in [0, 1)", "finite and > 0"):
        assert text in out


@pytest.mark.parametrize("argv", [
    ["render", "RUN", "--frames", "-3"],
    ["render", "RUN", "--frames", "0"],
    ["eval", "RUN", "--max-scenes", "-1"],
    ["quickstart", "--minutes", "-2"],
    ["data", "cache", "quickstart", "--out", "X", "--epochs", "0"],
    ["data", "preview", "quickstart", "--out", "X", "--index", "-1"],
    ["render", "RUN", "--upscale", "0"],
    ["render", "RUN", "--size", "0", "32"],
    ["generate", "RUN", "--images", "a.png", "--out", "X", "--frames", "-3"],
    ["generate", "RUN", "--images", "a.png", "--out", "X", "--steps", "0"],
    ["generate", "RUN", "--images", "a.png", "--out", "X", "--guidance", "-1"],
    ["bench", "--threads", "0"],
    ["data", "export", "quickstart", "--out", "X", "--scale", "0"],
    ["data", "export", "quickstart", "--out", "X", "--scale", "-1"],
])
def test_cli_arguments_are_checked_before_work(tmp_path: Path, capsys, argv: list[str]) -> None:
    argv = [str(tmp_path / "missing-run") if a == "RUN" else str(tmp_path / a) if a == "X" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "expected" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was started
