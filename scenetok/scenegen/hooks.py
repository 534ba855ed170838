"""SceneGen's hook implementations, registered through the ``scenetok.hooks`` entry point exactly
as a plugin's are (this module imports nothing heavy: it is loaded whenever the CLI starts).

* ``scenetok_add_commands``: ``scenetok generate``;
* ``scenetok_validate_recipe``: a SceneGen recipe (one with a ``scene_generator``) checked against
  its frozen SceneTok (see :func:`scenetok.scenegen.runs.check_scenegen_recipe`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from scenetok.commands import non_negative_float, non_negative_int, positive_int
from scenetok.hookspecs import hookimpl


@hookimpl
def scenetok_validate_recipe(recipe: Any, errors: list[str]) -> None:
    if recipe.component("scene_generator") is None:
        return
    from scenetok.scenegen.runs import check_scenegen_recipe  # lazy: imports torch

    errors.extend(check_scenegen_recipe(recipe))


def cmd_generate(args: argparse.Namespace) -> int:
    from scenetok.scenegen.generate import SceneGenInputError  # lazy: imports torch
    from scenetok.scenegen.jobs import generate_run  # lazy: imports torch

    try:
        paths = generate_run(args.run, args.images, args.out, cameras=args.cameras, trajectory=args.trajectory,
                             frames=args.frames, steps=args.steps, guidance=args.guidance, seed=args.seed,
                             overrides=args.overrides, progress=not args.no_progress)
    except SceneGenInputError as error:
        print(f"scenetok: error: {error}", file=sys.stderr)
        return 2
    print(f"frames : {paths['frames']}\nvideo  : {paths['video']}\ntokens : {paths['tokens']}\n"
          f"re-render: scenetok render {args.run} --tokens {paths['tokens']}")
    return 0


@hookimpl
def scenetok_add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate", help="SceneGen: generate a scene from 1-3 images and render it",
        description="Sample a scene's tokens with a trained SceneGen run from one to three images, render a "
        "camera path with the frozen SceneTok, and write PNG frames, an MP4 and the tokens (safetensors; "
        "re-render them with `scenetok render RUN --tokens FILE`). Images of another size are resized and "
        "centre-cropped as the datasets do.")
    p.add_argument("run", type=Path, help="SceneGen run (or checkpoint) directory")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    p.add_argument("--images", nargs="+", required=True, help="one to three conditioning images")
    p.add_argument("--cameras", type=Path, default=None,
                   help="JSON with 'conditioning' (one per image) and 'anchors' cameras, optional 'trajectory' "
                   "(default: the anchors of a held-out scene, image 0 at the identity)")
    p.add_argument("--trajectory", choices=["spline", "orbit"], default=None,
                   help="rendered path through / around the anchors (default: render.trajectory)")
    p.add_argument("--frames", type=positive_int, default=None, help="frames to render, >= 1 (default: render.frames)")
    p.add_argument("--steps", type=positive_int, default=None, help="token sampler steps, >= 1 (default: scenegen.steps)")
    p.add_argument("--guidance", type=non_negative_float, default=None,
                   help="CFG scale, >= 0 (default: scenegen.guidance)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="noise seed, >= 0 (same seed, same scene)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)
