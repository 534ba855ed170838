"""Core's own hook implementations, registered exactly as a plugin's are: through the
``scenetok.hooks`` entry point in scenetok's ``pyproject.toml``.

* ``scenetok_add_commands``: the main jobs (``train``, ``eval``, ``render``, ``quickstart``,
  ``validate``, ``model``, ``data``; see :mod:`scenetok.commands`), the study commands
  ``ablate`` and ``compare`` (:mod:`scenetok.ablate`, :mod:`scenetok.compare`) and
  ``import-official`` (:mod:`scenetok.convert.official_command`).
* ``scenetok_validate_recipe``: the cross-component check (latent shapes, image sizes, the
  networks built on the meta device); see :func:`scenetok.model.check_recipe`.

This module is imported whenever the CLI starts, so it imports nothing heavy at module level.
"""

from __future__ import annotations

from typing import Any

from scenetok.hookspecs import hookimpl


@hookimpl(tryfirst=True)
def scenetok_add_commands(subparsers: Any) -> None:
    from scenetok import ablate, commands, compare  # lazy: the hook module imports nothing at start-up
    from scenetok.convert import official_command  # lazy: keeps the hook module import-free at start-up

    commands.add_commands(subparsers)
    ablate.add_command(subparsers)
    compare.add_command(subparsers)
    official_command.add_command(subparsers)


@hookimpl(tryfirst=True)
def scenetok_validate_recipe(recipe: Any, errors: list[str]) -> None:
    if recipe.component("scene_generator") is not None:
        return  # a SceneGen recipe: checked against its frozen SceneTok by scenetok.scenegen.hooks
    from scenetok.model import check_recipe  # lazy: imports torch

    errors.extend(check_recipe(recipe))
