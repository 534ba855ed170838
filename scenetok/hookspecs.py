"""pluggy hook specifications, for cross-cutting 1:N extension points only.

Components (compressors, decoders, samplers, datasets) are *not* registered through hooks: they
are plain entry points (see :mod:`scenetok.registry`). Hooks are for things many plugins may add
to at once: extra CLI commands, extra recipe checks, training lifecycle callbacks.

A hook module is declared by a distribution under the ``scenetok.hooks`` entry-point group and
must point at a *module or an instance* (pluggy registers a class object as-is, which breaks
calls). A hook module that fails to import is reported (with its distribution) and skipped, so one
broken plugin cannot break runs that do not use it; ``SCENETOK_STRICT_PLUGINS=1`` makes it fatal.

Specs only ever grow by adding arguments; implementations may accept any subset of them.
"""

from __future__ import annotations

import functools
import importlib.metadata as metadata
import logging
import os
from typing import Any

import pluggy

from scenetok import registry

PROJECT = "scenetok"
HOOKS_GROUP = "scenetok.hooks"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

log = logging.getLogger(__name__)


@hookspec
def scenetok_add_commands(subparsers: Any) -> None:
    """Add sub-commands to the ``scenetok`` CLI (``subparsers`` is an argparse sub-parser action).

    Set ``func`` on the new parser with ``parser.set_defaults(func=callable(args) -> int)``.
    """


@hookspec
def scenetok_validate_recipe(recipe: Any, errors: list[str]) -> None:
    """Extra checks on a fully built recipe (:class:`scenetok.recipe.Recipe`); append messages
    (each naming the dotted key) to ``errors``."""


@hookspec
def scenetok_on_train_start(trainer: Any) -> None:
    """Called once before the first training step (also after a resume)."""


@hookspec
def scenetok_on_train_step_end(trainer: Any, step: int, metrics: dict[str, float]) -> None:
    """Called after every optimiser step with that step's logged metrics."""


@hookspec
def scenetok_on_train_end(trainer: Any) -> None:
    """Called when training stops (finished, interrupted or aborted)."""


class HookLoadError(RuntimeError):
    """A hook module failed to import and ``SCENETOK_STRICT_PLUGINS=1`` is set."""


def _hook_entry_points() -> list[Any]:
    return list(metadata.entry_points(group=HOOKS_GROUP))


@functools.lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager with every importable hook module registered (core's own,
    :mod:`scenetok.core_hooks`, comes through the same entry-point group)."""
    import sys

    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(sys.modules[__name__])
    strict = os.environ.get("SCENETOK_STRICT_PLUGINS", "") not in ("", "0")
    allowed = registry.allowed_distributions()
    for ep in _hook_entry_points():
        dist = ep.dist.name if ep.dist is not None else "<unknown>"
        if allowed is not None and registry._normalise_dist(dist) not in allowed:
            continue
        try:
            plugin = ep.load()
            manager.register(plugin, name=f"{dist}:{ep.name}")
        except Exception as error:  # noqa: BLE001 - isolate broken plugins
            message = (
                f"hook plugin {ep.name!r} from {dist} ({ep.value}) failed to load and is skipped: "
                f"{type(error).__name__}: {error}"
            )
            if strict:
                raise HookLoadError(message + " (SCENETOK_STRICT_PLUGINS=1)") from error
            log.warning(message)
    if not any(name.startswith(f"{registry.CORE_DISTRIBUTION}:") for name, _ in manager.list_name_plugin()):
        # Without core's hooks there are no `train`/`eval` commands and no cross-component check.
        raise HookLoadError(
            "scenetok's own hooks (entry point group scenetok.hooks, name 'core') are not installed: the "
            "package metadata is older than the code. Reinstall scenetok (e.g. `pip install -e .`).")
    manager.check_pending()
    return manager
