"""Import a released official SceneTok or SceneGen checkpoint (a PyTorch-Lightning ``.ckpt``) as a
scenetok run.

::

    scenetok import-official checkpoints/va-videodc_re10k.ckpt --out runs/official-re10k
    scenetok eval runs/official-re10k dataset.root=data/re10k
    scenetok import-official checkpoints/scenegen_shift4_re10k.ckpt --out runs/sg4 \
        scenegen.scenetok_run=runs/official-re10k-scene

What happens, in order:

1. **Read** the file with ``torch.load(weights_only=True)`` (or safetensors): tensors only, no code
   from the file runs. A checkpoint that needs other pickled objects is refused with a message
   saying how to re-save it as a plain state dict.
2. **Detect** the configuration from decisive key shapes (number of scene tokens, target latent
   channels) -- or take ``--config NAME`` -- among :data:`RELEASED_CONFIGS`.
3. **Map** every key with an explicit, complete account. The official state dict is
   ``{wrapper attribute}.{module key}``; each wrapper prefix belongs to one recipe section, and the
   component class of that section supplies ``official_key_map()`` (reached through the recipe, i.e.
   the registry -- this module never imports a component):

   ======================  =====================  =============================================
   official prefix          scenetok section        key map
   ======================  =====================  =============================================
   ``compressor.``          ``token_compressor``    ``PerceiverCompressor.official_key_map()``
   ``denoiser.``            ``decoder``             ``DiTDecoder.official_key_map()`` (incl. the
                                                    wrapper-level ``cnd_proj`` and camera Linear)
   ``scene_generator.``     ``scene_generator``     ``DiTSceneGenerator.official_key_map()`` (a
                                                    SceneGen recipe; the frozen SceneTok comes
                                                    from ``scenegen.scenetok_run``)
   ======================  =====================  =============================================

   Every source key is mapped or intentionally dropped (the maps' ``None`` rules: the compressor's
   persistent 2D-RoPE tables and the scene generator's sin-cos camera tables, which scenetok
   recomputes; ``ema.*``, which the official inference does not use), and every parameter of the scenetok networks is filled or declared scenetok-only
   by its component (``official_scenetok_only()``: the renderer's CFG null token, written as zeros
   -- guidance scale 1.0 never reads it, so the official output is reproduced exactly). Anything
   else -- an unknown key, a missing one, a shape that disagrees -- is an
   :class:`OfficialImportError` naming the file, the keys and the shapes.
4. **Write** a normal run directory with :func:`scenetok.checkpoint.save_checkpoint`
   (safetensors + the resolved recipe) that ``eval``, ``render``, ``generate`` and
   ``SceneTok.from_pretrained`` load like any trained run, plus ``import.json`` (the full key account). The configuration's
   upstream-compatibility switches (focal-length bugs, the Wan camera channel order, the bf16
   camera rounding) are set in that recipe; they are off in every shipped recipe.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from scenetok.checkpoint import list_checkpoints, save_checkpoint
from scenetok.model import build_components, image_size_of
from scenetok.recipe import RecipeError, find_recipe, load_recipe
from scenetok.scenegen.runs import build_generator, is_scenegen_recipe, scenetok_recipe_of

logger = logging.getLogger(__name__)

#: Official wrapper prefix -> scenetok recipe section whose component maps its keys. A new
#: prefix plugs in here; its component provides ``official_key_map()`` (and optionally
#: ``official_scenetok_only()``), and :func:`target_shapes` builds its network.
PREFIX_SECTIONS: dict[str, str] = {"compressor.": "token_compressor", "denoiser.": "decoder",
                                   "scene_generator.": "scene_generator"}
#: Prefixes scenetok knows but cannot import yet, with the reason (none today).
UNSUPPORTED_PREFIXES: dict[str, str] = {}
#: Whole prefixes that are dropped on purpose, with the reason.
DROPPED_PREFIXES: dict[str, str] = {
    "ema.": "the official EMA copy (of the renderer; of the scene generator, updated upstream with the "
            "renderer's parameters); the official inference uses the raw weights",
}
#: How many keys an error message lists before "and N more".
_LIST_LIMIT = 4


class OfficialImportError(ValueError):
    """A released checkpoint cannot be imported; the message (one line) names the file and keys."""


@dataclass(frozen=True)
class OfficialConfig:
    """One released configuration.

    Attributes:
        name: the ``--config`` name.
        recipe: the scenetok recipe it corresponds to: a shipped recipe's name
            (``re10k/scenetok``, see ``scenetok recipes``) or a file path.
        compat: recipe overrides the released weights need (upstream-compatibility switches).
        signature: decisive official keys and their shapes; a checkpoint whose keys carry
            exactly these shapes is this configuration.
        experiment: the official experiment config it was trained with.
        checkpoints: the official file names released for it; when several configurations share
            a signature, the checkpoint's file name picks among them.
        renders: what works end to end today (for the README and the import summary).
    """

    name: str
    recipe: str
    compat: tuple[str, ...]
    signature: Mapping[str, tuple[int, ...]]
    experiment: str = ""
    checkpoints: tuple[str, ...] = ()
    renders: str = ""

    def recipe_path(self) -> Path:
        return find_recipe(self.recipe)


#: The bf16 rounding of the camera embedding happens in every official renderer forward (even in
#: fp32 runs), so every imported renderer turns the switch on to reproduce the official numbers.
_CAMERA_ROUNDING = "decoder.camera_bf16_rounding=true"

#: The official scene generator also rounds its camera embeddings to bf16 and divides ray
#: directions by ``norm + 1e-6``.
_SCENEGEN_COMPAT = ("scene_generator.camera_bf16_rounding=true", "scene_generator.ray_epsilon=1e-6")

RELEASED_CONFIGS: dict[str, OfficialConfig] = {
    config.name: config for config in (
        OfficialConfig(
            name="re10k", recipe="re10k/scenetok", compat=(_CAMERA_ROUNDING,),
            signature={"compressor.scene_tokens": (1, 512, 768),
                       "denoiser.model.x_embedder.proj.weight": (1024, 128, 1, 1)},
            experiment="scenetok_va-vdc_lognorm_re10k_scratch",
            checkpoints=("va-videodc_re10k.ckpt", "va-videodc_re10k_scene.ckpt"),
            renders="end to end with the VA-VAE and Video DC-AE weights",
        ),
        OfficialConfig(
            name="dl3dv_videodc", recipe="dl3dv/scenetok_videodc",
            compat=(_CAMERA_ROUNDING, "dataset.scale_focal_by_256=true"),
            signature={"compressor.scene_tokens": (1, 1024, 768),
                       "denoiser.model.x_embedder.proj.weight": (1024, 128, 1, 1)},
            experiment="scenetok_va-vdc_shift8_dl3dv_finetuned", checkpoints=("va-videodc_dl3dv.ckpt",),
            renders="end to end with the VA-VAE and Video DC-AE weights and scenetok-plugin-dl3dv",
        ),
        OfficialConfig(
            name="dl3dv_wan", recipe="dl3dv/scenetok_wan",
            compat=(_CAMERA_ROUNDING, "dataset.scale_context_focal_by_256=true",
                    "decoder.camera_legacy_channel_order=true"),
            signature={"compressor.scene_tokens": (1, 1024, 768),
                       "denoiser.model.x_embedder.proj.weight": (1024, 48, 1, 1)},
            experiment="scenetok_va-wan_shift4_dl3dv_finetuned", checkpoints=("va-wan_dl3dv.ckpt",),
            renders="end to end with the VA-VAE and Wan 2.2 VAE weights and scenetok-plugin-dl3dv",
        ),
        *(OfficialConfig(
            name=f"scenegen_shift{shift}", recipe="scenegen/re10k",
            compat=(f"sampler.shift={shift}", *_SCENEGEN_COMPAT),
            signature={"scene_generator.model.pos_embed": (1, 512, 1536),
                       "scene_generator.model.c_embedder.proj.weight": (1536, 32, 1, 1)},
            experiment=f"scenegen_shift{shift}_re10k", checkpoints=(f"scenegen_shift{shift}_re10k.ckpt",),
            renders="generate/render through the frozen SceneTok of scenegen.scenetok_run (the imported "
                    "va-videodc_re10k_scene.ckpt)",
        ) for shift in (1, 4, 12)),
    )
}


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (f" and {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else "")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def read_official_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], int]:
    """The flat official state dict and global step of a checkpoint file.

    Accepts a Lightning ``.ckpt`` (``{"state_dict": ..., "global_step": ...}``), a plain state dict
    saved with ``torch.save``, or a ``.safetensors`` file. Never unpickles anything but tensors.

    Raises:
        OfficialImportError: unreadable, truncated, needs pickled objects, or holds non-tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise OfficialImportError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path)), 0
        except (SafetensorError, OSError) as error:
            raise OfficialImportError(f"{path}: not a readable safetensors file ({_first_line(error)})") from None
    try:
        try:
            # Memory-mapped: a 3 GB release is read lazily instead of held twice while mapping.
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            loaded = torch.load(path, map_location="cpu", weights_only=True)  # a pre-zip (legacy) file
    except pickle.UnpicklingError as error:
        # Only a refused class (a pickled object) means "re-save it"; anything else is damage.
        if "Unsupported global" not in str(error):
            raise OfficialImportError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt "
                                      f"({_first_line(error)})") from None
        raise OfficialImportError(
            f"{path}: the checkpoint holds pickled Python objects besides tensors, which scenetok never "
            "unpickles (torch.load weights_only=True refused it: "
            f"{_unsupported_global(error)}). Re-save its weights as a plain state dict, in an environment "
            "you trust with that file: python -c \"import torch; c = torch.load('IN.ckpt', "
            "weights_only=False); torch.save({'state_dict': c['state_dict'], 'global_step': "
            "c.get('global_step', 0)}, 'OUT.ckpt')\"; then import OUT.ckpt"
        ) from None
    except Exception as error:  # noqa: BLE001 - torch's parsers raise many types on damaged files
        if isinstance(error, (KeyboardInterrupt, MemoryError)):
            raise
        raise OfficialImportError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt "
                                  f"({_first_line(error)})") from None
    if isinstance(loaded, Mapping) and "state_dict" in loaded:
        state, step = loaded["state_dict"], loaded.get("global_step", 0)
    else:
        state, step = loaded, 0
    if not isinstance(state, Mapping):
        raise OfficialImportError(f"{path}: expected a state dict (or a Lightning checkpoint with "
                                  f"'state_dict'), found a {type(state).__name__}")
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(v, Tensor))
    if not_tensors:
        raise OfficialImportError(f"{path}: state-dict entries that are not tensors: {_listing(not_tensors)}")
    return dict(state), int(step) if isinstance(step, int) else 0


def _unsupported_global(error: BaseException) -> str:
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    return f"unsupported global {match.group(1)}" if match else _first_line(error)


# ----------------------------------------------------------------------------------------------
# Detection and the key account
# ----------------------------------------------------------------------------------------------


def detect_config(shapes: Mapping[str, tuple[int, ...]], source: str,
                  configs: Mapping[str, OfficialConfig] = RELEASED_CONFIGS) -> OfficialConfig:
    """The configuration whose signature matches ``shapes`` (official key -> shape)."""
    refuse_unsupported(shapes, source)
    matches = [config for config in configs.values()
               if all(tuple(shapes.get(key, ())) == tuple(shape) for key, shape in config.signature.items())]
    if len(matches) > 1:  # same layout (the SceneGen shifts): the released file name decides
        named = [config for config in matches if Path(source).name in config.checkpoints]
        matches = named or matches
    if len(matches) == 1:
        return matches[0]
    decisive = sorted({key for config in configs.values() for key in config.signature})
    found = "; ".join(f"{key} {tuple(shapes[key]) if key in shapes else 'missing'}" for key in decisive)
    if not matches:
        raise OfficialImportError(
            f"{source}: unknown configuration: no released configuration ({', '.join(configs)}) has these "
            f"shapes: {found}; pass --config NAME if it is one of them"
        )
    raise OfficialImportError(f"{source}: ambiguous configuration ({', '.join(c.name for c in matches)}); "
                              "pass --config NAME")


def refuse_unsupported(shapes: Mapping[str, Any], source: str) -> None:
    """Raise for keys of a model scenetok cannot hold yet (see :data:`UNSUPPORTED_PREFIXES`)."""
    for prefix, reason in UNSUPPORTED_PREFIXES.items():
        if any(key.startswith(prefix) for key in shapes):
            raise OfficialImportError(f"{source}: {reason}")


@dataclass
class KeyAccount:
    """Where every key went.

    Attributes:
        mapped: scenetok key (``section.module_key``) -> official key.
        dropped: official key -> why it is dropped on purpose.
        scenetok_only: scenetok key -> how it is filled (no official counterpart).
        errors: problems, each naming keys and shapes; empty = importable.
    """

    mapped: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    scenetok_only: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _key_map_of(recipe: Any, section: str) -> tuple[dict[str, str | None], dict[str, str]]:
    spec = recipe.component(section)
    if spec is None:
        raise OfficialImportError(f"the recipe has no {section!r} section")
    key_map = getattr(spec.cls, "official_key_map", None)
    if key_map is None:
        raise OfficialImportError(f"{section} component {spec.name!r} has no official_key_map(); it cannot "
                                  "receive official weights")
    only = getattr(spec.cls, "official_scenetok_only", None)
    return key_map(), (only() if only is not None else {})


def account_keys(shapes: Mapping[str, tuple[int, ...]], recipe: Any,
                 targets: Mapping[str, Mapping[str, tuple[int, ...]]]) -> KeyAccount:
    """Map official ``shapes`` (key -> shape) onto ``targets`` (section -> key -> shape).

    Works on shapes alone, so a full-size key set can be checked without any weights.
    """
    account = KeyAccount()
    maps = {section: _key_map_of(recipe, section) for section in targets}
    unknown, misshaped = [], []
    for key, shape in shapes.items():
        dropped = next((reason for prefix, reason in DROPPED_PREFIXES.items() if key.startswith(prefix)), None)
        if dropped is not None:
            account.dropped[key] = dropped
            continue
        prefix = next((p for p in PREFIX_SECTIONS if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
            continue
        section = PREFIX_SECTIONS[prefix]
        if section not in maps:
            unknown.append(f"{key} (a {section} key; this configuration has no {section})")
            continue
        rule = _rename(key[len(prefix):], maps[section][0])
        if rule is _NO_RULE:
            unknown.append(key)
        elif rule is None:
            account.dropped[key] = (f"the {section} key map drops it: a table scenetok recomputes on the fly, "
                                    "or a parameter upstream never used")
        else:
            target = f"{section}.{rule}"
            expected = targets[section].get(rule)
            if expected is None:
                unknown.append(f"{key} (-> {target}, which the scenetok model does not have)")
            elif tuple(expected) != tuple(shape):
                misshaped.append(f"{key} {tuple(shape)} vs {target} {tuple(expected)}")
            elif target in account.mapped:
                account.errors.append(f"{key} and {account.mapped[target]} both map to {target}")
            else:
                account.mapped[target] = key
    missing = []
    prefix_of = {section: prefix for prefix, section in PREFIX_SECTIONS.items()}
    for section, keys in targets.items():
        only = maps[section][1]
        for key, shape in keys.items():
            target = f"{section}.{key}"
            if target in account.mapped:
                continue
            if key in only:
                account.scenetok_only[target] = only[key]
            else:
                official = official_name(key, maps[section][0])
                name = prefix_of[section] + official if official else f"(scenetok) {target}"
                missing.append(f"{name} {tuple(shape)}")
    if unknown:
        account.errors.append(f"{len(unknown)} keys no rule maps: {_listing(sorted(unknown))}")
    if misshaped:
        account.errors.append(f"{len(misshaped)} keys with the wrong shape: {_listing(sorted(misshaped))}")
    if missing:
        account.errors.append(f"{len(missing)} keys missing (scenetok key and expected shape): "
                              f"{_listing(sorted(missing))}")
    return account


_NO_RULE = object()
_GROUP = re.compile(r"\((?:[^()\\]|\\.)*\)")


def official_name(key: str, key_map: Mapping[str, str | None]) -> str | None:
    """The official key that ``key_map`` renames to the scenetok ``key`` (the map run backwards),
    or ``None``. Used to name missing keys the way the checkpoint would spell them."""
    for pattern, replacement in key_map.items():
        if replacement is None:
            continue
        # The replacement as a regex: its literal parts escaped, each \N a capture of group N.
        parts = re.split(r"\\(\d)", replacement)
        regex, order = "", []
        for index, part in enumerate(parts):
            if index % 2:
                regex += "(.+?)"
                order.append(int(part))
            else:
                regex += re.escape(part)
        match = re.fullmatch(regex, key)
        if not match:
            continue
        values = dict(zip(order, match.groups()))
        # The pattern as a template: each top-level group replaced by its captured value.
        counter = iter(range(1, 100))
        candidate = _GROUP.sub(lambda m: "\0" + str(next(counter)) + "\0", pattern)
        candidate = re.sub(r"\\(.)", r"\1", candidate)
        candidate = re.sub(r"\0(\d+)\0", lambda m: values.get(int(m.group(1)), "?"), candidate)
        # Only accept a candidate the forward map really sends back to ``key``.
        if re.fullmatch(pattern, candidate) and _rename(candidate, key_map) == key:
            return candidate
    return None


def _rename(key: str, key_map: Mapping[str, str | None]) -> Any:
    for pattern, replacement in key_map.items():
        match = re.fullmatch(pattern, key)
        if match:
            return None if replacement is None else match.expand(replacement)
    return _NO_RULE


def target_shapes(recipe: Any) -> dict[str, dict[str, tuple[int, ...]]]:
    """Section -> state-dict key -> shape of the networks a run of ``recipe`` stores (meta device):
    the token compressor and renderer of a SceneTok recipe, the scene generator of a SceneGen one
    (sized by its frozen SceneTok's recipe)."""
    if is_scenegen_recipe(recipe):
        networks = {"scene_generator": build_generator(recipe, scenetok_recipe_of(recipe), device="meta")}
    else:
        components = build_components(recipe, image_size_of(recipe["dataset"].config), device="meta",
                                      networks_only=True)
        networks = {section: components[section] for section in ("token_compressor", "decoder")}
    return {section: {key: tuple(value.shape) for key, value in module.state_dict().items()}
            for section, module in networks.items()}


def load_config_recipe(config: OfficialConfig, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The recipe of ``config`` with its compatibility switches and ``overrides`` applied."""
    try:
        path = config.recipe_path()
    except RecipeError as error:
        raise OfficialImportError(f"configuration {config.name!r}: {error}") from None
    return load_recipe(path, [*config.compat, *overrides])


# ----------------------------------------------------------------------------------------------
# Import
# ----------------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    """What :func:`import_official` wrote.

    Attributes:
        run_dir: the run directory (``eval`` / ``render`` / ``SceneTok.from_pretrained`` take it).
        checkpoint: the checkpoint directory inside it.
        config: the configuration used.
        account: where every key went.
        step: the official global step.
    """

    run_dir: Path
    checkpoint: Path
    config: OfficialConfig
    account: KeyAccount
    step: int


def import_official(checkpoint: str | Path, out: str | Path, config: str | OfficialConfig | None = None,
                    overrides: list[str] | tuple[str, ...] = (),
                    configs: Mapping[str, OfficialConfig] = RELEASED_CONFIGS) -> ImportResult:
    """Import a released checkpoint into the run directory ``out``.

    Args:
        checkpoint: the official ``.ckpt`` (or a plain state dict / safetensors with its keys).
        out: a new (or empty) run directory.
        config: a configuration name or object; ``None`` detects it from the key shapes.
        overrides: extra recipe overrides stored with the run (e.g. ``dataset.root=...``).
        configs: the configurations to choose from (tests add tiny ones).

    Raises:
        OfficialImportError: one line naming the file and the offending keys.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    if list_checkpoints(out):
        raise OfficialImportError(f"{out}: already holds checkpoints; import into a new directory")
    state, step = read_official_checkpoint(checkpoint)
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    refuse_unsupported(shapes, str(checkpoint))
    if isinstance(config, str):
        if config not in configs:
            raise OfficialImportError(f"{checkpoint}: unknown configuration {config!r}; known: {', '.join(configs)}")
        config = configs[config]
    elif config is None:
        config = detect_config(shapes, str(checkpoint), configs)
    recipe = load_config_recipe(config, list(overrides))
    if is_scenegen_recipe(recipe) and not recipe["scenegen"].scenetok_run:
        raise OfficialImportError(
            f"{checkpoint}: a SceneGen checkpoint needs its frozen SceneTok: import va-videodc_re10k_scene.ckpt "
            "first and add scenegen.scenetok_run=THAT_RUN to this command")
    targets = target_shapes(recipe)
    account = account_keys(shapes, recipe, targets)
    if account.errors:
        raise OfficialImportError(f"{checkpoint} (configuration {config.name}): " + "; ".join(account.errors))

    tensors: dict[str, Tensor] = {target: state[source] for target, source in account.mapped.items()}
    shapes_by_target = {f"{section}.{key}": shape for section, keys in targets.items() for key, shape in keys.items()}
    for target in account.scenetok_only:
        # Zeros, as documented by the component (the only such key today: the CFG null token).
        tensors[target] = torch.zeros(shapes_by_target[target])
    provenance = {"source": str(checkpoint.resolve()), "config": config.name, "experiment": config.experiment,
                  "official_global_step": step, "compat": list(config.compat)}
    path = save_checkpoint(out, step, {"model": tensors}, state={"imported_official": provenance},
                           recipe=recipe.resolved(), keep_last=None)
    recipe.dump(out / "recipe.yaml")
    report = {**provenance, "mapped": account.mapped, "dropped": account.dropped,
              "scenetok_only": account.scenetok_only}
    (out / "import.json").write_text(json.dumps(report, indent=1) + "\n")
    logger.info("imported %s (%s): %d tensors mapped, %d dropped, %d scenetok-only", checkpoint, config.name,
                len(account.mapped), len(account.dropped), len(account.scenetok_only))
    return ImportResult(out, path, config, account, step)
