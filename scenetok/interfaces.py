"""The abstract component interfaces: what every image compressor, token compressor, decoder,
sampler and dataset (core or plugin) implements.

Conventions shared by all kinds
-------------------------------
* Each component class has a nested ``Config`` dataclass (typed fields with defaults, each
  documented in the class docstring or a field comment). The constructor takes that config as its
  first argument. Recipes fill the config by name; nothing in a recipe is ever imported.
* ``presets`` is a class-level ``dict[str, dict]`` of config overrides (timm-style presets as data),
  e.g. ``{"S": {"width": 256, "depth": 6}, "L": {...}}``. A recipe selects one with ``preset: L``;
  fields given next to it win over the preset.
* Values that depend on *another* component (the latent channels a token compressor consumes, the
  scene-token width a decoder cross-attends to, ...) are not config fields: the model passes them
  to the constructor as keyword-only *build arguments*, documented per kind below.
* Capabilities are declared as classmethods computed from the config alone (no weights, no
  instantiation), so ``scenetok validate`` can check a recipe across components without building
  anything.
* Tensor shapes: ``B`` batch, ``V`` views/frames, ``F`` latent frames, ``C`` channels,
  ``H, W`` pixels, ``h, w`` latent grid, ``N`` scene tokens, ``D`` token width.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # keep this module importable for metadata tooling; torch is needed at run time
    from torch import Tensor

    from scenetok.types import Cameras

import torch
from torch import nn

KINDS: tuple[str, ...] = (
    "image_compressor",
    "token_compressor",
    "decoder",
    "sampler",
    "dataset",
)


class Component:
    """Mixin shared by every component kind: the ``Config`` / ``presets`` convention."""

    #: Nested config dataclass; every subclass must define its own.
    Config: ClassVar[type]
    #: Named config overrides, e.g. ``{"S": {...}, "B": {...}, "L": {...}}``.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def default_config(cls, preset: str | None = None, **overrides: Any) -> Any:
        """Build a ``Config``: defaults, then ``presets[preset]``, then ``overrides``."""
        values: dict[str, Any] = {}
        if preset is not None:
            if preset not in cls.presets:
                raise KeyError(
                    f"{cls.__name__} has no preset {preset!r}; available: {sorted(cls.presets) or 'none'}"
                )
            values.update(cls.presets[preset])
        values.update(overrides)
        return cls.Config(**values)


@dataclass(frozen=True)
class LatentSpec:
    """What an image compressor produces, declared from its config alone.

    Attributes:
        channels: latent channels ``C``.
        spatial_factor: pixels per latent cell along each image axis (``H = h * spatial_factor``).
        temporal_factor: frames per latent frame (1 for image autoencoders, 4 for video ones).
        first_frame_alone: video autoencoders with a causal first frame (Wan): frame 0 gets a latent
            frame of its own and each following latent frame covers ``temporal_factor`` frames, so
            ``V = 1 + temporal_factor * (F - 1)`` per chunk.
        chunk_frames: for causal video autoencoders, frames per independently encoded chunk (17 for
            the paper's Wan setup) or 0 for one chunk per sequence.
    """

    channels: int
    spatial_factor: int
    temporal_factor: int = 1
    first_frame_alone: bool = False
    chunk_frames: int = 0

    def latent_frames(self, num_frames: int) -> int:
        """Number of latent frames ``F`` for ``num_frames`` input frames (validates divisibility)."""
        if self.temporal_factor == 1:
            return num_frames
        chunk = self.chunk_frames or num_frames
        if num_frames % chunk:
            raise ValueError(f"{num_frames} frames is not a multiple of the {chunk}-frame chunk")
        if self.first_frame_alone:
            if (chunk - 1) % self.temporal_factor:
                raise ValueError(
                    f"a causal video chunk needs 1 + {self.temporal_factor}k frames, got {chunk}"
                )
            per_chunk = 1 + (chunk - 1) // self.temporal_factor
        else:
            if chunk % self.temporal_factor:
                raise ValueError(f"{chunk} frames is not a multiple of {self.temporal_factor}")
            per_chunk = chunk // self.temporal_factor
        return per_chunk * (num_frames // chunk)

    def frame_groups(self, num_frames: int) -> list[list[int]]:
        """For each latent frame, the indices of the input frames it covers (in order)."""
        if self.temporal_factor == 1:
            return [[i] for i in range(num_frames)]
        chunk = self.chunk_frames or num_frames
        self.latent_frames(num_frames)  # validates
        groups: list[list[int]] = []
        for start in range(0, num_frames, chunk):
            if self.first_frame_alone:
                groups.append([start])
                first = start + 1
            else:
                first = start
            for g in range(first, start + chunk, self.temporal_factor):
                groups.append(list(range(g, g + self.temporal_factor)))
        return groups


class ImageCompressor(Component, nn.Module, abc.ABC):
    """Maps RGB views to standardised latents and back (VA-VAE, SD-VAE, pixel patches, Wan, ...).

    The latent normalisation (scale/shift or per-channel statistics) lives *inside* the component:
    the rest of the system only sees standardised latents (roughly zero mean, unit variance).

    Build arguments: none.
    """

    #: Whether the component has trainable weights that SceneTok should optimise (pixel: no).
    trainable: ClassVar[bool] = False

    @classmethod
    @abc.abstractmethod
    def latent_spec(cls, config: Any) -> LatentSpec:
        """Channels / spatial / temporal factors this config produces (no instantiation)."""

    @property
    def spec(self) -> LatentSpec:
        return type(self).latent_spec(self.config)  # type: ignore[attr-defined]

    @abc.abstractmethod
    def encode(self, images: Tensor, sample: bool = False) -> Tensor:
        """``(B, V, 3, H, W)`` in ``[0, 1]`` -> standardised latents ``(B, F, C, h, w)``.

        ``sample=False`` returns the posterior mean (deterministic); ``True`` a posterior sample.
        """

    @abc.abstractmethod
    def decode(self, latents: Tensor) -> Tensor:
        """Standardised latents ``(B, F, C, h, w)`` -> images ``(B, V, 3, H, W)`` in ``[0, 1]``."""


@dataclass
class DiagonalGaussian:
    """A diagonal Gaussian over scene tokens, ``mean``/``logvar`` of shape ``(B, N, D)``."""

    mean: Tensor
    logvar: Tensor

    def __post_init__(self) -> None:
        # The same clamp as common LDM practice keeps exp() finite early in training.
        self.logvar = self.logvar.clamp(-30.0, 20.0)

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> Tensor:
        return self.mean

    def kl(self) -> Tensor:
        """KL to N(0, I), summed over tokens and channels: shape ``(B,)``."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


class TokenCompressor(Component, nn.Module, abc.ABC):
    """Compresses the latents of ``V`` posed context views into ``N`` unordered scene tokens.

    Build arguments: ``in_channels`` (latent channels of the context image compressor) and
    ``latent_size`` (``(h, w)`` of a context latent).

    Must be permutation-invariant over views and accept any ``V`` at inference.
    """

    @classmethod
    @abc.abstractmethod
    def token_shape(cls, config: Any) -> tuple[int, int]:
        """``(N, D)``: number of scene tokens and their width."""

    @abc.abstractmethod
    def forward(self, latents: Tensor, cameras: Cameras) -> DiagonalGaussian:
        """``latents (B, V, C, h, w)``, cameras with shape ``(B, V)`` -> Gaussian over ``(B, N, D)``."""


class Decoder(Component, nn.Module, abc.ABC):
    """The renderer's denoising network: predicts the sampler's target for noisy target latents.

    Build arguments: ``in_channels`` and ``latent_size`` (target latents), ``token_dim`` (scene
    token width ``D``) and ``latent_spec`` (the target compressor's :class:`LatentSpec`, so the
    camera embedding can group raw frames per latent frame).

    Scene tokens enter only through the decoder (cross-attention in the paper's DiT). Passing
    ``scene_tokens=None`` selects the learned null tokens (classifier-free guidance).
    """

    @classmethod
    @abc.abstractmethod
    def max_latent_frames(cls, config: Any) -> int:
        """Largest number of latent frames one forward pass accepts (the rollout window)."""

    @abc.abstractmethod
    def forward(
        self,
        noisy_latents: Tensor,
        timesteps: Tensor,
        cameras: Cameras,
        scene_tokens: Tensor | None,
        token_mask: Tensor | None = None,
    ) -> Tensor:
        """Predict the sampler's target.

        Args:
            noisy_latents: ``(B, F, C, h, w)``.
            timesteps: ``(B, F)`` per-latent-frame timesteps, already in the network's input scale
                (see :meth:`Sampler.network_timesteps`).
            cameras: cameras of the raw target frames covered by the ``F`` latent frames, shape
                ``(B, V)`` with ``V`` given by the target :class:`LatentSpec`.
            scene_tokens: ``(B, N, D)``, or ``None`` for the unconditional (null-token) branch.
            token_mask: optional ``(B, N)`` bool, ``True`` = replace that token by the null token.

        Returns:
            ``(B, F, C, h, w)``.
        """


class Sampler(Component, abc.ABC):
    """Owns the whole noise process: training noising, prediction target, timestep distribution,
    the network's timestep scale and inference stepping.

    Time is continuous, ``t`` in ``[0, 1]`` with ``t = 1`` pure noise and ``t = 0`` clean data, for
    every sampler (a DDPM maps ``t`` to its discrete steps internally). That shared scale is what
    lets rollout strategies build one scheduling matrix for any sampler. Every method accepts
    per-latent-frame timesteps of shape ``(B, F)``.

    Build arguments: none.
    """

    @classmethod
    @abc.abstractmethod
    def prediction_target(cls, config: Any) -> str:
        """What the network is trained to predict: ``"flow"``, ``"epsilon"`` or ``"v"``."""

    @classmethod
    def process(cls, config: Any) -> str:
        """Identifies a trained network's noise process, e.g. ``"flow/flow"``, ``"ddpm/epsilon"``.

        A checkpoint trained with one process cannot be rendered with another.
        """
        return f"{cls.process_family()}/{cls.prediction_target(config)}"

    @classmethod
    @abc.abstractmethod
    def process_family(cls) -> str:
        """``"flow"`` or ``"ddpm"`` (or a plugin's own family)."""

    @abc.abstractmethod
    def sample_timesteps(self, batch: int, frames: int, generator: torch.Generator | None = None,
                         device: torch.device | str | None = None) -> Tensor:
        """Training timesteps ``(B, F)`` in ``[0, 1]`` from the configured distribution."""

    @abc.abstractmethod
    def add_noise(self, clean: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """``x_t`` from ``clean``/``noise`` ``(B, F, C, h, w)`` and ``t`` ``(B, F)``."""

    @abc.abstractmethod
    def training_target(self, clean: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the network should output for ``x_t`` (same shape as ``clean``)."""

    @abc.abstractmethod
    def network_timesteps(self, t: Tensor) -> Tensor:
        """Convert ``t`` ``(B, F)`` to the scale the network's timestep embedding expects."""

    @abc.abstractmethod
    def inference_levels(self, steps: int) -> Tensor:
        """The ``steps + 1`` noise levels of a full denoising pass, from 1 down to 0 (float64)."""

    @abc.abstractmethod
    def step(self, x_t: Tensor, prediction: Tensor, t: Tensor, t_next: Tensor,
             generator: torch.Generator | None = None) -> Tensor:
        """Move ``x_t`` from level ``t`` to ``t_next`` (both ``(B, F)``; frames with
        ``t == t_next`` must be returned unchanged)."""


class SceneDataset(Component, torch.utils.data.Dataset, abc.ABC):
    """A collection of posed-image scenes.

    Implementations provide scene-level access (``scenes``, ``num_frames``, ``load_views``); the
    base class turns that into training samples with a view sampler (``__getitem__``) and into
    evaluation samples from an evaluation index. Images are ``[0, 1]`` RGB at the configured
    resolution; cameras are OpenCV c2w + normalised intrinsics (see :mod:`scenetok.types`).

    A sample is a dict ``{"scene": key, "context": {...}, "target": {...}}``; see
    :func:`scenetok.types.collate_scenes` for the view-dict keys and shapes.

    Build arguments: none (the model-independent config says everything).
    """

    @abc.abstractmethod
    def scenes(self) -> list[str]:
        """Scene keys of the configured split, in a stable order."""

    @abc.abstractmethod
    def num_frames(self, scene: str) -> int:
        """Number of frames the scene has."""

    @abc.abstractmethod
    def load_views(self, scene: str, indices: list[int]) -> dict[str, Tensor]:
        """Views ``indices`` of ``scene`` as a view dict: ``images (V, 3, H, W)``,
        ``extrinsics (V, 4, 4)``, ``intrinsics (V, 3, 3)``, ``indices (V,)`` (+ optional ``depths``).

        Raises :class:`CorruptSampleError` when the data on disk is unusable.
        """

    # ---- concrete machinery shared by every dataset ----------------------------------------
    # The base class reads these config fields (see
    # scenetok.components.datasets.common.SceneDatasetConfig): context_views, target_views, seed,
    # index, window_min, window_max, context_sampling, target_clips, target_margin, report_path.

    #: How many following samples ``__getitem__`` tries when a sample is corrupt.
    max_skip_attempts: ClassVar[int] = 16

    def frame_cameras(self, scene: str) -> Cameras | None:
        """All frames' cameras (batch shape ``(num_frames,)``, intrinsics exactly as ``load_views``
        returns them) when they are cheap to get without decoding images, else ``None``. Used for
        farthest-point view sampling and camera paths."""
        return None

    @property
    def skipped(self) -> list[dict[str, str]]:
        """Everything this process skipped: ``{"dataset", "scene", "file", "reason"}`` records."""
        if "_skipped" not in self.__dict__:
            self._skipped: list[dict[str, str]] = []
        return self._skipped

    def record_skip(self, scene: str, reason: str, file: str | None = None) -> None:
        """Warn about an unusable scene/sample, remember it, and append it to ``config.report_path``."""
        import json
        import logging

        record = {"dataset": type(self).__name__, "scene": scene, "file": file or "", "reason": reason}
        logging.getLogger(type(self).__module__).warning(
            "skipping scene %s%s: %s", scene, f" ({file})" if file else "", reason
        )
        self.skipped.append(record)
        report_path = getattr(getattr(self, "config", None), "report_path", None)
        if report_path:
            # one line per record, appended: several DataLoader workers can share the file
            with open(report_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def set_epoch(self, epoch: int) -> None:
        """Change the training view selection (samples depend on ``(seed, epoch, index)``)."""
        self._epoch = int(epoch)

    def evaluation_entries(self) -> list[Any] | None:
        """Entries of ``config.index`` whose scene this dataset has (``None`` without an index);
        entries of missing scenes are recorded as skipped. A key ``<scene>_<n>`` that is not a scene
        falls back to ``<scene>`` (the DL3DV ``_1`` window suffix)."""
        if "_evaluation_entries" in self.__dict__:
            return self._evaluation_entries
        path = getattr(getattr(self, "config", None), "index", None)
        entries = None
        if path:
            import re

            from scenetok.data.index import read_evaluation_index

            available = set(self.scenes())
            entries = []
            for entry in read_evaluation_index(path):
                scene = entry.scene
                if scene not in available:
                    stem = re.sub(r"_\d+$", "", scene)
                    if stem in available:
                        scene = stem
                    else:
                        self.record_skip(entry.scene, "in the evaluation index but not in the dataset", str(path))
                        continue
                entries.append(dataclasses.replace(entry, scene=scene))
        self._evaluation_entries = entries
        return entries

    def __len__(self) -> int:
        entries = self.evaluation_entries()
        return len(entries) if entries is not None else len(self.scenes())

    def select_views(self, item: int) -> tuple[str, list[int], list[int]]:
        """``(scene, context indices, target indices)`` of sample ``item``: from the evaluation
        index when one is configured, else from the training view sampler."""
        entries = self.evaluation_entries()
        if entries is not None:
            entry = entries[item]
            return entry.scene, list(entry.context), list(entry.target)
        from scenetok.components.datasets.view_sampling import sample_training_views, stable_seed

        config = self.config  # type: ignore[attr-defined]
        scene = self.scenes()[item]
        generator = torch.Generator().manual_seed(
            stable_seed("train", config.seed, getattr(self, "_epoch", 0), item)
        )
        cameras = self.frame_cameras(scene)
        context, target = sample_training_views(
            self.num_frames(scene),
            context_views=config.context_views,
            target_views=config.target_views,
            generator=generator,
            window_min=config.window_min,
            window_max=config.window_max,
            context_sampling=config.context_sampling,
            target_clips=config.target_clips,
            target_margin=config.target_margin,
            extrinsics=None if cameras is None else cameras.extrinsics,
        )
        return scene, context, target

    def load_sample(self, item: int) -> dict[str, Any]:
        """Sample ``item`` without skip handling (raises :class:`CorruptSampleError`)."""
        return self.load_selection(*self.select_views(item))

    def load_selection(self, scene: str, context: list[int], target: list[int]) -> dict[str, Any]:
        """The sample dict for explicit ``context`` / ``target`` frames of ``scene``: the one place
        training, evaluation and rendering load views through (override it to post-process
        samples). Raises :class:`CorruptSampleError`."""
        frames = sorted(set(context) | set(target))
        num_frames = self.num_frames(scene)
        if frames[-1] >= num_frames:
            raise CorruptSampleError(f"frame {frames[-1]} requested but scene {scene} has {num_frames} frames")
        views = self.load_views(scene, frames)  # decode every frame once, even if shared
        position = {frame: i for i, frame in enumerate(frames)}

        def pick(indices: list[int]) -> dict[str, Tensor]:
            rows = torch.tensor([position[i] for i in indices], dtype=torch.long)
            out = {key: value[rows] for key, value in views.items() if key != "indices"}
            out["indices"] = torch.tensor(indices, dtype=torch.long)
            return out

        return {"scene": scene, "context": pick(context), "target": pick(target)}

    def __getitem__(self, item: int) -> dict[str, Any]:
        """A sample dict (see :func:`scenetok.types.collate_scenes`). A corrupt sample is skipped
        (warning + :attr:`skipped` + report) and the next one is returned instead, so with an
        evaluation index a caller should trust the returned ``"scene"`` key, not the position."""
        length = len(self)
        if not 0 <= item < length:
            raise IndexError(f"sample {item} out of range for {length} samples")
        errors = []
        for attempt in range(min(self.max_skip_attempts, length)):
            current = (item + attempt) % length
            try:
                return self.load_sample(current)
            except CorruptSampleError as error:
                scene = self.select_scene_key(current)
                self.record_skip(scene, str(error))
                errors.append(f"{scene}: {error}")
        raise CorruptSampleError(
            f"{len(errors)} consecutive samples from {item} are unusable: " + "; ".join(errors)
        )

    def select_scene_key(self, item: int) -> str:
        """The scene of sample ``item`` (cheap; no view selection)."""
        entries = self.evaluation_entries()
        return entries[item].scene if entries is not None else self.scenes()[item]


class CorruptSampleError(RuntimeError):
    """A sample on disk is unusable (corrupt file, missing frame, ...). Datasets raise it with a
    message naming the file and scene; loaders skip the sample, warn, and record it in a report."""
