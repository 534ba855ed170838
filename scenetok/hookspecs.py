"""pluggy hook specifications, for cross-cutting 1:N extension points only.

Components (compressors, decoders, samplers, datasets) are *not* registered through hooks: they
are plain entry points (see :mod:`scenetok.registry`). Hooks are for things many plugins may add
to at once: extra CLI commands, extra recipe checks, training lifecycle callbacks.

A hook module is declared by a distribution under the ``scenetok.hooks`` entry-point group and
must point at a *module or an instance* (pluggy registers a class object as-is, which breaks
calls). A hook module that fails to import, or that implements a hook name no spec declares (a
typo such as ``scenetok_on_train_stepend``), is reported (with its distribution) and skipped, so
one broken plugin cannot break runs that do not use it; ``SCENETOK_STRICT_PLUGINS=1`` makes it
fatal. Hooks are called through :func:`call_hook`, one implementation at a time: one that raises
is logged with its distribution and disabled for the rest of the process (strict mode: the error
propagates as :class:`HookCallError`, and a training run checkpoints, then exits non-zero).

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
    """A hook module failed to load or validate and ``SCENETOK_STRICT_PLUGINS=1`` is set."""


class HookCallError(RuntimeError):
    """A hook implementation raised and ``SCENETOK_STRICT_PLUGINS=1`` is set."""


def strict_plugins() -> bool:
    """Whether ``SCENETOK_STRICT_PLUGINS`` makes plugin failures fatal."""
    return os.environ.get("SCENETOK_STRICT_PLUGINS", "") not in ("", "0")


def _hook_entry_points() -> list[Any]:
    return list(metadata.entry_points(group=HOOKS_GROUP))


#: One record per hook entry point seen by the last :func:`get_plugin_manager` build:
#: ``{"name", "distribution", "value", "hooks", "status"}`` (status ``"ok"`` or the reason it was
#: skipped); read by ``scenetok plugins --check/--json``.
_HOOK_STATUS: list[dict[str, Any]] = []
#: Implementations disabled after raising: ``(hook name, plugin name)``.
_DISABLED: set[tuple[str, str]] = set()


def _unknown_hooks(manager: pluggy.PluginManager, plugin: Any) -> list[str]:
    """Hook implementations of ``plugin`` that no spec declares (pluggy's ``check_pending``, per
    plugin)."""
    unknown = []
    for caller in manager.get_hookcallers(plugin) or []:
        if caller.spec is None and any(impl.plugin is plugin and not impl.optionalhook
                                       for impl in caller.get_hookimpls()):
            unknown.append(caller.name)
    return sorted(unknown)


@functools.lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager with every importable, valid hook module registered (core's
    own, :mod:`scenetok.core_hooks`, comes through the same entry-point group)."""
    import difflib
    import sys

    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(sys.modules[__name__])
    strict = strict_plugins()
    allowed = registry.allowed_distributions()
    specs = [name for name in dir(sys.modules[__name__]) if name.startswith(f"{PROJECT}_")]
    _HOOK_STATUS.clear()
    _DISABLED.clear()
    for ep in _hook_entry_points():
        dist = ep.dist.name if ep.dist is not None else "<unknown>"
        if allowed is not None and registry._normalise_dist(dist) not in allowed:
            continue
        record = {"name": ep.name, "distribution": dist, "value": ep.value, "hooks": [], "status": "ok"}
        _HOOK_STATUS.append(record)
        try:
            plugin = ep.load()
            manager.register(plugin, name=f"{dist}:{ep.name}")
        except Exception as error:  # noqa: BLE001 - isolate broken plugins
            message = (
                f"hook plugin {ep.name!r} from {dist} ({ep.value}) failed to load and is skipped: "
                f"{type(error).__name__}: {error}"
            )
            record["status"] = f"FAIL: {type(error).__name__}: {error}"
            if strict:
                raise HookLoadError(message + " (SCENETOK_STRICT_PLUGINS=1)") from error
            log.warning(message)
            continue
        unknown = _unknown_hooks(manager, plugin)
        if unknown:
            manager.unregister(plugin)
            hints = "".join(
                f" ({name}: did you mean {close[0]}?)" for name in unknown
                if (close := difflib.get_close_matches(name, specs, n=1)))
            message = (f"hook plugin {ep.name!r} from {dist} ({ep.value}) implements unknown hooks "
                       f"{', '.join(unknown)}{hints} and is skipped")
            record["status"] = f"FAIL: unknown hooks {', '.join(unknown)}{hints}"
            if strict:
                raise HookLoadError(message + " (SCENETOK_STRICT_PLUGINS=1)")
            log.warning(message)
            continue
        record["hooks"] = sorted(caller.name for caller in manager.get_hookcallers(plugin) or [])
    if not any(name.startswith(f"{registry.CORE_DISTRIBUTION}:") for name, _ in manager.list_name_plugin()):
        # Without core's hooks there are no `train`/`eval` commands and no cross-component check.
        raise HookLoadError(
            "scenetok's own hooks (entry point group scenetok.hooks, name 'core') are not installed: the "
            "package metadata is older than the code. Reinstall scenetok (e.g. `pip install -e .`).")
    manager.check_pending()  # every plugin with unknown hooks was removed above
    return manager


def hook_plugin_status() -> list[dict[str, Any]]:
    """The hook entry points and what became of them (see :data:`_HOOK_STATUS`)."""
    get_plugin_manager()
    return [dict(record) for record in _HOOK_STATUS]


def call_hook(name: str, **kwargs: Any) -> list[Any]:
    """Call every implementation of hook ``name`` in pluggy's order, each isolated: one that raises
    is logged with its plugin and distribution and disabled for the rest of the process, and the
    others still run. With ``SCENETOK_STRICT_PLUGINS=1`` the first failure raises
    :class:`HookCallError` instead (after logging). Returns the non-``None`` results."""
    caller = getattr(get_plugin_manager().hook, name)
    results = []
    for impl in reversed(caller.get_hookimpls()):  # pluggy calls the last-registered first
        if (name, impl.plugin_name) in _DISABLED:
            continue
        if impl.plugin_name.startswith(f"{registry.CORE_DISTRIBUTION}:"):
            result = impl.function(*[kwargs[arg] for arg in impl.argnames])  # core's errors are real errors
            if result is not None:
                results.append(result)
            continue
        try:
            result = impl.function(*[kwargs[arg] for arg in impl.argnames])
        except Exception as error:  # noqa: BLE001 - one plugin must not stop the others
            _DISABLED.add((name, impl.plugin_name))
            distribution = impl.plugin_name.split(":", 1)[0]
            log.error("hook %s of plugin %s (distribution %s) raised %s: %s; it is disabled for the rest of "
                      "this run", name, impl.plugin_name, distribution, type(error).__name__, error)
            if strict_plugins():
                raise HookCallError(f"hook {name} of {impl.plugin_name} (distribution {distribution}) raised "
                                    f"{type(error).__name__}: {error} (SCENETOK_STRICT_PLUGINS=1)") from error
            continue
        if result is not None:
            results.append(result)
    return results
