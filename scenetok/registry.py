"""The component registry: Python entry points, one group per kind.

* Listing (:func:`list_components`) reads installed package metadata only: no plugin is imported,
  and neither is torch.
* Loading (:func:`get_component`) imports only the component a recipe names, and turns every way
  this can go wrong into its own clear error (unknown name, known-but-not-installed, import
  failure, wrong kind, ambiguous name, bad entry point).
* ``SCENETOK_LOAD_PLUGINS=dist-a,dist-b`` restricts discovery to core plus those distributions
  (``""`` = core only), for reproducible ablations and for debugging broken installs.
* :func:`override` registers a class under a name for tests and notebooks, without installing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import importlib.metadata as metadata
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

CORE_DISTRIBUTION = "scenetok"

#: kind -> entry-point group.
GROUPS: dict[str, str] = {
    "image_compressor": "scenetok.image_compressors",
    "token_compressor": "scenetok.token_compressors",
    "decoder": "scenetok.decoders",
    "sampler": "scenetok.samplers",
    "dataset": "scenetok.datasets",
    "scene_generator": "scenetok.scene_generators",
}
KINDS: tuple[str, ...] = tuple(GROUPS)

#: kind -> name of the ABC in :mod:`scenetok.interfaces` (resolved lazily: that module imports torch).
_BASE_CLASSES: dict[str, str] = {
    "image_compressor": "ImageCompressor",
    "token_compressor": "TokenCompressor",
    "decoder": "Decoder",
    "sampler": "Sampler",
    "dataset": "SceneDataset",
    "scene_generator": "SceneGenerator",
}

#: Components we know about that live in separately installed packages (name -> (kind, package)).
KNOWN_PLUGINS: dict[str, tuple[str, str]] = {
    "dl3dv": ("dataset", "scenetok-plugin-dl3dv"),
}

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


class RegistryError(LookupError):
    """Base class of every registry error; the message is meant for the user as is."""


class UnknownComponentError(RegistryError):
    """No installed component of this kind has this name."""


class NotInstalledError(RegistryError):
    """The name is a known component from a package that is not installed."""


class WrongKindError(RegistryError):
    """The name exists, but as a component of another kind."""


class AmbiguousComponentError(RegistryError):
    """Two distributions provide the same name; the recipe must pick one with ``provider:``."""


class ComponentImportError(RegistryError):
    """The entry point exists but importing it failed. ``__cause__`` holds the original error."""


class BadEntryPointError(RegistryError):
    """The entry point loads but is not a proper component class (wrong base, no ``Config``)."""


# ----------------------------------------------------------------------------------------------
# Discovery (metadata only)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentInfo:
    """One registered component, as read from package metadata (nothing imported)."""

    kind: str
    name: str
    value: str  # "module:attr"
    distribution: str
    version: str
    loader: Callable[[], Any] = dataclasses.field(repr=False, compare=False, default=lambda: None)

    @property
    def provider(self) -> str:
        return f"{self.distribution}=={self.version}"

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "entry_point": self.value,
            "distribution": self.distribution,
            "version": self.version,
        }


def _iter_entry_points(group: str) -> Iterator[tuple[str, str, str, str, Callable[[], Any]]]:
    """Yield ``(name, value, distribution, version, load)`` for one group. Tests replace this."""
    for ep in metadata.entry_points(group=group):
        dist = ep.dist
        yield (
            ep.name,
            ep.value,
            dist.name if dist is not None else "<unknown>",
            dist.version if dist is not None else "?",
            ep.load,
        )


def allowed_distributions() -> set[str] | None:
    """Distributions allowed by ``SCENETOK_LOAD_PLUGINS`` (core always), or ``None`` = all."""
    raw = os.environ.get("SCENETOK_LOAD_PLUGINS")
    if raw is None:
        return None
    allowed = {part.strip() for part in raw.split(",") if part.strip()}
    return {_normalise_dist(d) for d in allowed | {CORE_DISTRIBUTION}}


def _normalise_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.lru_cache(maxsize=None)
def _discover(kind: str, allowed: frozenset[str] | None) -> tuple[ComponentInfo, ...]:
    found = []
    for name, value, dist, version, load in _iter_entry_points(GROUPS[kind]):
        if allowed is not None and _normalise_dist(dist) not in allowed:
            continue
        found.append(ComponentInfo(kind, name, value, dist, version, load))
    return tuple(sorted(found, key=lambda info: (info.name, info.distribution)))


def clear_cache() -> None:
    """Forget discovered entry points (after ``pip install`` in a running process, or in tests)."""
    _discover.cache_clear()


def list_components(kind: str | None = None) -> list[ComponentInfo]:
    """Installed components (of one kind, or all), from metadata only, plus test overrides."""
    kinds = [_check_kind(kind)] if kind else list(KINDS)
    allowed = allowed_distributions()
    frozen = frozenset(allowed) if allowed is not None else None
    out: list[ComponentInfo] = []
    for k in kinds:
        overridden = {n for (ok, n) in _OVERRIDES if ok == k}
        out.extend(info for info in _discover(k, frozen) if info.name not in overridden)
        for (ok, n), cls in _OVERRIDES.items():
            if ok == k:
                out.append(ComponentInfo(k, n, f"{cls.__module__}:{cls.__qualname__}", "<override>", "-",
                                         lambda cls=cls: cls))
    return sorted(out, key=lambda info: (KINDS.index(info.kind), info.name, info.distribution))


def _check_kind(kind: str) -> str:
    if kind not in GROUPS:
        # Accept the plural group spelling too ("datasets").
        singular = kind[:-1] if kind.endswith("s") else kind
        if singular in GROUPS:
            return singular
        raise RegistryError(f"unknown component kind {kind!r}; kinds are: {', '.join(KINDS)}")
    return kind


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

_OVERRIDES: dict[tuple[str, str], type] = {}


def _last_line(error: BaseException) -> str:
    """The innermost cause as one line, e.g. ``ModuleNotFoundError: No module named 'einops'``."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = f"{type(error).__name__}: {error}".strip().splitlines()
    return text[-1] if text else type(error).__name__


def get_component(kind: str, name: str, provider: str | None = None) -> type:
    """Import and return the component class registered as ``name`` for ``kind``.

    Raises one of the :class:`RegistryError` subclasses with a message for the user.
    """
    kind = _check_kind(kind)
    if (kind, name) in _OVERRIDES and provider in (None, "<override>"):
        return _OVERRIDES[(kind, name)]

    candidates = [info for info in list_components(kind) if info.name == name]
    if provider is not None:
        matching = [c for c in candidates if _normalise_dist(c.distribution) == _normalise_dist(provider)]
        if not matching and candidates:
            raise UnknownComponentError(
                f"{kind} {name!r} is not provided by {provider!r}; it is provided by: "
                + ", ".join(c.provider for c in candidates)
            )
        candidates = matching
    if not candidates:
        raise _not_found(kind, name)
    if len(candidates) > 1:
        raise AmbiguousComponentError(
            f"{kind} {name!r} is provided by more than one package: "
            + ", ".join(c.provider for c in candidates)
            + f". Pick one in the recipe with `provider:`, e.g. {{name: {name}, provider: "
            f"{candidates[0].distribution}}}."
        )
    info = candidates[0]
    try:
        obj = info.loader()
    except Exception as error:  # noqa: BLE001 - any import failure becomes a clear message
        raise ComponentImportError(
            f"{kind} {name!r} is installed ({info.provider}, entry point {info.value}) but failed to "
            f"import: {_last_line(error)}. Run with --debug (or SCENETOK_DEBUG=1) for the full traceback."
        ) from error
    check_component_class(kind, name, obj, info)
    return obj


def check_component_class(kind: str, name: str, obj: Any, info: ComponentInfo | None = None) -> None:
    """Verify that ``obj`` is a proper component class of ``kind`` (subclass, ``Config``, presets)."""
    import scenetok.interfaces as interfaces  # lazy: imports torch; only when a component is loaded

    base = getattr(interfaces, _BASE_CLASSES[kind])
    where = f" ({info.provider}, entry point {info.value})" if info else ""
    if not isinstance(obj, type) or not issubclass(obj, base):
        raise BadEntryPointError(
            f"{kind} {name!r}{where} is {obj!r}, which is not a subclass of scenetok.interfaces."
            f"{base.__name__}"
        )
    config_cls = obj.__dict__.get("Config") or getattr(obj, "Config", None)
    if config_cls is None or not dataclasses.is_dataclass(config_cls):
        raise BadEntryPointError(f"{kind} {name!r}{where} has no nested `Config` dataclass")
    if not NAME_PATTERN.match(name):
        raise BadEntryPointError(f"{kind} name {name!r}{where} must match {NAME_PATTERN.pattern}")
    presets = getattr(obj, "presets", {})
    if not isinstance(presets, dict):
        raise BadEntryPointError(f"{kind} {name!r}{where}: `presets` must be a dict of config overrides")


def _not_found(kind: str, name: str) -> RegistryError:
    installed = [info.name for info in list_components(kind)]
    for other in KINDS:
        if other != kind and any(info.name == name for info in list_components(other)):
            return WrongKindError(f"{name!r} is a {other}, not a {kind}")
    if name in KNOWN_PLUGINS:
        known_kind, package = KNOWN_PLUGINS[name]
        if known_kind == kind:
            hint = ""
            allowed = allowed_distributions()
            if allowed is not None and _normalise_dist(package) not in allowed:
                hint = f" (or it is installed but hidden by SCENETOK_LOAD_PLUGINS={os.environ['SCENETOK_LOAD_PLUGINS']!r})"
            return NotInstalledError(
                f"{kind} {name!r} is provided by {package}, which is not installed{hint}: "
                f"pip install {package}"
            )
    close = difflib.get_close_matches(name, installed, n=3, cutoff=0.6)
    message = f"{kind} {name!r} is not installed."
    if close:
        message += " Did you mean " + " or ".join(repr(c) for c in close) + "?"
    message += f" Installed {kind}s: {', '.join(sorted(set(installed))) or 'none'}."
    if not installed:
        message += " Is scenetok installed? (pip install -e .)"
    message += " List everything with: scenetok plugins"
    return UnknownComponentError(message)


@contextlib.contextmanager
def override(kind: str, name: str, cls: type) -> Iterator[type]:
    """Register ``cls`` as ``name`` for ``kind`` inside a ``with`` block (tests, notebooks)."""
    kind = _check_kind(kind)
    check_component_class(kind, name, cls)
    key = (kind, name)
    previous = _OVERRIDES.get(key)
    _OVERRIDES[key] = cls
    try:
        yield cls
    finally:
        if previous is None:
            _OVERRIDES.pop(key, None)
        else:
            _OVERRIDES[key] = previous


def provider_of(kind: str, name: str, provider: str | None = None) -> ComponentInfo | None:
    """Metadata of the component that ``get_component(kind, name, provider)`` would load (no
    import); ``None`` for a test override or an unknown name."""
    if (kind, name) in _OVERRIDES and provider in (None, "<override>"):
        return None
    for info in list_components(kind):
        if info.name == name and (provider is None or _normalise_dist(info.distribution) == _normalise_dist(provider)):
            return info
    return None
