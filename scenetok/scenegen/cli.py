"""SceneGen's command-line jobs: ``scenetok generate`` (registered through the ``scenetok.hooks``
entry point like any plugin command), and the SceneGen branches of ``scenetok eval`` and
``scenetok render --tokens``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Iterable

import torch

log = logging.getLogger(__name__)


def is_scenegen_run(run: str | Path) -> bool:
    """Whether a run (or checkpoint) directory holds a SceneGen model (reads only its recipe)."""
    import json

    import yaml

    from scenetok.scenegen.runs import is_scenegen_recipe

    run = Path(run)
    for name, reader in (("recipe.yaml", yaml.safe_load), ("recipe.json", json.loads)):
        path = run / name
        if path.is_file():
            try:
                return is_scenegen_recipe(reader(path.read_text()))
            except (ValueError, yaml.YAMLError):
                return False
    return False


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def template_anchors(model: Any) -> Any:
    """The default anchor cameras of ``generate``: the context cameras of the first held-out scene
    of the frozen SceneTok's dataset (eval split), relative to its first context view."""
    from scenetok.data.dataset import build_dataset
    from scenetok.data.view_sampling import sample_evaluation_views
    from scenetok.geometry.conventions import make_relative
    from scenetok.geometry.trajectories import scene_cameras

    recipe = model.recipe
    dataset = build_dataset(recipe, split=recipe.sections["eval"].split)
    scene = dataset.scenes()[0]
    config = recipe["dataset"].config
    context, _ = sample_evaluation_views(dataset.num_frames(scene), config.context_views, config.target_views,
                                         seed=0, scene=scene)
    return make_relative(scene_cameras(dataset, scene, context), 0)


def generate_run(run: str | Path, images: list[str | Path], out_dir: str | Path, *, cameras: str | Path | None = None,
                 trajectory: str | None = None, frames: int | None = None, steps: int | None = None,
                 guidance: float | None = None, seed: int = 0, overrides: Iterable[str] = (),
                 progress: bool = True) -> dict[str, Path]:
    """``scenetok generate``: tokens from 1-3 images, a rendered video, and the tokens file."""
    from scenetok.scenegen import generate as G
    from scenetok.scenegen.runs import load_scenegen

    model = load_scenegen(run, overrides, device=_device())
    render = model.recipe.sections["render"]
    max_images = model.config.max_condition_views
    loaded, plans = G.load_condition_images(list(images), model.scenetok.image_size, max_images=max_images)
    camera_file = G.read_camera_file(cameras) if cameras else None
    request = G.make_request(loaded, plans, camera_file=camera_file,
                             template=template_anchors(model) if camera_file is None else None,
                             trajectory=trajectory or _path_kind(render.trajectory), frames=frames or render.frames)
    tokens, rendered = G.generate_scene(model, request, steps=steps, guidance=guidance, seed=seed, progress=progress)
    metadata = {"scenegen_run": str(run), "scenetok_run": model.config.scenetok_run, "seed": seed,
                "steps": steps or model.config.steps,
                "guidance": model.config.guidance if guidance is None else guidance,
                "images": [str(p) for p in images], "trained_step": model.trained_step}
    return G.write_outputs(out_dir, rendered, tokens, request.trajectory, loaded, metadata, fps=render.fps)


def _path_kind(kind: str) -> str:
    # ``targets`` (a dataset's own frames) has no meaning for a generated scene.
    return kind if kind in ("spline", "orbit") else "spline"


def render_tokens_run(run: str | Path, tokens_file: str | Path, out_dir: str | Path | None = None,
                      overrides: Iterable[str] = ()) -> Path:
    """``scenetok render RUN --tokens FILE``: render the trajectory stored with generated tokens,
    with the same seed, so a deterministic run reproduces ``generate``'s frames exactly. ``RUN`` is
    the SceneGen run (its frozen SceneTok renders) or the SceneTok run itself."""
    from scenetok.model import SceneTok
    from scenetok.render_io import write_frames, write_video
    from scenetok.scenegen import generate as G

    tokens, cameras, metadata = G.read_tokens(tokens_file)
    scenetok_run = run
    if is_scenegen_run(run):
        from scenetok.scenegen.runs import _stored_scenegen_config

        scenetok_run = _stored_scenegen_config(run).scenetok_run
    model = SceneTok.from_pretrained(scenetok_run, overrides, device=_device())
    expected = tuple(type(model.token_compressor).token_shape(model.token_compressor.config))
    if tuple(tokens.shape) != expected:
        raise G.SceneGenInputError(f"{tokens_file}: tokens {tuple(tokens.shape)} do not fit this SceneTok's "
                                   f"token shape {expected}")
    frames = G.render_tokens(model, tokens.to(next(model.parameters()).device), cameras,
                             seed=int(metadata.get("seed", 0)))
    out = Path(out_dir) if out_dir else Path(tokens_file).parent / "rerender"
    write_frames(frames, out / "frames", prefix="frame")
    write_video(frames, out / "render.mp4", fps=model.render_config.fps)
    return out


def evaluate_scenegen_run(run: str | Path, index: str | Path | None = None, out_dir: str | Path | None = None,
                          overrides: Iterable[str] = (), max_scenes: int | None = None, progress: bool = True,
                          allow_random_lpips: bool = False) -> Any:
    """``scenetok eval`` on a SceneGen run (see :mod:`scenetok.scenegen.evaluate`)."""
    import dataclasses

    from scenetok.data.dataset import build_dataset
    from scenetok.data.index import write_evaluation_index
    from scenetok.scenegen.evaluate import evaluate_scenegen
    from scenetok.scenegen.runs import load_scenegen

    model = load_scenegen(run, overrides, device=_device())
    recipe = model.recipe
    config = recipe.sections["eval"]
    if max_scenes is not None:
        config = dataclasses.replace(config, max_scenes=max_scenes)
    out = Path(out_dir) if out_dir else Path(run) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    index_path = Path(index) if index else (Path(config.index) if config.index else None)
    if index_path is None:
        dataset_config = recipe["dataset"].config
        index_path = write_evaluation_index(
            build_dataset(recipe, split=config.split), out / "index.json",
            context_views=config.context_views or dataset_config.context_views,
            target_views=config.target_views or dataset_config.target_views, seed=0)
    dataset = build_dataset(recipe, split=config.split, index=str(index_path))
    metadata = {"run": str(run), "step": model.trained_step, "index": str(index_path), "split": config.split,
                "scenetok_run": model.config.scenetok_run}
    return evaluate_scenegen(model, dataset, dataset.evaluation_entries(), config=config, out_dir=out,
                             metadata=metadata, progress=progress, allow_random_lpips=allow_random_lpips)


# ----------------------------------------------------------------------------------------------
# argparse
# ----------------------------------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> int:
    from scenetok.scenegen.generate import SceneGenInputError

    try:
        paths = generate_run(args.run, args.images, args.out, cameras=args.cameras, trajectory=args.trajectory,
                             frames=args.frames, steps=args.steps, guidance=args.guidance, seed=args.seed,
                             overrides=args.overrides, progress=not args.no_progress)
    except SceneGenInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"frames : {paths['frames']}\nvideo  : {paths['video']}\ntokens : {paths['tokens']}  "
          f"(re-render: scenetok render {args.run} --tokens {paths['tokens']})")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("generate", help="SceneGen: generate a scene from 1-3 images and render it",
                       description="Sample a scene's tokens with a trained SceneGen run from one to three "
                       "images, render a camera path with the frozen SceneTok, and write PNG frames, an "
                       "MP4 and the tokens (safetensors; re-render them with `scenetok render RUN --tokens "
                       "FILE`). Images of another size are resized and centre-cropped as the datasets do.")
    p.add_argument("run", type=Path, help="SceneGen run (or checkpoint) directory")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    p.add_argument("--images", nargs="+", required=True, help="one to three conditioning images")
    p.add_argument("--cameras", type=Path, default=None,
                   help="JSON with 'conditioning' (one per image) and 'anchors' cameras, optional 'trajectory' "
                   "(default: anchors of a held-out scene, image 0 at the identity)")
    p.add_argument("--trajectory", choices=["spline", "orbit"], default=None,
                   help="rendered path through / around the anchors (default: render.trajectory)")
    p.add_argument("--frames", type=int, default=None, help="frames to render (default: render.frames)")
    p.add_argument("--steps", type=int, default=None, help="token sampler steps (default: scenegen.steps)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: scenegen.guidance)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (same seed, same scene)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)
