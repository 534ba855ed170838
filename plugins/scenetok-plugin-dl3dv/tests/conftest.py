"""Fixtures of the plugin's own tests (self-contained: no import of core's tests/conftest.py)."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TORCH_HOME", tempfile.mkdtemp(prefix="scenetok-dl3dv-torch-home-"))

import pytest  # noqa: E402
import torch  # noqa: E402

from scenetok import registry  # noqa: E402
from scenetok.testing.fixtures import registry_override  # noqa: E402,F401 - re-exported fixture
from scenetok_plugin_dl3dv.testing import synthetic_hash  # noqa: E402

# Two shared cores: keep each test process single-threaded.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch: pytest.MonkeyPatch):
    """Every test sees the installed plugins (whatever the calling shell set) and a fresh cache."""
    monkeypatch.delenv("SCENETOK_LOAD_PLUGINS", raising=False)
    torch.manual_seed(0)
    registry.clear_cache()
    yield
    registry.clear_cache()


@pytest.fixture
def hashes() -> list[str]:
    """Five synthetic scene hashes, sorted (the order the dataset lists scenes in)."""
    return sorted(synthetic_hash(i) for i in range(5))
