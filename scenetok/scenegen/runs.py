"""SceneGen recipes and runs: building, checking, summarising and loading a SceneGen model.

A SceneGen recipe holds only what SceneGen trains: ``scenegen`` (with ``scenetok_run``),
``scene_generator``, ``sampler`` (the *token* noise process), ``dataset``, ``train``, ``eval`` and
``render``. The frozen SceneTok (image compressor, token compressor, renderer and the renderer's
own sampler and render settings) comes from ``scenegen.scenetok_run``, loaded with
:meth:`scenetok.model.SceneTok.from_pretrained`; its recipe sizes the generator (token shape,
conditioning latent channels and grid).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import yaml

from scenetok.checkpoint import load_checkpoint
from scenetok.model import SceneTok, _latent_size, image_size_of, trained_recipe, trained_state
from scenetok.nn.utils import count_parameters
from scenetok.recipe import Recipe, RecipeError, load_recipe, load_recipe_dict, upgrade_stored_recipe
from scenetok.scenegen.model import SceneGen
from scenetok.sections import SceneGenConfig

log = logging.getLogger(__name__)

#: The recipe sections a SceneGen recipe takes from its frozen SceneTok instead of declaring them.
SCENETOK_SECTIONS = ("image_compressor", "target_image_compressor", "token_compressor", "decoder")


def is_scenegen_recipe(recipe_or_data: Any) -> bool:
    """Whether a recipe (validated or raw dict) describes SceneGen (it has a ``scene_generator``)."""
    if isinstance(recipe_or_data, Recipe):
        return recipe_or_data.component("scene_generator") is not None
    return isinstance(recipe_or_data, dict) and "scene_generator" in recipe_or_data


def _stored_recipe(run: Path) -> Recipe:
    """The validated recipe a SceneTok run was trained with (no weights read)."""
    path = run / "recipe.yaml"
    if not path.is_file():
        raise RecipeError([f"scenegen.scenetok_run: {run} is not a SceneTok run directory (no recipe.yaml); "
                           "train one first, e.g. `scenetok quickstart --out runs/quickstart`"])
    return load_recipe_dict(upgrade_stored_recipe(yaml.safe_load(path.read_text())), source=str(path))


def scenetok_recipe_of(recipe: Recipe) -> Recipe:
    """The frozen SceneTok's recipe: from ``scenegen.scenetok_run`` (its stored recipe) or, for
    sizing without a trained run, ``scenegen.scenetok_recipe``."""
    config = recipe["scenegen"]
    if config.scenetok_run:
        return _stored_recipe(Path(config.scenetok_run))
    if config.scenetok_recipe:
        return load_recipe(config.scenetok_recipe)
    raise RecipeError(["scenegen.scenetok_run: required (the trained SceneTok whose tokens SceneGen generates)"])


def generator_build_args(scenetok_recipe: Recipe) -> dict[str, Any]:
    """The scene generator's build arguments from the frozen SceneTok's recipe."""
    image_size = image_size_of(scenetok_recipe["dataset"].config)
    image = scenetok_recipe["image_compressor"]
    spec = image.cls.latent_spec(image.config)
    tokens = scenetok_recipe["token_compressor"]
    num_tokens, token_dim = tokens.cls.token_shape(tokens.config)
    return {"num_tokens": num_tokens, "token_dim": token_dim, "in_channels": spec.channels,
            "latent_size": _latent_size(spec, image_size, "image_compressor")}


def build_generator(recipe: Recipe, scenetok_recipe: Recipe, device: torch.device | str | None = None) -> Any:
    spec = recipe["scene_generator"]
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return spec.cls(spec.config, **generator_build_args(scenetok_recipe))


def check_scenegen_recipe(recipe: Recipe) -> list[str]:
    """Cross-checks of a SceneGen recipe against its frozen SceneTok (no weights: builds on meta)."""
    errors: list[str] = []
    present = [section for section in SCENETOK_SECTIONS if recipe.component(section) is not None]
    if present:
        errors.append(f"{', '.join(present)}: a SceneGen recipe takes these from scenegen.scenetok_run; "
                      "remove them")
    try:
        base = scenetok_recipe_of(recipe)
    except RecipeError as error:
        return errors + error.errors
    mine, theirs = image_size_of(recipe["dataset"].config), image_size_of(base["dataset"].config)
    if mine != theirs:
        errors.append(f"dataset.image_size: {list(mine)} differs from the frozen SceneTok's {list(theirs)}")
    config = recipe["scenegen"]
    generator = recipe["scene_generator"]
    max_views = generator.cls.max_condition_views(generator.config)
    if config.max_condition_views > max_views:
        errors.append(f"scenegen.max_condition_views: {config.max_condition_views} exceeds the generator's "
                      f"max_condition_views {max_views}")
    target_views = getattr(recipe["dataset"].config, "target_views", None)
    if isinstance(target_views, int) and target_views < config.max_condition_views - 1:
        errors.append(f"dataset.target_views: {target_views} < scenegen.max_condition_views - 1 = "
                      f"{config.max_condition_views - 1} (conditioning views 1.. are target frames)")
    try:
        build_generator(recipe, base, device="meta")
    except (ValueError, TypeError, KeyError) as error:
        errors.append(f"scene_generator: does not fit the frozen SceneTok: {error}")
    return errors


def summary(recipe: Recipe) -> dict[str, Any]:
    """Parameter count of the scene generator (meta device) and the token space it generates."""
    base = scenetok_recipe_of(recipe)
    generator = build_generator(recipe, base, device="meta")
    args = generator_build_args(base)
    return {
        "components": {"scene_generator": {"name": recipe["scene_generator"].name,
                                           "parameters": count_parameters(generator)}},
        "trainable_parameters": count_parameters(generator),
        "scene_tokens": [args["num_tokens"], args["token_dim"]],
        "conditioning_latents": [args["in_channels"], *args["latent_size"]],
        "frozen_scenetok": recipe["scenegen"].scenetok_run or recipe["scenegen"].scenetok_recipe,
        "sampler": recipe["sampler"].cls.process(recipe["sampler"].config),
    }


def build_scenegen(recipe: Recipe, device: torch.device | str = "cpu") -> Any:
    """A SceneGen model for ``recipe``: the frozen SceneTok loaded from ``scenegen.scenetok_run``
    (EMA weights when stored), a freshly initialised generator, the token sampler."""
    config = recipe["scenegen"]
    if not config.scenetok_run:
        raise RecipeError(["scenegen.scenetok_run: required to build SceneGen (the trained SceneTok run)"])
    scenetok = SceneTok.from_pretrained(config.scenetok_run, device=device)
    generator = build_generator(recipe, scenetok.recipe, device=device)
    sampler = recipe["sampler"].cls(recipe["sampler"].config)
    return SceneGen(scenetok, generator, sampler, config)


def load_scenegen(run: str | Path, overrides: Iterable[str] = (), *, ema: bool = True,
                  device: torch.device | str = "cpu") -> Any:
    """A trained SceneGen from a run or checkpoint directory (EMA weights when stored); the frozen
    SceneTok is loaded from the stored recipe's ``scenegen.scenetok_run``. ``model.recipe`` and
    ``model.trained_step`` are set."""
    checkpoint = load_checkpoint(run, map_location=device)
    if not is_scenegen_recipe(checkpoint.recipe):
        raise RecipeError([f"{run}: not a SceneGen run (its recipe has no scene_generator)"])
    # The same loading rules as SceneTok.from_pretrained: schema upgrade, trained image size and
    # noise process kept, missing plugins named, NaN weights warned about.
    recipe = trained_recipe(checkpoint, overrides)
    model = build_scenegen(recipe, device=device)
    model.networks().load_state_dict(trained_state(checkpoint, ema))
    model.recipe = recipe
    model.trained_step = checkpoint.step
    return model.eval()


def stored_scenegen_config(run: str | Path) -> Any:
    """The ``scenegen`` section a SceneGen run was trained with (reads its recipe only)."""
    path = Path(run) / "recipe.yaml"
    if path.is_file():
        data = yaml.safe_load(path.read_text())
    else:
        data = load_checkpoint(run).recipe
    node = data.get("scenegen") if isinstance(data, dict) else None
    if not isinstance(node, dict):
        raise RecipeError([f"{run}: not a SceneGen run (its recipe has no scenegen section)"])
    return SceneGenConfig(**node)
