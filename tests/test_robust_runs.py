"""Issue 18: hooks isolated at every call, one-line errors with exit code 2, signals, resumed
metrics, recorded providers, checkpoint modes, NaN EMA warning."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
from pathlib import Path

import pytest
import torch

from scenetok import hookspecs, registry
from scenetok.checkpoint import MANIFEST, list_checkpoints, load_checkpoint, save_checkpoint
from scenetok.cli import main
from scenetok.hookspecs import hookimpl
from scenetok.recipe import RecipeError, load_recipe, load_recipe_dict, upgrade_stored_recipe
from scenetok.train.loop import train_recipe
from tests.test_hooks import FakeEntryPoint, hook_plugins  # noqa: F401 - fixture

TINY = Path(__file__).parent / "recipes" / "tiny.yaml"
SHORT = ["train.steps=2", "train.checkpoint_every=1"]


def cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


def rewrite(checkpoint_dir: Path, name: str, content: bytes) -> None:
    """Replace one file of a checkpoint *and* its manifest entry (a consistent but bad checkpoint)."""
    (checkpoint_dir / name).write_bytes(content)
    manifest = json.loads((checkpoint_dir / MANIFEST).read_text())
    manifest["files"][name] = {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    (checkpoint_dir / MANIFEST).write_text(json.dumps(manifest))


# ---- hooks --------------------------------------------------------------------------------------

class Misspelled:
    @hookimpl
    def scenetok_on_train_stepend(self, trainer, step, metrics):  # typo: not a hook
        pass


class Raising:
    calls = 0

    @hookimpl
    def scenetok_on_train_step_end(self, trainer, step, metrics):
        Raising.calls += 1
        raise ZeroDivisionError("plugin bug")


class Terminator:
    @hookimpl
    def scenetok_on_train_step_end(self, trainer, step, metrics):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)


def test_bad_hook_name_is_reported_and_skipped(hook_plugins, capsys, monkeypatch, caplog):  # noqa: F811
    hook_plugins(FakeEntryPoint("typo", lambda: Misspelled()))
    with caplog.at_level(logging.WARNING):
        load_recipe(TINY)  # validate still works for every recipe
    assert any("scenetok_on_train_stepend" in m and "did you mean scenetok_on_train_step_end" in m
               for m in caplog.messages)
    code, _ = cli(capsys, "plugins", "--check")
    assert code == 1
    assert main(["plugins", "--json"]) == 0
    hooks = {h["name"]: h for h in json.loads(capsys.readouterr().out)["hooks"]}
    assert hooks["typo"]["status"].startswith("FAIL: unknown hooks scenetok_on_train_stepend")
    assert hooks["typo"]["distribution"] == "scenetok-plugin-fake"
    assert "scenetok_validate_recipe" in hooks["core"]["hooks"]

    monkeypatch.setenv("SCENETOK_STRICT_PLUGINS", "1")
    hookspecs.get_plugin_manager.cache_clear()
    code, err = cli(capsys, "validate", str(TINY))
    assert code == 2 and "unknown hooks" in err and len(err.strip().splitlines()) == 1


def test_raising_hook_is_disabled_and_the_run_goes_on(hook_plugins, tmp_path, caplog):  # noqa: F811
    Raising.calls = 0
    hook_plugins(FakeEntryPoint("raiser", lambda: Raising()))
    with caplog.at_level(logging.ERROR):
        result = train_recipe(TINY, SHORT, run_dir=tmp_path, progress=False)
    assert result.reason == "finished" and result.step == 2
    assert Raising.calls == 1  # disabled after the first failure
    assert any("scenetok-plugin-fake" in m and "ZeroDivisionError" in m for m in caplog.messages)


def test_raising_hook_in_strict_mode_checkpoints_then_fails(hook_plugins, tmp_path, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setenv("SCENETOK_STRICT_PLUGINS", "1")
    hook_plugins(FakeEntryPoint("raiser", lambda: Raising()))
    code, _ = cli(capsys, "train", str(TINY), "--run", str(tmp_path), "--no-progress", *SHORT)
    assert code == 1
    assert load_checkpoint(tmp_path).step == 1  # the step that ran is kept


def test_sigterm_checkpoints_then_exits_non_zero(hook_plugins, tmp_path, capsys):  # noqa: F811
    hook_plugins(FakeEntryPoint("term", lambda: Terminator()))
    code, _ = cli(capsys, "train", str(TINY), "--run", str(tmp_path), "--no-progress", "train.steps=5")
    assert code == 128 + signal.SIGTERM
    assert load_checkpoint(tmp_path).step == 1


# ---- runs, checkpoints, one-line errors -----------------------------------------------------------

def test_metrics_are_truncated_to_the_resumed_step(tmp_path):
    train_recipe(TINY, ["train.steps=2", "train.checkpoint_every=2"], run_dir=tmp_path, progress=False)
    with (tmp_path / "metrics.jsonl").open("a") as handle:  # logged after the checkpoint, then killed
        handle.write(json.dumps({"step": 3, "loss": 1.0}) + "\n" + '{"step": 4, "lo')
    train_recipe(TINY, ["train.steps=3", "train.checkpoint_every=2"], run_dir=tmp_path, progress=False)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained")
    train_recipe(TINY, [*SHORT, "train.ema_decay=0.5"], run_dir=run, progress=False)
    return run


def copy_run(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to)
    return to


def test_every_checkpoint_damaged_is_one_line(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "run")
    for checkpoint in list_checkpoints(run):
        path = checkpoint / "model.safetensors"
        path.write_bytes(path.read_bytes()[:100])
    code, err = cli(capsys, "eval", str(run))
    assert code == 2 and "every checkpoint under" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content", [
    b'{"step": "two", "optimizer": 5}',
    b"[" * 100_000 + b"]" * 100_000,
    b'["not", "a", "mapping"]',
])
def test_bad_state_json_is_one_line_and_nothing_is_lost(trained, tmp_path, capsys, content):
    run = copy_run(trained, tmp_path / "run")
    for checkpoint in list_checkpoints(run):
        rewrite(checkpoint, "state.json", content)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "checkpoints" in p.parts}
    code, err = cli(capsys, "train", str(TINY), "--run", str(run), "--no-progress", *SHORT, "train.ema_decay=0.5",
                    "train.steps=3")
    assert code == 2 and "state" in err
    assert {p: p.read_bytes() for p in before} == before  # nothing on disk changed


def test_disk_full_during_a_save_is_one_line_and_keeps_earlier_checkpoints(tmp_path, capsys, monkeypatch):
    from safetensors import SafetensorError

    import scenetok.checkpoint as checkpoint_module

    real = checkpoint_module.save_file
    calls = {"n": 0}

    def filling(tensors, path):
        calls["n"] += 1
        if calls["n"] > 2:  # the first checkpoint (model + state) fits, then the disk is full
            raise SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")
        return real(tensors, path)

    monkeypatch.setattr(checkpoint_module, "save_file", filling)
    code, err = cli(capsys, "train", str(TINY), "--run", str(tmp_path), "--no-progress", *SHORT)
    assert code == 2 and "could not be written" in err and "No space left" in err
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000001"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    assert load_checkpoint(tmp_path).step == 1


def test_bad_chunk_index_is_one_line(tmp_path, capsys):
    (tmp_path / "data" / "test").mkdir(parents=True)
    (tmp_path / "data" / "test" / "index.json").write_text('{"scene": "000.tor')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"extends: {TINY}\ndataset: {{name: re10k, root: {tmp_path / 'data'}, image_size: 16, "
                      "context_views: 2, target_views: 2}\n")
    code, err = cli(capsys, "data", "index", str(recipe), "--out", str(tmp_path / "i.json"))
    assert code == 2 and "index.json: not a valid chunk index" in err
    with pytest.raises(ValueError):  # --debug shows the traceback
        main(["--debug", "data", "index", str(recipe), "--out", str(tmp_path / "i.json")])


def test_nan_ema_warns(trained, tmp_path, caplog):
    from safetensors.torch import load_file, save_file

    from scenetok.model import SceneTok

    run = copy_run(trained, tmp_path / "run")
    newest = list_checkpoints(run)[-1]
    ema = load_file(str(newest / "ema.safetensors"))
    save_file({k: torch.full_like(v, float("nan")) for k, v in ema.items()}, str(tmp_path / "ema"))
    rewrite(newest, "ema.safetensors", (tmp_path / "ema").read_bytes())
    with caplog.at_level(logging.WARNING):
        SceneTok.from_pretrained(run)
    assert any("EMA weight tensors hold NaN" in m for m in caplog.messages)


def test_checkpoint_modes_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path, 1, {"model": {"w": torch.zeros(2)}}, {"step": 1}, {})
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in path.iterdir()} == {0o644}


# ---- providers ---------------------------------------------------------------------------------------

@pytest.fixture
def colliding_flow(monkeypatch):
    """Every installed component plus a second distribution registering sampler ``flow``."""
    original = registry._iter_entry_points

    def with_collision(group):
        rows = list(original(group))
        if group == registry.GROUPS["sampler"]:
            flow = next(row for row in rows if row[0] == "flow")
            rows.append(("flow", "collide_pkg:Flow", "scenetok-plugin-collide", "9.9", flow[4]))
        yield from rows

    def install():
        monkeypatch.setattr(registry, "_iter_entry_points", with_collision)
        registry.clear_cache()

    yield install
    registry.clear_cache()


def test_runs_keep_their_provider_when_a_colliding_plugin_is_installed(trained, colliding_flow):
    from scenetok.model import SceneTok

    stored = load_checkpoint(trained).recipe
    assert stored["sampler"]["provider"] == "scenetok" and stored["decoder"]["provider"] == "scenetok"
    colliding_flow()
    model = SceneTok.from_pretrained(trained)  # unchanged, though `flow` is now ambiguous
    assert model.recipe["sampler"].info.distribution == "scenetok"
    with pytest.raises(RecipeError, match=r"scenetok==.*scenetok-plugin-collide==9.9.*provider:"):
        load_recipe(TINY)
    assert load_recipe(TINY, ["sampler.provider=scenetok-plugin-collide"])["sampler"].info.version == "9.9"


def test_runs_from_before_recorded_providers_use_their_provenance(trained, colliding_flow):
    stored = load_checkpoint(trained).recipe
    for section in ("sampler", "decoder", "token_compressor", "image_compressor", "dataset"):
        stored[section].pop("provider")  # as written by scenetok 0.1
    colliding_flow()
    recipe = load_recipe_dict(upgrade_stored_recipe(stored))
    assert recipe["sampler"].info.distribution == "scenetok"
