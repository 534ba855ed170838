"""The ``scenetok dl3dv`` command (a pluggy ``scenetok_add_commands`` hook) and the shipped recipes.

::

    scenetok dl3dv recipes                       # paths of the recipes shipped with this plugin
    scenetok dl3dv index --root data/dl3dv/test --benchmark dl3dv140.txt --out dl3dv_c16_32.json
    scenetok dl3dv split --from dl3dv_c16_32.json --out dl3dv140.txt   # hash list from an index

This module is imported whenever the ``scenetok`` CLI starts, so it imports nothing heavy at
module level (no torch).
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from scenetok.hookspecs import hookimpl


def recipe_names() -> list[str]:
    """Names of the recipes shipped with the plugin (``"dl3dv"``, ``"dl3dv_tiny"``)."""
    folder = resources.files("scenetok_plugin_dl3dv") / "recipes"
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def recipe_path(name: str = "dl3dv") -> Path:
    """Filesystem path of a shipped recipe, for ``scenetok train $(scenetok dl3dv recipes dl3dv)``
    or ``extends:`` in your own recipe. Raises ``KeyError`` listing the names for an unknown one."""
    if name not in recipe_names():
        raise KeyError(f"no shipped recipe {name!r}; available: {', '.join(recipe_names())}")
    path = Path(str(resources.files("scenetok_plugin_dl3dv") / "recipes" / f"{name}.yaml"))
    if not path.is_file():  # a zipped install: recipes are not plain files
        raise FileNotFoundError(f"recipe {name!r} is not a plain file ({path}); install the plugin unzipped")
    return path


@hookimpl
def scenetok_add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dl3dv", help="DL3DV tools: benchmark evaluation index, hash lists, shipped recipes (scenetok-plugin-dl3dv)",
        description="Tools of the scenetok-plugin-dl3dv package.",
    )
    actions = parser.add_subparsers(dest="dl3dv_command", metavar="ACTION", required=True)

    index = actions.add_parser(
        "index", help="write a deterministic DL3DV-140 evaluation index",
        description="Write an evaluation index ({hash: {context, target}}) for the DL3DV-140 scenes "
        "found under --root: per scene TARGET_VIEWS contiguous frames and CONTEXT_VIEWS context "
        "frames spread over them (farthest-point over poses). Only poses are read, not images.",
    )
    index.add_argument("--root", required=True, help="DL3DV folder (benchmark download or split root)")
    index.add_argument("--benchmark", help="DL3DV-140 hash list (one hash per line) or an index JSON; "
                       "without it every scene found is indexed")
    index.add_argument("--out", required=True, help="output JSON path")
    index.add_argument("--context-views", type=int, default=16, help="context frames per scene (paper: 16)")
    index.add_argument("--target-views", type=int, default=32,
                       help="contiguous targets per scene (34 = two Wan chunks of 17 frames)")
    index.add_argument("--seed", type=int, default=0, help="seed of the target-window placement")
    index.add_argument("--resolution", default="images_4", help="image folder whose frames exist on disk")
    index.add_argument("--context-sampling", choices=["farthest", "uniform"], default="farthest",
                       help="context frames by farthest-point sampling over poses, or uniformly spaced")
    index.set_defaults(func=_cmd_index)

    split = actions.add_parser("split", help="write a DL3DV-140 hash list from an evaluation index JSON",
                               description="Extract the scene hashes (keys, '_<n>' suffixes stripped) "
                               "of an evaluation index into a one-hash-per-line list.")
    split.add_argument("--from", dest="source", required=True, help="evaluation index JSON or hash list")
    split.add_argument("--out", required=True, help="output text file")
    split.set_defaults(func=_cmd_split)

    recipes = actions.add_parser("recipes", help="print the paths of the recipes shipped with the plugin")
    recipes.add_argument("name", nargs="?", help="print only this recipe's path")
    recipes.set_defaults(func=_cmd_recipes)


def _cmd_index(args: argparse.Namespace) -> int:
    from scenetok_plugin_dl3dv.benchmark import write_benchmark_index
    from scenetok_plugin_dl3dv.dataset import DL3DVDataset

    config = DL3DVDataset.Config(root=args.root, benchmark=args.benchmark, split="test",
                                 resolution=args.resolution, context_views=args.context_views,
                                 target_views=args.target_views, target_clips=1)
    dataset = DL3DVDataset(config)
    path = write_benchmark_index(dataset, args.out, args.context_views, args.target_views, seed=args.seed,
                                 context_sampling=args.context_sampling)
    from scenetok.data.index import read_evaluation_index

    written = len(read_evaluation_index(path))
    print(f"{path}: {written} scenes ({len(dataset.scenes())} found, {len(dataset.skipped)} skipped records)")
    return 0


def _cmd_split(args: argparse.Namespace) -> int:
    from scenetok_plugin_dl3dv.benchmark import read_hash_list, write_hash_list

    path = write_hash_list(read_hash_list(args.source), args.out)
    print(f"{path}: {len(read_hash_list(path))} scene hashes")
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    names = [args.name] if args.name else recipe_names()
    try:
        for name in names:
            print(recipe_path(name) if args.name else f"{name:<12} {recipe_path(name)}")
    except KeyError as error:
        print(f"scenetok dl3dv recipes: {error.args[0]}", file=sys.stderr)
        return 2
    return 0
