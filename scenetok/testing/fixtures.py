"""pytest fixtures for scenetok and its plugins (``pytest_plugins = ["scenetok.testing.fixtures"]``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from scenetok import registry


@pytest.fixture
def registry_override() -> Iterator[Callable[[str, str, type], type]]:
    """Register classes under names for one test: ``registry_override("decoder", "mine", MyDecoder)``."""
    with contextlib.ExitStack() as stack:

        def register(kind: str, name: str, cls: type) -> type:
            return stack.enter_context(registry.override(kind, name, cls))

        yield register


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, list[tuple]]], None]:
    """Replace entry-point discovery: ``fake_entry_points({"scenetok.decoders": [(name, value,
    dist, version, load), ...]})``. Groups not given are empty."""

    def install(groups: dict[str, list[tuple]]) -> None:
        def fake(group: str):
            yield from groups.get(group, [])

        monkeypatch.setattr(registry, "_iter_entry_points", fake)
        registry.clear_cache()

    yield install
    registry.clear_cache()
