"""Registry: discovery from metadata, every error case, overrides, SCENETOK_LOAD_PLUGINS."""

import subprocess
import sys

import pytest

from scenetok import registry
from tests.fake_components import FakeDecoder, FakeDataset


def ep(name, value, dist="scenetok", version="0.1.0", load=None):
    return (name, value, dist, version, load or (lambda: FakeDecoder))


def test_builtins_are_listed_from_metadata_for_all_kinds():
    registry.clear_cache()
    names = {(i.kind, i.name) for i in registry.list_components()}
    for kind, name in [("image_compressor", "pixel"), ("token_compressor", "perceiver"), ("decoder", "dit"),
                       ("sampler", "flow"), ("sampler", "ddpm"), ("dataset", "rooms")]:
        assert (kind, name) in names
    info = registry.provider_of("decoder", "dit")
    assert info.distribution == "scenetok" and info.value.endswith(":DiTDecoder")


def test_listing_does_not_import_plugins(fake_entry_points):
    def boom():
        raise AssertionError("listing must not load entry points")

    fake_entry_points({"scenetok.decoders": [ep("dit", "pkg.mod:Dit", load=boom)]})
    assert [i.name for i in registry.list_components("decoder")] == ["dit"]


def test_unknown_name_suggests_close_match(fake_entry_points):
    fake_entry_points({"scenetok.decoders": [ep("dit", "pkg:Dit"), ep("unet", "pkg:Unet")]})
    with pytest.raises(registry.UnknownComponentError) as info:
        registry.get_component("decoder", "ditt")
    message = str(info.value)
    assert "did you mean 'dit'" in message.lower()
    assert "dit, unet" in message


def test_known_but_not_installed_names_the_package(fake_entry_points):
    fake_entry_points({})
    with pytest.raises(registry.NotInstalledError, match="pip install scenetok-plugin-dl3dv"):
        registry.get_component("dataset", "dl3dv")


def test_import_failure_reports_distribution_and_cause(fake_entry_points):
    def broken():
        try:
            import not_a_real_module_xyz  # noqa: F401
        except ImportError as error:
            raise RuntimeError("wrapper") from error

    fake_entry_points({"scenetok.decoders": [ep("fancy", "fancy_pkg.models:Fancy", dist="scenetok-plugin-fancy",
                                                version="2.0", load=broken)]})
    with pytest.raises(registry.ComponentImportError) as info:
        registry.get_component("decoder", "fancy")
    message = str(info.value)
    assert "scenetok-plugin-fancy==2.0" in message
    assert "fancy_pkg.models:Fancy" in message
    assert "No module named 'not_a_real_module_xyz'" in message
    assert isinstance(info.value.__cause__, RuntimeError)


def test_wrong_kind(fake_entry_points):
    fake_entry_points({"scenetok.datasets": [ep("rooms", "pkg:Rooms", load=lambda: FakeDataset)]})
    with pytest.raises(registry.WrongKindError, match="'rooms' is a dataset, not a decoder"):
        registry.get_component("decoder", "rooms")


def test_ambiguous_name_asks_for_provider(fake_entry_points):
    fake_entry_points({"scenetok.decoders": [ep("dit", "a:Dit", dist="pkg-a"), ep("dit", "b:Dit", dist="pkg-b")]})
    with pytest.raises(registry.AmbiguousComponentError, match="provider"):
        registry.get_component("decoder", "dit")
    assert registry.get_component("decoder", "dit", provider="pkg-b") is FakeDecoder


def test_entry_point_that_is_not_a_component(fake_entry_points):
    fake_entry_points({"scenetok.decoders": [ep("dict", "builtins:dict", load=lambda: dict),
                                             ep("noconfig", "x:Y", load=lambda: _NoConfig)]})
    with pytest.raises(registry.BadEntryPointError, match="not a subclass"):
        registry.get_component("decoder", "dict")
    with pytest.raises(registry.BadEntryPointError, match="Config"):
        registry.get_component("decoder", "noconfig")


class _NoConfig(FakeDecoder):
    Config = None


def test_load_plugins_env_restricts_distributions(fake_entry_points, monkeypatch):
    fake_entry_points({"scenetok.datasets": [ep("rooms", "a:R", load=lambda: FakeDataset),
                                             ep("dl3dv", "b:D", dist="scenetok-plugin-dl3dv", load=lambda: FakeDataset)]})
    assert {i.name for i in registry.list_components("dataset")} == {"rooms", "dl3dv"}
    monkeypatch.setenv("SCENETOK_LOAD_PLUGINS", "")
    assert {i.name for i in registry.list_components("dataset")} == {"rooms"}
    with pytest.raises(registry.NotInstalledError, match="SCENETOK_LOAD_PLUGINS"):
        registry.get_component("dataset", "dl3dv")
    monkeypatch.setenv("SCENETOK_LOAD_PLUGINS", "scenetok_plugin_dl3dv")
    assert {i.name for i in registry.list_components("dataset")} == {"rooms", "dl3dv"}


def test_override_context_manager_and_fixture(registry_override):
    with registry.override("decoder", "mine", FakeDecoder):
        assert registry.get_component("decoder", "mine") is FakeDecoder
        assert any(i.name == "mine" for i in registry.list_components("decoder"))
    with pytest.raises(registry.UnknownComponentError):
        registry.get_component("decoder", "mine")
    registry_override("dataset", "mine", FakeDataset)
    assert registry.get_component("dataset", "mine") is FakeDataset
    with pytest.raises(registry.BadEntryPointError):
        registry_override("dataset", "bad", dict)


def test_unknown_kind():
    with pytest.raises(registry.RegistryError, match="unknown component kind"):
        registry.list_components("schedulers_x")
    assert registry.list_components("datasets")  # plural accepted


def test_importing_scenetok_and_listing_does_not_import_torch():
    code = ("import sys, scenetok, scenetok.registry as r; r.list_components(); "
            "import scenetok.cli as c; c.main(['plugins', '--json']) ; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
