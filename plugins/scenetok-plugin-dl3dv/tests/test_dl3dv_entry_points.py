"""The plugin as an installed distribution: entry points, metadata, SCENETOK_LOAD_PLUGINS, CLI hook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement  # packaging: a dependency of pytest
from packaging.specifiers import SpecifierSet

import scenetok_plugin_dl3dv
from scenetok import registry
from scenetok.cli import main as scenetok_main
from scenetok.interfaces import SceneDataset
from scenetok_plugin_dl3dv.dataset import DL3DVDataset

# The installed console script next to this interpreter (what users run), else the module.
_SCRIPT = Path(sys.executable).with_name("scenetok")
SCENETOK = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "scenetok.cli"]


def test_distribution_metadata():
    assert metadata.version("scenetok-plugin-dl3dv") == scenetok_plugin_dl3dv.__version__ == "0.2.0"
    [core] = [Requirement(r) for r in metadata.requires("scenetok-plugin-dl3dv") or [] if "extra ==" not in r]
    assert core.name == "scenetok" and core.specifier == SpecifierSet(">=0.2,<0.3")
    # the core this checkout installs satisfies the plugin's pin (else pip cannot install both)
    assert metadata.version("scenetok") in core.specifier


def test_registered_as_dl3dv_dataset():
    [info] = [i for i in registry.list_components("dataset") if i.name == "dl3dv"]
    assert info.provider == "scenetok-plugin-dl3dv==0.2.0"
    assert info.value == "scenetok_plugin_dl3dv.dataset:DL3DVDataset"
    cls = registry.get_component("dataset", "dl3dv")
    assert cls is DL3DVDataset and issubclass(cls, SceneDataset)


def test_hidden_by_scenetok_load_plugins(monkeypatch):
    monkeypatch.setenv("SCENETOK_LOAD_PLUGINS", "")
    registry.clear_cache()
    assert "dl3dv" not in [i.name for i in registry.list_components("dataset")]
    with pytest.raises(registry.NotInstalledError, match="scenetok-plugin-dl3dv.*SCENETOK_LOAD_PLUGINS"):
        registry.get_component("dataset", "dl3dv")
    monkeypatch.setenv("SCENETOK_LOAD_PLUGINS", "scenetok-plugin-dl3dv")
    registry.clear_cache()
    assert registry.get_component("dataset", "dl3dv") is DL3DVDataset


def _plugins_json(env_value: str | None) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "SCENETOK_LOAD_PLUGINS"}
    if env_value is not None:
        env["SCENETOK_LOAD_PLUGINS"] = env_value
    result = subprocess.run([*SCENETOK, "plugins", "list", "dataset", "--json"], capture_output=True, text=True,
                            env=env, timeout=120, check=True)
    return json.loads(result.stdout)


def test_scenetok_plugins_json_subprocess():
    shown = {entry["name"]: entry for entry in _plugins_json(None)["components"]["dataset"]}
    assert shown["dl3dv"]["distribution"] == "scenetok-plugin-dl3dv" and shown["dl3dv"]["version"] == "0.2.0"
    hidden = _plugins_json("")
    assert "dl3dv" not in [entry["name"] for entry in hidden["components"]["dataset"]]
    assert "transforms" in [entry["name"] for entry in hidden["components"]["dataset"]]


def test_importing_the_plugin_and_its_hook_module_is_light():
    code = ("import sys, scenetok_plugin_dl3dv, scenetok_plugin_dl3dv.commands, scenetok_plugin_dl3dv.benchmark; "
            "heavy = [m for m in ('torch', 'PIL', 'numpy') if m in sys.modules]; print(heavy); assert not heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, capture_output=True)


def test_plugins_check_passes_for_dl3dv(capsys):
    assert scenetok_main(["plugins", "list", "dataset", "--check", "--pattern", "dl3dv"]) == 0
    assert "scenetok-plugin-dl3dv==0.2.0" in capsys.readouterr().out


def test_cli_hook_lists_the_shipped_recipes(capsys):
    assert scenetok_main(["dl3dv", "recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["dl3dv", "dl3dv_tiny"]
    assert all(line.split()[1].endswith(".yaml") and os.path.isfile(line.split()[1]) for line in lines)
    assert scenetok_main(["dl3dv", "recipes", "nope"]) == 2
