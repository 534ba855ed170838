"""Test helpers for scenetok components, core and plugin alike.

* :mod:`scenetok.testing.contracts` — contract suites per component kind; subclass one in your
  plugin's tests and provide a factory, and your component is held to the same rules as core's.
* :mod:`scenetok.testing.datasets` — the dataset contract suite.
* :mod:`scenetok.testing.fixtures` — pytest fixtures (``registry_override``); enable them with
  ``pytest_plugins = ["scenetok.testing.fixtures"]`` in a ``conftest.py``.

Nothing heavy is imported here.
"""
