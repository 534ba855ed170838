"""SceneTok: compose image compressor(s), token compressor, decoder and sampler into one model.

::

    context RGB (B, V_c, 3, H, W) + cameras
      -> image_compressor.encode          (B, V_c, C, h, w)   standardised latents
      -> token_compressor                 Gaussian over (B, N, D) scene tokens
    scene tokens + target cameras (B, V_t)
      -> rollout of decoder + sampler     (B, F, C_t, h_t, w_t) target latents
      -> target_image_compressor.decode   (B, V_t, 3, H, W)

All poses are made relative to one reference context camera before anything sees them (the
paper: a random context view in training, the middle one at evaluation), so the model never
depends on the dataset's world frame.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from scenetok import registry, rollout
from scenetok.checkpoint import Checkpoint, load_checkpoint
from scenetok.data.dataset import parse_image_size
from scenetok.geometry.conventions import make_relative, normalize_scene_scale
from scenetok.interfaces import DiagonalGaussian, LatentSpec
from scenetok.nn.utils import count_parameters
from scenetok.recipe import (
    COMMAND_LINE,
    COMPONENT_SECTIONS,
    PROVENANCE_KEY,
    RESERVED_KEYS,
    Recipe,
    RecipeError,
    load_recipe_dict,
    parse_override,
    upgrade_stored_recipe,
)
from scenetok.sections import ModelConfig, RenderConfig
from scenetok.types import Cameras, SceneBatch, Views

log = logging.getLogger(__name__)


def image_size_of(dataset_config: Any) -> tuple[int, int]:
    """``(H, W)`` from a dataset config's ``image_size`` (int or ``[H, W]``)."""
    size = getattr(dataset_config, "image_size", None)
    if size is None:
        raise ValueError("dataset config has no `image_size`")
    height, width = parse_image_size(size, "dataset.image_size")
    return height, width


def _latent_size(spec: LatentSpec, image_size: tuple[int, int], section: str) -> tuple[int, int]:
    height, width = image_size
    if height % spec.spatial_factor or width % spec.spatial_factor:
        raise ValueError(
            f"dataset.image_size {list(image_size)} is not divisible by {section}'s spatial factor "
            f"{spec.spatial_factor}"
        )
    return height // spec.spatial_factor, width // spec.spatial_factor


def _carry_image_size(stored: dict[str, Any], overrides: list[str]) -> list[str]:
    """Overrides for loading a trained model, plus the trained ``dataset.image_size`` unless they set
    it: the networks (positional grids, latent sizes) are built for that size, and replacing the
    dataset node (``dataset.name=re10k dataset.root=...``, evaluating on another dataset) would
    otherwise fall back to the new reader's default size."""
    for text in overrides:
        key, value = parse_override(text)
        if key == "dataset.image_size" or (key == "dataset" and isinstance(value, dict) and "image_size" in value):
            return overrides
    size = (stored.get("dataset") or {}).get("image_size")
    if size is None:
        return overrides
    height, width = parse_image_size(size, "dataset.image_size")
    return [*overrides, f"dataset.image_size=[{height},{width}]"]


def _check_trained_image_size(stored: dict[str, Any], recipe: Recipe) -> None:
    size = (stored.get("dataset") or {}).get("image_size")
    if size is None:
        return
    trained = tuple(parse_image_size(size, "dataset.image_size"))
    wanted = image_size_of(recipe["dataset"].config)
    if wanted != trained:
        raise RecipeError([f"{COMMAND_LINE}: dataset.image_size: {list(wanted)} differs from the trained model's "
                           f"{list(trained)}; its networks are built for that size. Drop the override (the trained "
                           f"size is used) or set dataset.image_size=[{trained[0]},{trained[1]}]"])


def _uninstalled_trained_components(resolved: dict[str, Any], source: str) -> list[str]:
    """For each component of a stored recipe that is not installed any more, a message naming the
    distribution (and version) that provided it when the run was trained."""
    messages = []
    for section, info in (resolved.get(PROVENANCE_KEY) or {}).items():
        kind = COMPONENT_SECTIONS.get(section)
        if kind is None or not isinstance(info, dict) or not info.get("name"):
            continue
        if registry.provider_of(kind, info["name"]) is not None:
            continue
        distribution, version = info.get("distribution"), info.get("version")
        if distribution and distribution not in ("<override>", "<unknown>"):
            pinned = f"{distribution}=={version}" if version and version != "-" else distribution
            messages.append(f"{section}: this run was trained with {kind} {info['name']!r} from {pinned} "
                            f"(recorded in {source}), which is not installed: pip install '{pinned}'")
    return messages


def trained_recipe(checkpoint: Checkpoint, overrides: Iterable[str] = ()) -> Recipe:
    """The recipe a trained run (SceneTok or SceneGen) is loaded with: the one stored in
    ``checkpoint``, brought to the current schema, with ``overrides`` and the trained image size,
    validated once. A component whose plugin is gone is named with the distribution to install; a
    sampler override that changes the trained noise process, or the image size, is refused."""
    stored = upgrade_stored_recipe(checkpoint.recipe)
    source = f"{checkpoint.path}/recipe.json"
    overrides = _carry_image_size(stored, list(overrides))
    try:
        recipe = load_recipe_dict(stored, source=source, overrides=overrides)
    except RecipeError as error:
        missing = _uninstalled_trained_components(checkpoint.recipe, source)
        if missing:
            raise RecipeError(missing + error.errors) from error
        raise
    _check_trained_image_size(stored, recipe)
    # The trained noise process, read from the stored node without validating a second recipe.
    trained = stored["sampler"]
    trained_cls = registry.get_component("sampler", trained["name"], provider=trained.get("provider"))
    trained_process = trained_cls.process(trained_cls.Config(**{
        key: value for key, value in trained.items() if key not in RESERVED_KEYS}))
    wanted_process = recipe["sampler"].cls.process(recipe["sampler"].config)
    if trained_process != wanted_process:
        raise RecipeError([f"sampler: the checkpoint was trained with the {trained['name']!r} sampler "
                           f"(process {trained_process}); it cannot be rendered with process "
                           f"{wanted_process}. Retrain with that sampler instead."])
    return recipe


def trained_state(checkpoint: Checkpoint, ema: bool = True) -> dict[str, Tensor]:
    """The trained networks' weights of ``checkpoint`` (the EMA when stored and ``ema``), with a
    warning when they hold NaN/Inf."""
    use_ema = ema and "ema" in checkpoint.tensors
    state = checkpoint.tensors["ema"] if use_ema else checkpoint.tensors["model"]
    broken = [key for key, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        log.warning("%s: %d of %d %s weight tensors hold NaN/Inf (e.g. %s); renders and metrics will be NaN%s",
                    checkpoint.path, len(broken), len(state), "EMA" if use_ema else "model", broken[0],
                    " (the EMA averaged a diverged step; load with ema=False for the raw weights)"
                    if use_ema else "")
    return state


class SceneTok(nn.Module):
    """The scene autoencoder: ``encode`` views into scene tokens, ``render`` any cameras from them."""

    def __init__(self, recipe: Recipe, device: torch.device | str | None = None):
        super().__init__()
        self.config: ModelConfig = recipe.sections["model"]
        #: The recipe's ``render`` section: what :meth:`render` does unless told otherwise.
        self.render_config: RenderConfig = recipe.sections["render"]
        self.recipe = recipe
        self.image_size = image_size_of(recipe["dataset"].config)
        builders = build_components(recipe, self.image_size, device=device)
        self.image_compressor: nn.Module = builders["image_compressor"]
        # The paper uses a different (video) autoencoder for the targets; default: the same one.
        self.target_image_compressor: nn.Module = builders.get("target_image_compressor", self.image_compressor)
        self.token_compressor: nn.Module = builders["token_compressor"]
        self.decoder: nn.Module = builders["decoder"]
        self.sampler = builders["sampler"]
        self.context_spec: LatentSpec = self.image_compressor.spec
        self.target_spec: LatentSpec = self.target_image_compressor.spec
        self.compressor_frozen = False

    @classmethod
    def from_pretrained(cls, path: str | Path, overrides: Iterable[str] = (), *, ema: bool = True,
                        device: torch.device | str = "cpu") -> SceneTok:
        """A trained SceneTok from a run or checkpoint directory (EMA weights when stored).

        The recipe stored in the checkpoint is validated once, with ``overrides`` applied (e.g.
        ``render.steps=10``); the trained step is ``model.trained_step``. The sampler's noise
        process must be the trained one: a network trained with ``flow`` is never rendered with
        ``ddpm``.

        Example::

            model = SceneTok.from_pretrained("runs/quickstart")
            tokens = model.encode(context).mode()                       # (B, N, D)
            frames = model.render(tokens, target_cameras, steps=4)      # (B, V, 3, H, W)
        """
        checkpoint = load_checkpoint(path, map_location=device)
        model = cls(trained_recipe(checkpoint, overrides)).to(device)
        model.networks().load_state_dict(trained_state(checkpoint, ema))
        model.trained_step = checkpoint.step
        return model.eval()

    def networks(self) -> nn.ModuleDict:
        """The trained networks (token compressor + decoder) as one container, as checkpoints and
        EMA store them. Frozen autoencoders are not stored: their weights come from their own files."""
        return nn.ModuleDict({"token_compressor": self.token_compressor, "decoder": self.decoder})

    # ------------------------------------------------------------------------------------------
    # Encoding
    # ------------------------------------------------------------------------------------------

    def reference_index(self, num_views: int, training: bool, generator: torch.Generator | None = None) -> int:
        mode = self.config.reference_view if training else "middle"
        if mode == "first":
            return 0
        if mode == "middle":
            return num_views // 2
        return int(torch.randint(num_views, (1,), generator=generator).item())

    def relative_batch(self, batch: SceneBatch, reference: int) -> SceneBatch:
        """Poses of context and target relative to context view ``reference`` (and rescaled to
        ``model.scene_scale`` when it is set)."""
        # One call for both: the target views are appended after the context views.
        num_context = batch.context.num_views
        cameras = self.relative_cameras(Cameras.cat([batch.context.cameras, batch.target.cameras]), num_context,
                                        reference)
        return SceneBatch(
            context=batch.context.replace(cameras=cameras[:, :num_context]),
            target=batch.target.replace(cameras=cameras[:, num_context:]),
            scenes=batch.scenes,
        )

    def relative_cameras(self, cameras: Cameras, num_context: int, reference: int) -> Cameras:
        """Cameras ``(B, V)`` whose first ``num_context`` views are the context, made relative to
        context view ``reference``; with ``model.scene_scale`` > 0 also scaled so that the context
        cameras have that spread (:func:`~scenetok.geometry.conventions.normalize_scene_scale`)."""
        cameras = make_relative(cameras, reference)
        if self.config.scene_scale > 0:
            cameras = normalize_scene_scale(cameras, cameras[:, :num_context], self.config.scene_scale)
        return cameras

    def context_latents(self, views: Views, sample: bool | None = None) -> Tensor:
        """Standardised context latents ``(B, V, C, h, w)`` (cached ones if the views carry them)."""
        if views.latents is not None:
            return views.latents
        if views.images is None:
            raise ValueError("context views carry neither images nor cached latents")
        sample = (self.config.context_latents == "sample" and self.training) if sample is None else sample
        with torch.no_grad():
            return self.image_compressor.encode(views.images, sample=sample)

    def target_latents(self, views: Views) -> Tensor:
        if views.latents is not None:
            return views.latents
        if views.images is None:
            raise ValueError("target views carry neither images nor cached latents")
        with torch.no_grad():
            return self.target_image_compressor.encode(views.images, sample=False)

    def encode(self, context: Views, sample: bool | None = None) -> DiagonalGaussian:
        """Context views (poses already relative) -> Gaussian over scene tokens ``(B, N, D)``."""
        latents = self.context_latents(context, sample=sample)
        if self.compressor_frozen:
            with torch.no_grad():
                return self.token_compressor(latents, context.cameras)
        return self.token_compressor(latents, context.cameras)

    # ------------------------------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------------------------------

    def loss(self, batch: SceneBatch, kl_weight: float = 0.0, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The SceneTok training objective for one batch.

        ``loss = mean_b [ mean_{f,c,h,w} (pred - target)^2 + kl_weight * KL_b ]``; the KL term is
        dropped once the token compressor is frozen.

        Returns a dict with ``loss`` (scalar, differentiable), ``mse`` and ``kl`` (detached).
        """
        reference = self.reference_index(batch.context.num_views, training=True, generator=generator)
        batch = self.relative_batch(batch, reference)
        distribution = self.encode(batch.context)
        tokens = distribution.sample(generator=generator)

        clean = self.target_latents(batch.target)
        bsz, frames = clean.shape[:2]
        t = self.sampler.sample_timesteps(bsz, frames, generator=generator, device=clean.device)
        noise = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
        noisy = self.sampler.add_noise(clean, noise, t)
        target = self.sampler.training_target(clean, noise, t)

        token_mask = self._training_token_mask(tokens, generator)
        prediction = self.decoder(noisy, self.sampler.network_timesteps(t), batch.target.cameras, tokens, token_mask)
        mse = (prediction.float() - target.float()).pow(2).flatten(1).mean(1)
        kl = distribution.kl().float()
        total = mse
        if not self.compressor_frozen and kl_weight > 0:
            total = total + kl_weight * self.config.kl_scale * kl
        return {"loss": total.mean(), "mse": mse.mean().detach(), "kl": kl.mean().detach()}

    def forward(self, batch: SceneBatch, kl_weight: float = 0.0, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``forward`` is the training loss, so that DistributedDataParallel can wrap the model."""
        return self.loss(batch, kl_weight=kl_weight, generator=generator)

    def _training_token_mask(self, tokens: Tensor, generator: torch.Generator | None) -> Tensor | None:
        """``(B, N)`` bool, True = use the null token. Whole samples with ``cfg_dropout``; random
        subsets with ``token_mask_ratio``."""
        cfg, ratio = self.config.cfg_dropout, self.config.token_mask_ratio
        if not self.training or (cfg == 0 and ratio == 0):
            return None
        bsz, count = tokens.shape[:2]
        mask = torch.zeros(bsz, count, dtype=torch.bool, device=tokens.device)
        if ratio > 0:
            fraction = torch.rand(bsz, 1, generator=generator) * ratio
            scores = torch.rand(bsz, count, generator=generator)
            mask |= (scores < fraction).to(tokens.device)
        if cfg > 0:
            drop = (torch.rand(bsz, generator=generator) < cfg).to(tokens.device)
            mask |= drop[:, None]
        return mask

    # ------------------------------------------------------------------------------------------
    # Rendering
    # ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def render(
        self,
        scene_tokens: Tensor,
        target_cameras: Cameras,
        settings: RenderConfig | None = None,
        *,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        progress: bool = False,
        decode: bool = True,
        **changes: Any,
    ) -> Tensor:
        """Render ``target_cameras`` (B, V) from ``scene_tokens`` (B, N, D).

        Poses must be relative to the same reference camera as the tokens' context views. How to
        render (steps, rollout strategy and window, guidance) is ``settings`` (default: the
        recipe's ``render`` section, :attr:`render_config`), with keyword ``changes`` of its fields
        on top, e.g. ``render(tokens, cameras, steps=4, guidance=2.0)``. ``noise`` is the initial
        noise ``(B, F, C, h, w)`` (default: drawn from ``generator``).

        Returns images ``(B, V, 3, H, W)`` in ``[0, 1]`` (or target latents ``(B, F, C, h, w)`` if
        ``decode=False``).
        """
        settings = settings or self.render_config
        if changes:
            settings = dataclasses.replace(settings, **changes)
        spec = self.target_spec
        groups = spec.frame_groups(int(target_cameras.shape[1]))
        height, width = _latent_size(spec, self.image_size, "target_image_compressor")
        schedule = rollout.schedule_for(settings, self.sampler, frames=len(groups),
                                        max_window=type(self.decoder).max_latent_frames(self.decoder.config))

        def denoise(x: Tensor, t: Tensor, frame_index: Tensor) -> Tensor:
            cameras = target_cameras[:, [f for i in frame_index.tolist() for f in groups[i]]]
            net_t = self.sampler.network_timesteps(t)
            cond = self.decoder(x, net_t, cameras, scene_tokens)
            if settings.guidance == 1.0:
                return cond
            return rollout.guided(cond, self.decoder(x, net_t, cameras, None), settings.guidance)

        shape = (scene_tokens.shape[0], len(groups), spec.channels, height, width)
        latents = rollout.rollout(denoise, self.sampler, shape, schedule, generator=generator, noise=noise,
                                  progress=progress, device=scene_tokens.device, dtype=scene_tokens.dtype)
        if not decode:
            return latents
        return self.target_image_compressor.decode(latents).clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, batch: SceneBatch, deterministic: bool = True, generator: torch.Generator | None = None,
                    **render_kwargs: Any) -> Tensor:
        """Encode ``batch.context`` and render ``batch.target`` cameras (evaluation convention:
        poses relative to the middle context view). ``deterministic`` uses posterior means."""
        batch = self.relative_batch(batch, self.reference_index(batch.context.num_views, training=False))
        distribution = self.encode(batch.context, sample=not deterministic)
        tokens = distribution.mode() if deterministic else distribution.sample(generator=generator)
        return self.render(tokens, batch.target.cameras, generator=generator, **render_kwargs)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def freeze_compressor(self) -> None:
        """Freeze the token compressor (the paper: after 150k steps); only the decoder trains on."""
        self.compressor_frozen = True
        self.token_compressor.requires_grad_(False)
        self.token_compressor.eval()

    def train(self, mode: bool = True) -> SceneTok:
        super().train(mode)
        if self.compressor_frozen:
            self.token_compressor.eval()
        return self


@contextlib.contextmanager
def _blame(section: str, name: str) -> Any:
    """Prefix a component constructor's error with its recipe section, so that e.g. a
    ``patch_size`` problem says whose ``patch_size`` it is."""
    try:
        yield
    except (ValueError, TypeError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        if message.startswith(f"{section} "):
            raise
        raise type(error)(f"{section} {name!r}: {message}") from error


def build_components(recipe: Recipe, image_size: tuple[int, int], device: torch.device | str | None = None,
                     networks_only: bool = False) -> dict[str, Any]:
    """Instantiate the model components of ``recipe`` with their build arguments.

    ``networks_only`` builds just the token compressor, decoder and sampler: the image compressors
    are described by their :class:`LatentSpec` alone (no weights are read), which is what
    validation and parameter counting need.
    """
    out: dict[str, Any] = {}
    image = recipe["image_compressor"]
    target = recipe.component("target_image_compressor")
    context_spec = image.cls.latent_spec(image.config)
    target_spec = target.cls.latent_spec(target.config) if target is not None else context_spec
    with torch.device(device) if device is not None else contextlib.nullcontext():
        if not networks_only:
            out["image_compressor"] = image.cls(image.config)
            if target is not None:
                out["target_image_compressor"] = target.cls(target.config)
        tokens = recipe["token_compressor"]
        with _blame("token_compressor", tokens.name):
            out["token_compressor"] = tokens.cls(
                tokens.config, in_channels=context_spec.channels,
                latent_size=_latent_size(context_spec, image_size, "image_compressor"),
            )
            _, token_dim = tokens.cls.token_shape(tokens.config)
        decoder = recipe["decoder"]
        with _blame("decoder", decoder.name):
            out["decoder"] = decoder.cls(
                decoder.config, in_channels=target_spec.channels,
                latent_size=_latent_size(target_spec, image_size,
                                         "target_image_compressor" if target is not None else "image_compressor"),
                token_dim=token_dim, latent_spec=target_spec,
            )
    sampler = recipe["sampler"]
    out["sampler"] = sampler.cls(sampler.config)
    return out


#: Bytes one trainable parameter costs in a training step: fp32 weight, gradient and the two AdamW
#: moments (activations come on top, so this is a lower bound).
TRAIN_BYTES_PER_PARAMETER = 16
#: Config fields that stack repeated blocks; the size estimate builds with 1 and 2 of them.
_DEPTH_FIELDS = ("depth", "num_layers", "layers")


def machine_memory_bytes() -> int:
    """Memory a training step can use here: the GPU's when one is present, else physical RAM
    (``SCENETOK_MEMORY_BYTES`` overrides both, e.g. to validate for a bigger machine)."""
    import os

    if os.environ.get("SCENETOK_MEMORY_BYTES"):
        return int(float(os.environ["SCENETOK_MEMORY_BYTES"]))
    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not POSIX: no limit known
        return 2**62


def _with_depth(spec: Any, depth: int) -> Any:
    config = spec.config
    changes = {f.name: depth for f in dataclasses.fields(config)
               if f.name in _DEPTH_FIELDS and isinstance(getattr(config, f.name), int)}
    return dataclasses.replace(spec, config=dataclasses.replace(config, **changes)) if changes else spec


def estimate_trainable_parameters(recipe: Recipe, image_size: tuple[int, int]) -> dict[str, int]:
    """Trainable parameters of the token compressor and decoder *without* building them at their
    depth: both are built on the meta device with 1 and 2 blocks and the count is extrapolated
    linearly in ``depth`` (exact for stacks of identical blocks), so ``decoder.depth=1000000000``
    is measured in milliseconds instead of constructing a billion modules."""
    counts: dict[int, dict[str, int]] = {}
    for depth in (1, 2):
        shallow = dataclasses.replace(recipe, components={
            section: _with_depth(spec, depth) if section in ("token_compressor", "decoder") else spec
            for section, spec in recipe.components.items()})
        built = build_components(shallow, image_size, device="meta", networks_only=True)
        counts[depth] = {section: count_parameters(built[section]) for section in ("token_compressor", "decoder")}
    out = {}
    for section in ("token_compressor", "decoder"):
        config = recipe[section].config
        depth = max([getattr(config, f.name) for f in dataclasses.fields(config)
                     if f.name in _DEPTH_FIELDS and isinstance(getattr(config, f.name), int)] or [1])
        per_block = counts[2][section] - counts[1][section]
        out[section] = counts[1][section] + (depth - 1) * per_block
    return out


def check_model_size(recipe: Recipe, image_size: tuple[int, int]) -> str | None:
    """An error message when one training step of ``recipe`` cannot fit this machine, naming the
    parameter count and the memory estimate; ``None`` when it may fit."""
    try:
        parameters = estimate_trainable_parameters(recipe, image_size)
    except (ValueError, TypeError, KeyError, RuntimeError, ZeroDivisionError, OverflowError) as error:
        log.debug("size estimate skipped: %s", error)
        return None  # the full build below reports the configuration error itself
    total = sum(parameters.values())
    needed = total * TRAIN_BYTES_PER_PARAMETER
    available = machine_memory_bytes()
    if needed <= available:
        return None
    detail = ", ".join(f"{section} {count:,}" for section, count in parameters.items())
    return (f"model: {total:,} trainable parameters ({detail}) need at least {needed / 2**30:,.1f} GiB for one "
            f"training step ({TRAIN_BYTES_PER_PARAMETER} bytes each: weights, gradients, AdamW moments); this "
            f"machine has {available / 2**30:,.1f} GiB. Lower decoder/token_compressor depth or width "
            f"(SCENETOK_MEMORY_BYTES overrides the machine size).")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _check_view_counts(dataset: Any) -> list[str]:
    """View counts that no scene can satisfy, where the dataset config says how long its scenes or
    context windows are (``frames_per_scene``, ``window_max``): caught here instead of every
    sample being skipped at training time."""
    errors = []
    views = getattr(dataset, "context_views", None)
    if not isinstance(views, int):
        return errors
    frames = getattr(dataset, "frames_per_scene", None)
    if isinstance(frames, int) and frames > 0 and views > frames:
        errors.append(f"dataset.context_views: {views} distinct context views cannot be drawn from scenes of "
                      f"dataset.frames_per_scene={frames} frames")
    window = getattr(dataset, "window_max", None)
    if isinstance(window, int) and window > 0 and views > window:
        errors.append(f"dataset.context_views: {views} distinct context views cannot be drawn from a context "
                      f"window of dataset.window_max={window} frames")
    return errors


def check_recipe(recipe: Recipe) -> list[str]:
    """Cross-component checks on a validated recipe (no weights, no data; builds on ``meta``).

    Returns error messages naming the recipe keys involved.
    """
    errors: list[str] = []
    try:
        image_size = image_size_of(recipe["dataset"].config)
    except (ValueError, TypeError) as error:
        return [f"dataset.image_size: {error}"]
    image = recipe["image_compressor"]
    target = recipe.component("target_image_compressor") or image
    # Without a separate target compressor the context one serves both: check (and report) it once.
    checked = [("image_compressor", image)]
    if recipe.component("target_image_compressor") is not None:
        checked.append(("target_image_compressor", target))
    for section, spec in checked:
        latent = spec.cls.latent_spec(spec.config)
        try:
            _latent_size(latent, image_size, section)
        except ValueError as error:
            errors.append(f"{section}: {error}")
    if image.cls.latent_spec(image.config).temporal_factor != 1:
        errors.append(f"image_compressor: {image.name!r} is a video autoencoder; the context views are "
                      "independent images and need an image autoencoder (temporal factor 1)")
    target_spec = target.cls.latent_spec(target.config)
    target_views = getattr(recipe["dataset"].config, "target_views", None)
    if isinstance(target_views, int):
        try:
            target_spec.latent_frames(target_views)
        except ValueError as error:
            errors.append(f"dataset.target_views: {target_views} frames do not fit the target autoencoder "
                          f"{target.name!r}: {error}")
    errors.extend(_check_view_counts(recipe["dataset"].config))
    if errors:
        return errors
    too_big = check_model_size(recipe, image_size)
    if too_big is not None:
        return [too_big]
    # Building on the meta device runs every constructor's own validation for free.
    try:
        build_components(recipe, image_size, device="meta", networks_only=True)
    except (ValueError, TypeError, KeyError, RuntimeError, ZeroDivisionError, OverflowError) as error:
        # RuntimeError: torch's own argument checks (e.g. a negative init std)
        errors.append(f"model: the components do not fit together: {_first_line(error)}")
    return errors


def summary(recipe: Recipe) -> dict[str, Any]:
    """Parameter counts of the trained networks (built on the meta device: no memory, no weights
    read) and the representation size. Frozen autoencoders are not part of the trained count, as in
    the paper; where a compressor counts its own network (``parameter_count``) that count is listed
    with the published figure (``released_parameters``)."""
    image_size = image_size_of(recipe["dataset"].config)
    components = build_components(recipe, image_size, device="meta", networks_only=True)
    rows: dict[str, Any] = {}
    for section in ("image_compressor", "target_image_compressor"):
        spec = recipe.component(section)
        if spec is not None:
            rows[section] = {"name": spec.name, "parameters": None, "latent": dataclasses.asdict(
                spec.cls.latent_spec(spec.config)), "frozen_parameters": spec.cls.parameter_count(spec.config),
                "released_parameters": spec.cls.released_parameters}
    for section in ("token_compressor", "decoder"):
        rows[section] = {"name": recipe[section].name, "parameters": count_parameters(components[section])}
    num_tokens, token_dim = recipe["token_compressor"].cls.token_shape(recipe["token_compressor"].config)
    trainable = rows["token_compressor"]["parameters"] + rows["decoder"]["parameters"]
    return {
        "components": rows,
        "trainable_parameters": trainable,
        "scene_tokens": [num_tokens, token_dim],
        "floats_per_scene": num_tokens * token_dim,
        "image_size": list(image_size),
        "sampler": recipe["sampler"].cls.process(recipe["sampler"].config),
    }
