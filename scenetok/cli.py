"""The ``scenetok`` command line.

This module imports only torch-free modules (registry, recipes, hooks); every command that needs
torch imports it inside its handler, so ``scenetok --help``, ``scenetok plugins`` and ``scenetok
recipes`` start in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from scenetok import __version__, registry
from scenetok.hookspecs import HookCallError, HookLoadError, call_hook, hook_plugin_status
from scenetok.recipe import RecipeError, list_recipes
from scenetok.registry import RegistryError
from scenetok.sections import CORE_SECTIONS

log = logging.getLogger("scenetok")

EPILOG = """\
examples:
  scenetok quickstart                         train + evaluate + render on procedural rooms (CPU)
  scenetok plugins                            list installed components
  scenetok recipes                            list the shipped recipes (core and plugins)
  scenetok validate quickstart sampler.name=ddpm
  scenetok train quickstart --run runs/qs train.steps=200
  scenetok eval runs/qs                       PSNR/SSIM/LPIPS vs baselines on held-out scenes
  scenetok render runs/qs --trajectory spline --frames 32 --out renders/
  scenetok ablate sampler --out runs/ablate-sampler --dry-run
  scenetok compare runs/a runs/b --out comparison/

A recipe is a YAML file or the name of a shipped one (`scenetok recipes`); any key can be
overridden as section.key=value after it.
"""


# ----------------------------------------------------------------------------------------------
# plugins
# ----------------------------------------------------------------------------------------------


def _normalise_plugins_args(args: argparse.Namespace) -> None:
    """``plugins sampler`` means ``plugins list sampler`` (the help says a kind filters the list),
    and kinds may be spelled in the plural everywhere (``plugins list samplers``)."""
    if args.action not in ("list", "show"):
        if args.name is not None:
            raise RegistryError(f"plugins: unknown action {args.action!r}; use `plugins [list] [KIND]` or "
                                "`plugins show KIND NAME`")
        args.action, args.kind, args.name = "list", args.action, args.kind
    if args.kind and args.kind not in CORE_SECTIONS:
        args.kind = registry._check_kind(args.kind)


def cmd_plugins(args: argparse.Namespace) -> int:
    _normalise_plugins_args(args)
    if args.action == "show":
        return _plugins_show(args)
    kinds = [args.kind] if args.kind else list(registry.KINDS)
    rows = []
    for kind in kinds:
        rows.extend(registry.list_components(kind))
    if args.pattern:
        import fnmatch

        rows = [r for r in rows if fnmatch.fnmatch(r.name, args.pattern)]
    checks: dict[tuple[str, str, str], str] = {}
    failed = False
    if args.check:
        for info in rows:
            try:
                cls = registry.get_component(info.kind, info.name, provider=info.distribution
                                             if info.distribution != "<override>" else None)
                _check_config_schema(cls)
                checks[(info.kind, info.name, info.distribution)] = "ok"
            except Exception as error:  # noqa: BLE001 - report every failure
                failed = True
                checks[(info.kind, info.name, info.distribution)] = f"FAIL: {error}"
                if args.debug:
                    log.exception("check of %s %s failed", info.kind, info.name)
    hooks = hook_plugin_status() if not args.kind else []
    if args.check and any(record["status"] != "ok" for record in hooks):
        failed = True
    if args.json:
        payload: dict[str, Any] = {
            "python": sys.executable,
            "scenetok": __version__,
            "load_plugins": os.environ.get("SCENETOK_LOAD_PLUGINS"),
            "components": {kind: [] for kind in kinds},
        }
        for info in rows:
            entry = info.as_dict()
            if args.check:
                entry["check"] = checks[(info.kind, info.name, info.distribution)]
            payload["components"][info.kind].append(entry)
        if not args.kind:
            payload["hooks"] = hooks  # {"name", "distribution", "value", "hooks", "status"}
        print(json.dumps(payload, indent=2))
        return 1 if failed else 0
    print(f"scenetok {__version__}  python: {sys.executable}")
    if "SCENETOK_LOAD_PLUGINS" in os.environ:
        print(f"SCENETOK_LOAD_PLUGINS={os.environ['SCENETOK_LOAD_PLUGINS']!r} (core + listed distributions only)")
    for kind in kinds:
        kind_rows = [r for r in rows if r.kind == kind]
        if not kind_rows and args.pattern:
            continue  # "(none installed)" would be wrong: some are, none matches the pattern
        print(f"\n{kind}s ({registry.GROUPS[kind]}):")
        if not kind_rows:
            print("  (none installed)")
        width = max([len(r.name) for r in kind_rows] + [4])
        pwidth = max([len(r.provider) for r in kind_rows] + [8])
        for info in kind_rows:
            line = f"  {info.name:<{width}}  {info.provider:<{pwidth}}  {info.value}"
            if args.check:
                line += "  " + checks[(info.kind, info.name, info.distribution)]
            print(line)
    if args.pattern and not rows:
        print(f"\nno installed component matches {args.pattern!r}")
    if hooks and not args.pattern:  # a name pattern selects components; hooks are listed unfiltered otherwise
        print("\nhook plugins (scenetok.hooks):")
        width = max([len(record["name"]) for record in hooks] + [4])
        pwidth = max([len(record["distribution"]) for record in hooks] + [8])
        for record in hooks:
            status = record["status"] if record["status"] != "ok" else ", ".join(record["hooks"]) or "(no hooks)"
            print(f"  {record['name']:<{width}}  {record['distribution']:<{pwidth}}  {record['value']}  {status}")
    if args.check:
        print("\nall components and hooks import and validate" if not failed else "\nsome components or hooks FAILED the check")
    return 1 if failed else 0


def _check_config_schema(cls: type) -> None:
    """The config must build as a strict omegaconf schema, and so must every preset."""
    from omegaconf import OmegaConf

    OmegaConf.structured(cls.Config)
    for preset in getattr(cls, "presets", {}):
        OmegaConf.structured(cls.default_config(preset))


def _plugins_show(args: argparse.Namespace) -> int:
    if args.kind in CORE_SECTIONS and not args.name:
        config_cls = CORE_SECTIONS[args.kind]
        print(f"recipe section {args.kind}: {config_cls.__module__}.{config_cls.__qualname__}")
        print("\n" + (config_cls.__doc__ or "").strip().splitlines()[0])
        _print_fields(config_cls)
        return 0
    if not args.kind or not args.name:
        print("usage: scenetok plugins show KIND NAME  |  scenetok plugins show "
              + "|".join(CORE_SECTIONS), file=sys.stderr)
        return 2
    cls = registry.get_component(args.kind, args.name)
    info = registry.provider_of(args.kind, args.name)
    print(f"{args.kind} {args.name}: {cls.__module__}.{cls.__qualname__}"
          + (f"  ({info.provider})" if info else ""))
    doc = (cls.__doc__ or "").strip()
    if doc:
        print("\n" + doc.splitlines()[0])
    _print_fields(cls.Config)
    presets = getattr(cls, "presets", {})
    if presets:
        print("\npresets:")
        for name, values in presets.items():
            print(f"  {name}: {values}")
    return 0


def _print_fields(config_cls: type) -> None:
    import dataclasses

    config_doc = _field_docs(config_cls)
    print("\nconfig fields:")
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = repr(f.default_factory())  # type: ignore[misc]
        else:
            default = "(required)"
        type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        print(f"  {f.name}: {type_name} = {default}")
        if f.name in config_doc:
            print(f"      {config_doc[f.name]}")


def _field_docs(config_cls: type) -> dict[str, str]:
    """Field descriptions from the Google-style ``Attributes:`` sections of the Config docstring
    and of the configs it inherits from (a subclass's own description wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(config_cls.__mro__):
        docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(config_cls: type) -> dict[str, str]:
    docs: dict[str, str] = {}
    current = None
    in_attrs = False
    for line in (config_cls.__dict__.get("__doc__") or "").splitlines():
        stripped = line.strip()
        if stripped.lower().startswith(("attributes:", "args:", "fields:")):
            in_attrs = True
            continue
        if not in_attrs or not stripped:
            continue
        head, sep, rest = stripped.partition(":")
        if sep and head.isidentifier() and " " not in head:
            current = head
            docs[current] = rest.strip()
        elif current:
            docs[current] += " " + stripped
    return docs


def cmd_recipes(args: argparse.Namespace) -> int:
    for name, (path, distribution) in list_recipes().items():
        print(f"  {name:<32} {distribution}" + (f"  {path}" if args.paths else ""))
    return 0


# ----------------------------------------------------------------------------------------------
# parser
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scenetok", description="SceneTok: compress posed images of a scene into a few hundred "
        "tokens and render any camera path from them.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"scenetok {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("plugins", help="list, check or describe installed components",
                       description="List the components installed through entry points (reads package "
                       "metadata only; nothing is imported unless --check or show).")
    p.add_argument("action", nargs="?", default="list",
                   help="'list' (default), 'show KIND NAME' for a component's config fields and presets, "
                   "or 'show SECTION' for a core recipe section (model, train, eval, render, scenegen); a "
                   "KIND here lists that kind (`scenetok plugins samplers`)")
    p.add_argument("kind", nargs="?", help="restrict to one kind (image_compressor, token_compressor, "
                   "decoder, sampler, dataset, scene_generator; the plural works too)")
    p.add_argument("name", nargs="?", help="component name (with 'show')")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--check", action="store_true", help="import every component and verify its class, "
                   "Config and presets; exit 1 on any failure")
    p.add_argument("--pattern", help="only names matching this glob, e.g. '*vae*'")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("recipes", help="list the shipped recipes (core and plugins), usable by name",
                       description="List the recipes shipped with scenetok and its plugins. Every command "
                       "that takes a RECIPE accepts such a name (e.g. `scenetok validate quickstart`) as "
                       "well as a file path. Reads package metadata and files only.")
    p.add_argument("--paths", action="store_true", help="also print each recipe's file")
    p.set_defaults(func=cmd_recipes)

    # Every other command (core's own and plugins') comes through the scenetok_add_commands hook.
    call_hook("scenetok_add_commands", subparsers=sub)  # each plugin's isolated (see call_hook)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except (HookLoadError, HookCallError) as error:  # strict plugin mode: a broken hook plugin is fatal
        if "--debug" in (argv if argv is not None else sys.argv[1:]):
            raise
        print(f"scenetok: error: {error}", file=sys.stderr)
        return 2
    # Overrides may follow options (`train R --run D a.b=1`): argparse leaves those unparsed.
    args, extra = parser.parse_known_args(argv)
    if extra:
        stray = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
        if stray:
            parser.error(f"unrecognized arguments: {' '.join(stray)}")
        args.overrides = list(args.overrides) + extra
    debug = args.debug or os.environ.get("SCENETOK_DEBUG", "") not in ("", "0")
    args.debug = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("scenetok: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug or not isinstance(error, expected_errors()):
            raise
        # backslashreplace: a message may quote undecodable input (lone surrogates from argv)
        message = _describe(error).encode("utf-8", "backslashreplace").decode("utf-8")
        print(f"scenetok: error: {message}", file=sys.stderr)
        return 2


#: Errors a user can cause and fix (bad recipe, data, checkpoint, disk, value), given as
#: ``(module, class name)`` so that the CLI imports nothing heavy: a class whose module was never
#: imported cannot have been raised.
_EXPECTED_LAZY = (
    ("scenetok.checkpoint", "CheckpointError"),
    ("scenetok.interfaces", "CorruptSampleError"),
    ("scenetok.train.loop", "TrainingAborted"),
    ("scenetok.train.loop", "NoUsableSamplesError"),
    ("safetensors", "SafetensorError"),
    ("yaml", "YAMLError"),
)


def expected_errors() -> tuple[type[BaseException], ...]:
    """Exception classes the CLI reports as one line with exit code 2 (``--debug``: traceback)."""
    found: list[type[BaseException]] = [RecipeError, RegistryError, HookLoadError, HookCallError,
                                        OSError, ValueError, RecursionError, MemoryError]
    for module_name, class_name in _EXPECTED_LAZY:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def _describe(error: BaseException) -> str:
    """The message of an expected error, with its class where the message alone is ambiguous."""
    import errno

    text = str(error).strip() or type(error).__name__
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return f"no space left on the device: {text}"
    if isinstance(error, (RecursionError, MemoryError)):
        return f"input too large or too deeply nested ({type(error).__name__}: {text[:200]})"
    if isinstance(error, (RecipeError, RegistryError, HookLoadError)) or type(error).__module__.startswith("scenetok"):
        return text
    return f"{type(error).__name__}: {text}" if not isinstance(error, (FileNotFoundError, ValueError)) else text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
