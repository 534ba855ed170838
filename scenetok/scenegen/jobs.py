"""SceneGen's run-level jobs: ``scenetok generate``, and the SceneGen branches of ``scenetok eval``,
``scenetok render --tokens`` and ``scenetok model summary``."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import yaml

from scenetok.data.dataset import build_dataset
from scenetok.data.view_sampling import sample_evaluation_views
from scenetok.eval.evaluate import evaluation_setup
from scenetok.geometry.conventions import make_relative
from scenetok.model import SceneTok
from scenetok.recipe import Recipe
from scenetok.render_io import write_frames, write_video
from scenetok.scenegen import generate as G
from scenetok.scenegen.evaluate import evaluate_scenegen
from scenetok.scenegen.runs import is_scenegen_recipe, load_scenegen, stored_scenegen_config, summary
from scenetok.types import Cameras

log = logging.getLogger(__name__)


def is_scenegen_run(run: str | Path) -> bool:
    """Whether a run (or checkpoint) directory holds a SceneGen model (reads only its recipe)."""
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


def template_anchors(model: Any) -> Cameras:
    """The default anchor cameras of ``generate``: the context cameras of the first held-out scene
    of the SceneGen recipe's dataset (eval split), relative to its first context view."""
    recipe = model.recipe
    dataset = build_dataset(recipe, split=recipe.sections["eval"].split)
    scene = dataset.scenes()[0]
    config = recipe["dataset"].config
    context, _ = sample_evaluation_views(dataset.num_frames(scene), config.context_views, config.target_views,
                                         seed=0, scene=scene)
    views = dataset.load_selection(scene, context, context[:1])["context"]
    return make_relative(Cameras(views["extrinsics"], views["intrinsics"]), 0)


def generate_run(run: str | Path, images: list[str | Path], out_dir: str | Path, *, cameras: str | Path | None = None,
                 trajectory: str | None = None, frames: int | None = None, steps: int | None = None,
                 guidance: float | None = None, seed: int = 0, overrides: Iterable[str] = (),
                 progress: bool = True) -> dict[str, Path]:
    """``scenetok generate``: tokens from 1-3 images, a rendered video, and the tokens file."""
    model = load_scenegen(run, overrides, device=_device())
    render = model.recipe.sections["render"]
    loaded, plans = G.load_condition_images(list(images), model.scenetok.image_size,
                                            max_images=model.config.max_condition_views)
    camera_file = G.read_camera_file(cameras) if cameras else None
    kind = trajectory or (render.trajectory if render.trajectory in ("spline", "orbit") else "spline")
    request = G.make_request(loaded, plans, camera_file=camera_file,
                             template=template_anchors(model) if camera_file is None else None,
                             trajectory=kind, frames=frames or render.frames,
                             scene_scale=model.scenetok.config.scene_scale)
    tokens, rendered = G.generate_scene(model, request, steps=steps, guidance=guidance, seed=seed, progress=progress)
    metadata = {"scenegen_run": str(run), "scenetok_run": model.config.scenetok_run, "seed": seed,
                "steps": steps or model.config.steps,
                "guidance": model.config.guidance if guidance is None else guidance,
                "images": [str(p) for p in images], "trained_step": model.trained_step}
    return G.write_outputs(out_dir, rendered, tokens, request.trajectory, loaded, metadata, fps=render.fps)


def render_tokens_run(run: str | Path, tokens_file: str | Path, out_dir: str | Path | None = None,
                      overrides: Iterable[str] = ()) -> Path:
    """``scenetok render RUN --tokens FILE``: render the trajectory stored with generated tokens,
    with the same seed, so a deterministic run reproduces ``generate``'s frames exactly. ``RUN`` is
    the SceneGen run (its frozen SceneTok renders) or the SceneTok run itself."""
    tokens, cameras, metadata = G.read_tokens(tokens_file)
    scenetok_run = stored_scenegen_config(run).scenetok_run if is_scenegen_run(run) else run
    model = SceneTok.from_pretrained(scenetok_run, overrides, device=_device())
    expected = tuple(type(model.token_compressor).token_shape(model.token_compressor.config))
    if tuple(tokens.shape) != expected:
        raise G.SceneGenInputError(f"{tokens_file}: tokens {tuple(tokens.shape)} do not fit the token shape "
                                   f"{expected} of {scenetok_run}")
    frames = G.render_tokens(model, tokens.to(next(model.parameters()).device), cameras,
                             seed=int(metadata.get("seed", 0)))
    out = Path(out_dir) if out_dir else Path(tokens_file).parent / "rerender"
    write_frames(frames, out / "frames", prefix="frame")
    write_video(frames, out / "render.mp4", fps=model.render_config.fps)
    return out


def evaluate_scenegen_run(run: str | Path, index: str | Path | None = None, out_dir: str | Path | None = None,
                          overrides: Iterable[str] = (), max_scenes: int | None = None, progress: bool = True,
                          allow_random_lpips: bool = False) -> Any:
    """``scenetok eval`` on a SceneGen run (see :mod:`scenetok.scenegen.evaluate`): the index is
    the recipe's (or a deterministic one of its held-out split), as for SceneTok runs."""
    model = load_scenegen(run, overrides, device=_device())
    recipe = model.recipe
    config, out, index_path, dataset = evaluation_setup(recipe, run, index, out_dir, max_scenes)
    metadata = {"run": str(run), "step": model.trained_step, "index": str(index_path), "split": config.split,
                "scenetok_run": model.config.scenetok_run}
    return evaluate_scenegen(model, dataset, dataset.evaluation_entries(), config=config, out_dir=out,
                             metadata=metadata, progress=progress, allow_random_lpips=allow_random_lpips)


def print_summary(recipe: Recipe, name: str, as_json: bool = False) -> int:
    """``scenetok model summary`` of a SceneGen recipe."""
    info = summary(recipe)
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    row = info["components"]["scene_generator"]
    tokens, dim = info["scene_tokens"]
    channels, height, width = info["conditioning_latents"]
    print(f"recipe: {name}   SceneGen on {info['frozen_scenetok']}   sampler: {info['sampler']}")
    print(f"  {'scene_generator':<24} {row['name']:<12} {row['parameters']:>15,} parameters")
    print(f"  generates {tokens} tokens x {dim}; conditioning latents {channels} x {height} x {width} "
          "(frozen SceneTok not counted)")
    return 0
