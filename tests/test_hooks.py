"""pluggy hooks: extra recipe checks and CLI commands; a broken hook plugin is isolated."""

import types
from pathlib import Path

import pytest

from scenetok import hookspecs
from scenetok.hookspecs import hookimpl

QUICKSTART = Path(__file__).parents[1] / "recipes" / "quickstart.yaml"


class FakeEntryPoint:
    def __init__(self, name, load, dist="scenetok-plugin-fake"):
        self.name, self._load, self.value = name, load, f"{dist.replace('-', '_')}:{name}"
        self.dist = types.SimpleNamespace(name=dist, version="1.0")

    def load(self):
        return self._load()


class GoodPlugin:
    @hookimpl
    def scenetok_validate_recipe(self, recipe, errors):
        if recipe["decoder"].config.depth > 8:
            errors.append("decoder.depth: this lab caps the decoder at 8 blocks")

    @hookimpl
    def scenetok_add_commands(self, subparsers):
        parser = subparsers.add_parser("hello", help="say hello")
        parser.set_defaults(func=lambda args: print("hello from a plugin") or 0)


def broken():
    raise ImportError("No module named 'missing_dependency'")


@pytest.fixture
def hook_plugins(monkeypatch):
    """Replace the installed hook plugins by ``entry_points`` (core's own hooks stay, unless
    ``with_core=False``)."""
    core = [ep for ep in hookspecs._hook_entry_points() if ep.dist is not None and ep.dist.name == "scenetok"]

    def install(*entry_points, with_core=True):
        monkeypatch.setattr(hookspecs, "_hook_entry_points",
                            lambda: [*(core if with_core else []), *entry_points])
        hookspecs.get_plugin_manager.cache_clear()

    yield install
    hookspecs.get_plugin_manager.cache_clear()


def test_recipe_check_and_cli_command_from_a_hook_plugin(hook_plugins, capsys):
    from scenetok.cli import main
    from scenetok.recipe import RecipeError, load_recipe

    hook_plugins(FakeEntryPoint("good", lambda: GoodPlugin()))
    load_recipe(QUICKSTART)
    with pytest.raises(RecipeError, match="caps the decoder at 8 blocks"):
        load_recipe(QUICKSTART, ["decoder.depth=9"])
    assert main(["hello"]) == 0
    assert "hello from a plugin" in capsys.readouterr().out


def test_a_broken_hook_plugin_is_reported_and_skipped(hook_plugins, caplog):
    from scenetok.recipe import load_recipe

    hook_plugins(FakeEntryPoint("broken", broken), FakeEntryPoint("good", lambda: GoodPlugin()))
    manager = hookspecs.get_plugin_manager()
    assert "scenetok-plugin-fake:good" in {name for name, _ in manager.list_name_plugin()}
    assert "failed to load and is skipped" in caplog.text and "missing_dependency" in caplog.text
    load_recipe(QUICKSTART)  # runs that do not need the broken plugin are unaffected


def test_strict_plugins_makes_a_broken_hook_fatal(hook_plugins, monkeypatch):
    monkeypatch.setenv("SCENETOK_STRICT_PLUGINS", "1")
    hook_plugins(FakeEntryPoint("broken", broken))
    with pytest.raises(hookspecs.HookLoadError, match="scenetok-plugin-fake"):
        hookspecs.get_plugin_manager()


def test_core_registers_its_commands_and_recipe_check_through_the_hooks(hook_plugins):
    from scenetok.cli import build_parser
    from scenetok.recipe import RecipeError, load_recipe

    hook_plugins()
    names = {name for name, _ in hookspecs.get_plugin_manager().list_name_plugin()}
    assert "scenetok:core" in names
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"train", "eval", "render", "quickstart", "validate", "model", "data"} <= set(commands)
    # the cross-component check (image size vs the compressor's spatial factor) is core's hook
    with pytest.raises(RecipeError, match="spatial factor"):
        load_recipe(QUICKSTART, ["dataset.image_size=30"])


def test_stale_metadata_without_core_hooks_is_a_clear_error(hook_plugins):
    hook_plugins(FakeEntryPoint("good", lambda: GoodPlugin()), with_core=False)
    with pytest.raises(hookspecs.HookLoadError, match="Reinstall scenetok"):
        hookspecs.get_plugin_manager()
