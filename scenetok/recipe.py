"""Recipes: YAML files that choose components by name and configure them.

A recipe is data, never code: components are picked by registered *name* (no ``_target_``, no
import paths). Loading runs in two phases:

1. **Compose**: read YAML, follow ``extends`` (chains, paths relative to the file, cycles
   detected), expand shorthands (``sampler: flow`` = ``{name: flow}``), apply dotted command-line
   overrides (``decoder.depth=4``). Overrides are applied name-first: every ``section.name=...``
   (or whole-section) override before the other keys, so their order on the command line does
   not matter. When a component's ``name`` changes (in a child recipe or an override) the keys
   of the old node are *carried over* provisionally; validation keeps those the new component's
   ``Config`` declares with a value valid for it and drops the rest, and one note lists both.
2. **Validate**: check top-level keys, resolve every component through the registry, build its
   typed ``Config`` (defaults < ``preset`` < recipe fields) with omegaconf's strict structured
   configs, build the core sections (``model``, ``train``, ``eval``, ``render``), then run
   cross-component checks. *All* errors are collected before failing; each names the file and the
   dotted key.

The resolved recipe (every default filled in, plus which package and version provided each
component) is what gets written into run directories and checkpoints.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from scenetok import registry
from scenetok.hookspecs import call_hook
from scenetok.sections import CORE_SECTIONS, SCENEGEN_SECTIONS

log = logging.getLogger(__name__)

RECIPE_VERSION = 1

#: Recipe section -> component kind. Two sections may share a kind (context/target compressors).
COMPONENT_SECTIONS: dict[str, str] = {
    "image_compressor": "image_compressor",
    "target_image_compressor": "image_compressor",
    "token_compressor": "token_compressor",
    "decoder": "decoder",
    "sampler": "sampler",
    "dataset": "dataset",
    "scene_generator": "scene_generator",
}
#: Sections that a recipe may leave out.
OPTIONAL_SECTIONS = {"target_image_compressor", "scene_generator"}
#: Sections a SceneGen recipe (one with a ``scene_generator``) does not declare: they come from
#: its frozen SceneTok run (``scenegen.scenetok_run``); its ``sampler`` is the token sampler.
FROZEN_SCENETOK_SECTIONS = {"image_compressor", "target_image_compressor", "token_compressor", "decoder"}

#: Plain top-level keys.
SCALAR_KEYS: dict[str, type | tuple[type, ...]] = {
    "recipe_version": int,
    "seed": int,
    "description": str,
}
#: Keys a component node reserves for the framework; everything else belongs to its Config.
RESERVED_KEYS = ("name", "preset", "provider")
#: Written by `Recipe.resolved()`; informational when a resolved recipe is loaded again.
PROVENANCE_KEY = "provenance"

COMMAND_LINE = "<command line>"

#: Limits on what a recipe file may hold. A real recipe is a few KB with a handful of levels; the
#: limits stop hostile or broken files (YAML alias bombs, ``extends: /dev/zero``, deep nesting)
#: before they cost minutes or gigabytes.
MAX_RECIPE_BYTES = 1_000_000
#: Values after alias expansion (a "billion laughs" file expands to ~10^9 from a few hundred bytes).
MAX_RECIPE_NODES = 100_000
#: Nesting depth of mappings/lists.
MAX_RECIPE_DEPTH = 32
#: Files in one ``extends`` chain.
MAX_EXTENDS_DEPTH = 32


class RecipeError(ValueError):
    """A recipe failed to load or validate. ``errors`` holds one message per problem."""

    def __init__(self, errors: list[str], source: str | None = None):
        self.errors = list(errors)
        self.source = source
        head = f"{source}: " if source else ""
        if len(errors) == 1:
            super().__init__(head + errors[0])
        else:
            body = "\n".join(f"  - {e}" for e in errors)
            super().__init__(f"{head}{len(errors)} problems in the recipe:\n{body}")


# ----------------------------------------------------------------------------------------------
# Phase 1: compose
# ----------------------------------------------------------------------------------------------


@dataclass
class Swap:
    """A component node whose ``name`` changed while composing.

    Attributes:
        names: the names in the order they were chosen (``["flow", "ddpm"]``).
        carried: keys inherited from the old node(s) and not set again since; validation keeps
            those the new component accepts and drops the others.
    """

    names: list[str]
    carried: set[str] = field(default_factory=set)


@dataclass
class ComposedRecipe:
    """The merged, not yet validated recipe with per-key provenance."""

    source: str
    data: dict[str, Any]
    origins: dict[str, str] = field(default_factory=dict)  # dotted key -> file (or command line)
    notes: list[str] = field(default_factory=list)
    swaps: dict[str, Swap] = field(default_factory=dict)  # section -> its component swap, if any

    def origin(self, dotted: str) -> str:
        """The file that set ``dotted`` (or its closest parent)."""
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            key = ".".join(parts[:n])
            if key in self.origins:
                return self.origins[key]
        return self.source


def _expand_shorthand(section: str, value: Any) -> Any:
    if section in COMPONENT_SECTIONS and isinstance(value, str):
        return {"name": value}
    return value


def _record_origins(value: Any, prefix: str, origin: str, origins: dict[str, str]) -> None:
    origins[prefix] = origin
    if isinstance(value, Mapping):
        for key, sub in value.items():
            _record_origins(sub, f"{prefix}.{key}", origin, origins)


def _forget_origins(prefix: str, origins: dict[str, str]) -> None:
    for key in [k for k in origins if k == prefix or k.startswith(prefix + ".")]:
        del origins[key]


def _merge_node(base: Any, update: Any, prefix: str, origin: str, composed: ComposedRecipe) -> Any:
    """Deep-merge ``update`` into ``base`` (dicts merge, everything else replaces)."""
    if isinstance(base, dict) and isinstance(update, Mapping):
        out = dict(base)
        for key, value in update.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if key in out:
                out[key] = _merge_node(out[key], value, dotted, origin, composed)
            else:
                out[key] = copy.deepcopy(value)
                _record_origins(value, dotted, origin, composed.origins)
        return out
    _forget_origins(prefix, composed.origins)
    _record_origins(update, prefix, origin, composed.origins)
    return copy.deepcopy(update)


def _merge_section(composed: ComposedRecipe, section: str, value: Any, origin: str) -> None:
    value = _expand_shorthand(section, value)
    data = composed.data
    old = data.get(section)
    swap = composed.swaps.get(section)
    if (
        section in COMPONENT_SECTIONS
        and isinstance(old, dict)
        and isinstance(value, Mapping)
        and "name" in value
        and "name" in old
        and value["name"] != old["name"]
    ):
        # A different component. Its schema may share fields with the old one (a plugin Config
        # subclassing a core one, or ddpm and flow sharing the timestep fields), so the old keys
        # are carried provisionally; `validate` keeps those the new Config accepts.
        carried = {k for k in old if k not in value and k != "name"}
        names = swap.names if swap else [str(old["name"])]
        composed.swaps[section] = Swap(names=[*names, str(value["name"])], carried=carried)
        old = {k: v for k, v in old.items() if k in carried or k == "name"}
        # Keys the new node sets are new values for a new schema: replaced, never deep-merged.
        for key in value:
            if key in old and key != "name":
                del old[key]
                _forget_origins(f"{section}.{key}", composed.origins)
    elif swap is not None and isinstance(value, Mapping):
        swap.carried -= set(value)  # set explicitly after the swap: validated strictly
    data[section] = _merge_node(old, value, section, origin, composed)


def _check_bounds(data: Any, where: str) -> None:
    """Refuse values that nest deeper than :data:`MAX_RECIPE_DEPTH`, expand (YAML aliases counted
    once per use) to more than :data:`MAX_RECIPE_NODES` values, or contain themselves (a
    self-referencing alias). Shared nodes are measured once, so this is linear in the file."""
    measured: dict[int, tuple[int, int]] = {}  # id -> (expanded size, height)
    open_nodes: set[int] = set()

    def measure(value: Any, depth: int) -> tuple[int, int]:
        if not isinstance(value, (dict, list)):
            return 1, 0
        key = id(value)
        if key in open_nodes:
            raise RecipeError([f"{where}: a YAML alias refers to itself (a recursive value)"])
        if key not in measured:
            if depth > MAX_RECIPE_DEPTH:
                raise RecipeError([f"{where}: nested deeper than {MAX_RECIPE_DEPTH} levels"])
            open_nodes.add(key)
            children = value.values() if isinstance(value, dict) else value
            size, height = 1, 0
            for child in children:
                child_size, child_height = measure(child, depth + 1)
                size += child_size
                height = max(height, child_height + 1)
                if size > MAX_RECIPE_NODES:
                    raise RecipeError([f"{where}: more than {MAX_RECIPE_NODES:,} values after expanding YAML "
                                       "aliases (an alias bomb?)"])
            open_nodes.discard(key)
            measured[key] = (size, height)
        size, height = measured[key]
        if depth + height > MAX_RECIPE_DEPTH:
            raise RecipeError([f"{where}: nested deeper than {MAX_RECIPE_DEPTH} levels"])
        return size, height

    measure(data, 0)


def load_yaml_bounded(text: str, where: str) -> Any:
    """``yaml.safe_load`` with the recipe limits (size, nesting, alias expansion, recursion); every
    failure is a one-line :class:`RecipeError` naming ``where``."""
    if len(text) > MAX_RECIPE_BYTES:
        raise RecipeError([f"{where}: {len(text):,} characters, more than a recipe may hold ({MAX_RECIPE_BYTES:,})"])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RecipeError([f"{where}: not valid YAML: {error}"]) from None
    except RecursionError:
        raise RecipeError([f"{where}: nested deeper than {MAX_RECIPE_DEPTH} levels"]) from None
    _check_bounds(data, where)
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    """A recipe file's top-level mapping; only regular files up to :data:`MAX_RECIPE_BYTES`."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise RecipeError([f"recipe file not found: {path}"]) from None
    except OSError as error:
        raise RecipeError([f"{path}: cannot be read: {error.strerror or error}"]) from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file (a device, pipe or socket)"
        raise RecipeError([f"{path}: a recipe must be a regular YAML file; this is {kind}"])
    if info.st_size > MAX_RECIPE_BYTES:
        raise RecipeError([f"{path}: {info.st_size:,} bytes, more than a recipe may hold ({MAX_RECIPE_BYTES:,})"])
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_RECIPE_BYTES + 1)  # the file may grow after stat
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RecipeError([f"{path}: not UTF-8 text ({error.reason} at byte {error.start})"]) from None
    except OSError as error:
        raise RecipeError([f"{path}: cannot be read: {error.strerror or error}"]) from None
    data = load_yaml_bounded(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError([f"{path}: a recipe must be a mapping at the top level, got {type(data).__name__}"])
    return data


#: Public name of the bounded reader (used for the ``recipe.yaml`` of a run directory).
read_recipe_file = _read_yaml


def _compose_file(path: Path, composed: ComposedRecipe, stack: tuple[Path, ...]) -> None:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise RecipeError([f"`extends` cycle: {chain}"])
    if len(stack) >= MAX_EXTENDS_DEPTH:
        raise RecipeError([f"{path}: `extends` chain longer than {MAX_EXTENDS_DEPTH} files"])
    data = _read_yaml(path)
    extends = data.pop("extends", None)
    if extends is not None:
        bases = [extends] if isinstance(extends, str) else extends
        if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
            raise RecipeError([f"{path}: extends: must be a path or a list of paths, got {extends!r}"])
        for base in bases:
            base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
            if not base_path.exists():
                raise RecipeError([f"{path}: extends: {base!r} not found (looked for {base_path})"])
            _compose_file(base_path, composed, (*stack, path))
    for section, value in data.items():
        _merge_section(composed, str(section), value, str(path))


def parse_override(text: str) -> tuple[str, Any]:
    """``"decoder.depth=4"`` -> ``("decoder.depth", 4)``; values are parsed as YAML scalars/flow."""
    if "=" not in text:
        raise RecipeError([f"override {text!r} must look like key.subkey=value"])
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise RecipeError([f"override {text!r} has an empty key"])
    value = load_yaml_bounded(raw, f"override {key}") if raw.strip() else ""
    return key, value


def _is_name_key(key: str) -> bool:
    """Whether a dotted key chooses a component (``sampler.name``) or replaces a section (``sampler``)."""
    parts = key.strip().split(".")
    return len(parts) == 1 or parts[1:] == ["name"]


def set_values(composed: ComposedRecipe, values: Iterable[tuple[str, Any]], origin: str = COMMAND_LINE) -> None:
    """Set dotted keys (``("decoder.depth", 4)``) name-first, stable otherwise, so that
    ``sampler.power=2 sampler.name=cosflow`` means the same as ``sampler.name=cosflow sampler.power=2``.
    ``origin`` is what errors about these keys name as their file."""
    for key, value in sorted(values, key=lambda item: 0 if _is_name_key(item[0]) else 1):
        parts = key.split(".")
        nested: Any = value
        for part in reversed(parts[1:]):
            nested = {part: nested}
        _merge_section(composed, parts[0], nested, origin)


def apply_overrides(composed: ComposedRecipe, overrides: Iterable[str]) -> None:
    """Apply ``key=value`` overrides (see :func:`set_values` for the order)."""
    set_values(composed, [parse_override(text) for text in overrides])


def apply_override(composed: ComposedRecipe, text: str) -> None:
    apply_overrides(composed, [text])


RECIPES_GROUP = "scenetok.recipes"
#: Sub-folder of a recipes folder holding ablation files (:mod:`scenetok.ablate`).
ABLATIONS_FOLDER = "ablations"


def list_recipes() -> dict[str, tuple[Path, str]]:
    """Shipped recipes, core's and plugins' alike: ``{name: (file, distribution)}``.

    A distribution ships recipes by pointing an entry point of the ``scenetok.recipes`` group at a
    package folder of YAML files (core: ``scenetok.recipes``); a recipe's name is its path inside
    that folder without ``.yaml`` (``quickstart``, ``re10k/scenetok``). A name shipped twice keeps
    the first and logs the clash.
    """
    import importlib.metadata as metadata
    import importlib.util

    found: dict[str, tuple[Path, str]] = {}
    for ep in sorted(metadata.entry_points(group=RECIPES_GROUP),
                     key=lambda e: (e.dist is None or e.dist.name != registry.CORE_DISTRIBUTION, e.name)):
        distribution = ep.dist.name if ep.dist is not None else "<unknown>"
        try:  # the folder of a (namespace) package, found without importing it
            spec = importlib.util.find_spec(ep.value)
            folders = [Path(f) for f in (spec.submodule_search_locations or [])] if spec else []
        except (ImportError, ValueError) as error:
            folders, spec = [], error
        if not folders:
            log.warning("recipes of %s (%s) are not a readable package folder and are skipped (%s)",
                        distribution, ep.value, spec)
            continue
        folder = folders[0]
        for path in sorted(folder.rglob("*.yaml")):
            name = path.relative_to(folder).with_suffix("").as_posix()
            if name.startswith(f"{ABLATIONS_FOLDER}/"):
                continue  # ablation files and their bases are for `scenetok ablate`, not recipes
            if name in found:
                log.warning("recipe %r is shipped by %s and %s; using %s's", name, found[name][1],
                            distribution, found[name][1])
                continue
            found[name] = (path, distribution)
    return found


def find_recipe(path_or_name: str | Path) -> Path:
    """A recipe file: ``path_or_name`` itself when it is a file, else the shipped recipe of that
    name (see :func:`list_recipes`). Raises :class:`RecipeError` naming the close matches."""
    path = Path(path_or_name)
    if path.is_file() or path.suffix in (".yaml", ".yml") or path.exists():
        return path
    shipped = list_recipes()
    name = str(path_or_name)
    if name in shipped:
        return shipped[name][0]
    raise RecipeError([f"recipe {name!r} is neither a file nor a shipped recipe.{_did_you_mean(name, shipped)} "
                       f"Shipped recipes: {', '.join(shipped) or 'none'} (see `scenetok recipes`)"])


def compose(path: str | Path, overrides: Iterable[str] = ()) -> ComposedRecipe:
    """Phase 1: read ``path`` (a file or a shipped recipe's name) with its ``extends`` chain and
    apply ``overrides``."""
    path = find_recipe(path)
    composed = ComposedRecipe(source=str(path), data={})
    _compose_file(path, composed, ())
    apply_overrides(composed, overrides)
    return composed


def compose_dict(data: Mapping[str, Any], source: str = "<dict>", overrides: Iterable[str] = ()) -> ComposedRecipe:
    """Phase 1 for an in-memory recipe (e.g. the one stored in a checkpoint)."""
    composed = ComposedRecipe(source=source, data={})
    _check_bounds(dict(data), source)
    for section, value in data.items():
        if section == "extends":
            raise RecipeError([f"{source}: `extends` is only allowed in recipe files"])
        _merge_section(composed, str(section), value, source)
    apply_overrides(composed, overrides)
    return composed


# ----------------------------------------------------------------------------------------------
# Phase 2: validate and build typed configs
# ----------------------------------------------------------------------------------------------


@dataclass
class ComponentSpec:
    """A validated component node."""

    section: str
    kind: str
    name: str
    cls: type
    config: Any
    preset: str | None
    info: registry.ComponentInfo | None

    def provenance(self) -> dict[str, str]:
        if self.info is None:
            return {"name": self.name}
        return {"name": self.name, "distribution": self.info.distribution, "version": self.info.version,
                "entry_point": self.info.value}


@dataclass
class Recipe:
    """A validated recipe: typed configs for every component and core section."""

    source: str
    data: dict[str, Any]
    components: dict[str, ComponentSpec]
    sections: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    seed: int = 0

    def __getitem__(self, section: str) -> Any:
        if section in self.components:
            return self.components[section]
        return self.sections[section]

    def component(self, section: str) -> ComponentSpec | None:
        return self.components.get(section)

    def resolved(self) -> dict[str, Any]:
        """The full recipe with every default filled in, plus provenance; loads back as is."""
        out: dict[str, Any] = {"recipe_version": RECIPE_VERSION, "seed": self.seed}
        if "description" in self.data:
            out["description"] = self.data["description"]
        for section, spec in self.components.items():
            node = {"name": spec.name}
            if spec.info is not None and spec.info.distribution not in ("<override>",):
                # Recorded so that a run keeps loading the same component when another package
                # registering the same name is installed later.
                node["provider"] = spec.info.distribution
            node.update(_config_to_plain(spec.config))
            out[section] = node
        for section, config in self.sections.items():
            out[section] = _config_to_plain(config)
        out[PROVENANCE_KEY] = {section: spec.provenance() for section, spec in self.components.items()}
        return out

    def dump(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(yaml.safe_dump(self.resolved(), sort_keys=False))
        tmp.replace(path)
        return path


def _config_to_plain(config: Any) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)  # type: ignore[return-value]


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(options), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def build_config(config_cls: type, values: Mapping[str, Any], prefix: str, errors: list[str],
                 defaults: Any | None = None, origin: Any = None) -> Any | None:
    """Strictly merge ``values`` into ``config_cls`` defaults, collecting one error per bad key.

    Errors read ``"<file>: <prefix>.<key>: <problem>"``; ``origin(dotted_key)`` names the file that
    set a key (default: no file).
    """

    def where(key: str | None = None) -> str:
        dotted = f"{prefix}.{key}" if key else prefix
        return f"{origin(dotted)}: {dotted}" if origin else dotted

    try:
        merged = OmegaConf.structured(defaults if defaults is not None else config_cls)
    except (OmegaConfBaseException, ValueError, TypeError) as error:
        errors.append(f"{where()}: cannot build the config schema {config_cls.__qualname__}: {_first_line(error)}")
        return None
    ok = True
    known = {f.name for f in dataclasses.fields(config_cls)}
    for key, value in values.items():
        if key not in known:
            errors.append(f"{where(key)}: unknown key.{_did_you_mean(str(key), known)} "
                          f"Valid keys: {', '.join(sorted(known))}")
            ok = False
            continue
        try:
            merged = OmegaConf.merge(merged, {key: value})
        except OmegaConfBaseException as error:
            errors.append(f"{where(key)}: {_first_line(error)} (got {value!r})")
            ok = False
    if not ok:
        return None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        errors.extend(f"{where(key)}: required value is missing" for key in missing)
        return None
    try:
        return OmegaConf.to_object(merged)
    except (ValueError, TypeError, OmegaConfBaseException) as error:
        message = _first_line(error)
        key = _key_named_in(message, prefix, known, values, origin)
        errors.append(f"{where(key)}: {message}" if key else f"{where()}: {message}")
    return None


def _carry_problem(cls: type, key: str, value: Any, preset: str | None) -> str | None:
    """Why ``key: value`` (inherited from a swapped-out component) cannot carry over to ``cls``,
    or ``None`` if the new component accepts it."""
    if key == "preset":
        return None if value in getattr(cls, "presets", {}) else "no such preset"
    if key == "provider":
        return "it chose the distribution of the old component"
    if key not in {f.name for f in dataclasses.fields(cls.Config)}:
        return "not a field"
    problems: list[str] = []
    try:
        defaults = cls.default_config(preset) if preset else None
    except (ValueError, TypeError, KeyError):
        defaults = None
    if build_config(cls.Config, {key: value}, key, problems, defaults=defaults) is None:
        return f"{value!r} not valid"
    return None


def _resolve_swap(section: str, swap: Swap, cls: type, node: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Keep the carried keys of a swapped component that ``cls`` accepts; returns the node
    without the others and the note listing both."""
    kept: list[str] = []
    dropped: list[str] = []
    preset = node.get("preset")
    if "preset" in swap.carried and _carry_problem(cls, "preset", preset, None) is not None:
        preset = None
    for key in [k for k in node if k in swap.carried]:
        problem = _carry_problem(cls, key, node[key], preset)
        if problem is None:
            kept.append(key)
        else:
            dropped.append(f"{key} ({problem})")
    bad = {d.split(" ", 1)[0] for d in dropped}
    note = (f"{section}: {' -> '.join(map(repr, swap.names))}: kept: {', '.join(kept) or 'none'}; "
            f"dropped: {', '.join(dropped) or 'none'}")
    return {k: v for k, v in node.items() if k not in bad}, note


def _key_named_in(message: str, prefix: str, known: set[str], values: Mapping[str, Any], origin: Any) -> str | None:
    """The config key a ``__post_init__`` error is about, so the error names the file (or the
    command line) that set that key rather than the first file that opened the section.

    Keys named in the message (``train.decay must be ...``, ``heads must divide width``) that the
    recipe set are candidates; the one set last wins (the command line, then the child recipe,
    then its parents: the most recent change is the likely culprit), then the first named."""
    import re

    named = [key for key in known if key in values and re.search(
        rf"(?<![\w]){re.escape(prefix)}\.{re.escape(key)}\b|(?<![\w.]){re.escape(key)}\b", message)]
    if not named:
        return None
    named.sort(key=lambda key: message.find(key))
    # ComposedRecipe.origins is in the order keys were (last) set: overrides come last, a child's
    # keys after its parents'.
    order = list(getattr(getattr(origin, "__self__", None), "origins", {}))
    recency = {key: order.index(f"{prefix}.{key}") for key in named if f"{prefix}.{key}" in order}
    if recency:
        return max(recency, key=lambda key: recency[key])
    return named[0]


def validate(composed: ComposedRecipe, *, log_notes: bool = True) -> Recipe:
    """Phase 2: build every typed config, then run the recipe checks registered through the
    ``scenetok_validate_recipe`` hook: core's cross-component check (:mod:`scenetok.core_hooks`)
    and any plugin's.

    Swapped components keep the carried keys their ``Config`` accepts (see :class:`Swap`); the
    notes saying what was kept and dropped are logged once here (``log_notes``) and returned in
    ``Recipe.notes``. Raises :class:`RecipeError` listing *every* problem found.
    """
    errors: list[str] = []
    data = dict(composed.data)  # swaps may drop keys: never change the composed recipe
    notes = list(composed.notes)

    def where(dotted: str) -> str:
        return f"{composed.origin(dotted)}: {dotted}"

    known_top = set(COMPONENT_SECTIONS) | set(CORE_SECTIONS) | set(SCALAR_KEYS) | {PROVENANCE_KEY}
    for key, value in data.items():
        if key not in known_top:
            errors.append(f"{where(key)}: unknown top-level key.{_did_you_mean(key, known_top)}")
        elif key in SCALAR_KEYS and not isinstance(value, SCALAR_KEYS[key]):
            errors.append(f"{where(key)}: must be {SCALAR_KEYS[key].__name__}, got {value!r}")  # type: ignore[union-attr]
    version = data.get("recipe_version", RECIPE_VERSION)
    if isinstance(version, int) and version != RECIPE_VERSION:
        errors.append(f"{where('recipe_version')}: this scenetok reads recipe_version {RECIPE_VERSION}, got {version}")

    scenegen = data.get("scene_generator") is not None
    if data.get("scenegen") is not None and not scenegen:
        errors.append(f"{where('scenegen')}: only a SceneGen recipe (one with a `scene_generator`) has this section")
    optional = OPTIONAL_SECTIONS | (FROZEN_SCENETOK_SECTIONS if scenegen else set())
    components: dict[str, ComponentSpec] = {}
    for section, kind in COMPONENT_SECTIONS.items():
        node = data.get(section)
        if node is None:
            if section not in optional:
                errors.append(f"{composed.source}: {section}: missing (choose a {kind} by name, e.g. `{section}: {{name: ...}}`)")
            continue
        if not isinstance(node, Mapping):
            errors.append(f"{where(section)}: must be a mapping with a `name`, got {node!r}")
            continue
        name = node.get("name")
        if not isinstance(name, str):
            errors.append(f"{where(section)}.name: required (the registered {kind} name)")
            continue
        for bad in ("_target_", "target", "class", "module"):
            if bad in node:
                errors.append(f"{where(section + '.' + bad)}: recipes choose components by name only; "
                              "import paths are never read from a recipe")
        provider = node.get("provider")
        if provider is not None and not isinstance(provider, str):
            errors.append(f"{where(section + '.provider')}: must be a distribution name, got {provider!r}")
            continue
        if node.get("preset") is not None and not isinstance(node.get("preset"), str):
            errors.append(f"{where(section + '.preset')}: must be a preset name, got {node.get('preset')!r}")
            continue
        try:
            cls = registry.get_component(kind, name, provider=provider)
        except registry.RegistryError as error:
            errors.append(f"{where(section + '.name')}: {error}")
            continue
        swap = composed.swaps.get(section)
        if swap is not None:
            node, note = _resolve_swap(section, swap, cls, node)
            data[section] = node
            if swap.names[0] != name or "dropped: none" not in note:
                notes.append(note)
        preset = node.get("preset")
        if preset is not None and preset not in getattr(cls, "presets", {}):
            errors.append(
                f"{where(section + '.preset')}: {kind} {name!r} has no preset {preset!r}; "
                f"available: {', '.join(sorted(cls.presets)) or 'none'}"
            )
            continue
        values = {k: v for k, v in node.items() if k not in RESERVED_KEYS}
        try:
            defaults = cls.default_config(preset) if preset else None
        except (ValueError, TypeError, KeyError) as error:
            errors.append(f"{where(section + '.preset')}: {_first_line(error)}")
            continue
        config = build_config(cls.Config, values, section, errors, defaults=defaults, origin=composed.origin)
        if config is not None:
            components[section] = ComponentSpec(section, kind, name, cls, config, preset,
                                                registry.provider_of(kind, name, provider))

    sections: dict[str, Any] = {}
    for section, config_cls in CORE_SECTIONS.items():
        if section in SCENEGEN_SECTIONS and not scenegen:
            continue
        node = data.get(section) or {}
        if not isinstance(node, Mapping):
            errors.append(f"{where(section)}: must be a mapping, got {node!r}")
            continue
        config = build_config(config_cls, node, section, errors, origin=composed.origin)
        if config is not None:
            sections[section] = config

    recipe = Recipe(source=composed.source, data=data, components=components, sections=sections,
                    notes=notes,
                    seed=data["seed"] if isinstance(data.get("seed"), int) else 0)  # a bad seed is in errors
    if not errors:
        call_hook("scenetok_validate_recipe", recipe=recipe, errors=errors)
    if errors:
        raise RecipeError(errors, source=None)
    if log_notes:  # callers that print the notes themselves (`scenetok validate`) turn this off
        for note in notes:
            log.info(note)
    return recipe


def load_recipe(path: str | Path, overrides: Iterable[str] = (), *, log_notes: bool = True) -> Recipe:
    """Compose and validate a recipe file or shipped recipe name (the one call most code needs);
    ``log_notes=False`` leaves reporting the notes (dropped keys) to the caller."""
    return validate(compose(path, overrides), log_notes=log_notes)


def upgrade_stored_recipe(data: Mapping[str, Any]) -> dict[str, Any]:
    """A recipe stored in a checkpoint, brought to the current schema (the stored file is never
    changed). scenetok 0.1 kept the inference step count in ``sampler.steps`` and rendering
    settings in ``eval``; they now live in the one ``render`` section."""
    data = copy.deepcopy(dict(data))
    provenance = data.pop(PROVENANCE_KEY, None)
    if isinstance(provenance, dict):
        # Runs written before providers were recorded in the nodes: the provenance names the
        # distribution that provided each component, so a later name collision cannot change it.
        for section, origin in provenance.items():
            node = data.get(section)
            if isinstance(node, dict) and isinstance(origin, dict) and "provider" not in node \
                    and isinstance(origin.get("distribution"), str) and origin["distribution"] != "<override>" \
                    and origin.get("name") == node.get("name"):
                node["provider"] = origin["distribution"]
    render = data.setdefault("render", {})
    sampler = data.get("sampler", {})
    if isinstance(sampler, dict) and "steps" in sampler:
        steps = sampler.pop("steps")
        if not render.get("steps"):
            render["steps"] = steps
    if render.get("steps") == 0:  # 0.1's "the sampler's default"
        render.pop("steps")
    evaluation = data.get("eval", {})
    if isinstance(evaluation, dict):
        for key in ("steps", "strategy", "cfg_scale", "deterministic"):
            evaluation.pop(key, None)
    if "cfg_scale" in render:
        render["guidance"] = render.pop("cfg_scale")
    if render.get("window") == 0:
        render["window"] = None
    if isinstance(render.get("context_frames"), int) and render["context_frames"] < 0:
        render["context_frames"] = None
    return data


def load_recipe_dict(data: Mapping[str, Any], source: str = "<dict>", overrides: Iterable[str] = ()) -> Recipe:
    """Validate an in-memory recipe, e.g. the resolved recipe stored in a checkpoint."""
    return validate(compose_dict(data, source=source, overrides=overrides))
