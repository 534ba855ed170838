"""The abstract component interfaces: what every image compressor, token compressor, decoder,
sampler, dataset and scene generator (core or plugin) implements.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # types only: scenetok.types imports nothing from here, but keep the ABCs light
    from scenetok.types import Cameras

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
    #: Parameter count of the published weights, where known (``scenetok model summary`` shows it
    #: next to :meth:`parameter_count`).
    released_parameters: ClassVar[int | None] = None

    @classmethod
    @abc.abstractmethod
    def latent_spec(cls, config: Any) -> LatentSpec:
        """Channels / spatial / temporal factors this config produces (no instantiation)."""

    @classmethod
    def parameter_count(cls, config: Any) -> int | None:
        """Parameters of the network this config builds, counted without reading weights; ``None``
        (the default) when the component does not count them."""
        return None

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

    def denoise_step(self, model_fn: Callable[[Tensor, Tensor], Tensor], x_t: Tensor, t: Tensor,
                     t_next: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One solver step that calls the network itself, ``model_fn(x, t) -> prediction``.

        This is what the rollout loop calls. The default evaluates the network once and takes
        :meth:`step`; multi-evaluation solvers (Heun) override it.
        """
        return self.step(x_t, model_fn(x_t, t), t, t_next, generator)


class SceneDataset(Component, torch.utils.data.Dataset, abc.ABC):
    """A collection of posed-image scenes.

    Implementations provide scene-level access (``scenes``, ``num_frames``, ``load_views``). The
    sample-level methods below are what training, evaluation and rendering call; subclass
    :class:`scenetok.data.BaseSceneDataset`, which implements them (view sampling, evaluation
    index, skipping corrupt samples) on top of the three scene-level ones. Images are ``[0, 1]``
    RGB at the configured resolution; cameras are OpenCV c2w + normalised intrinsics (see
    :mod:`scenetok.types`).

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

    def frame_cameras(self, scene: str) -> Cameras | None:
        """All frames' cameras (batch shape ``(num_frames,)``, intrinsics exactly as ``load_views``
        returns them) when they are cheap to get without decoding images, else ``None``. Used for
        farthest-point view sampling and camera paths."""
        return None

    @abc.abstractmethod
    def load_selection(self, scene: str, context: list[int], target: list[int]) -> dict[str, Any]:
        """The sample dict for explicit ``context`` / ``target`` frames of ``scene``.
        Raises :class:`CorruptSampleError`."""

    @abc.abstractmethod
    def set_epoch(self, epoch: int) -> None:
        """Change the training view selection (samples depend on ``(seed, epoch, index)``)."""

    @abc.abstractmethod
    def record_skip(self, scene: str, reason: str, file: str | None = None) -> None:
        """Warn about an unusable scene/sample and record it (see :attr:`skipped`)."""

    @property
    @abc.abstractmethod
    def skipped(self) -> list[dict[str, str]]:
        """Everything this process skipped: ``{"dataset", "scene", "file", "reason"}`` records."""


class CorruptSampleError(RuntimeError):
    """A sample on disk is unusable (corrupt file, missing frame, ...). Datasets raise it with a
    message naming the file and scene; loaders skip the sample, warn, and record it in a report."""


class SceneGenerator(Component, nn.Module, abc.ABC):
    """SceneGen's denoising network: predicts the sampler's target for noisy *scene tokens*,
    conditioned on up to ``max_condition_views`` posed images and a set of anchor cameras.

    Treat the ``N`` scene tokens as the sampler's "frames": timesteps are per token, ``(B, N)``,
    so any :class:`Sampler` and the shared rollout loop drive it unchanged.

    Build arguments: ``num_tokens`` and ``token_dim`` (the frozen token compressor's
    :meth:`TokenCompressor.token_shape`), ``in_channels`` and ``latent_size`` (channels and
    ``(h, w)`` of a conditioning image's latent from the context image compressor). Implementations
    keep ``num_tokens`` and ``token_dim`` as attributes (the sampling loop reads them).

    Conventions: all cameras are relative to conditioning view 0 (the caller relativises, see
    :func:`scenetok.scenegen.relative_to_first_condition`); the scene tokens are the compressor's
    tokens multiplied by the recipe's token scale (0.1 in the paper).
    """

    @classmethod
    @abc.abstractmethod
    def max_condition_views(cls, config: Any) -> int:
        """Most conditioning images one forward pass accepts (3 in the paper)."""

    @abc.abstractmethod
    def forward(
        self,
        noisy_tokens: Tensor,
        timesteps: Tensor,
        cond_latents: Tensor,
        cond_cameras: Cameras,
        anchor_cameras: Cameras,
        cond_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Predict the sampler's target.

        Args:
            noisy_tokens: ``(B, N, D)`` noisy (scaled) scene tokens.
            timesteps: ``(B, N)`` per-token timesteps in the network's scale (see
                :meth:`Sampler.network_timesteps`).
            cond_latents: ``(B, Vc, C, h, w)`` standardised latents of ``Vc <= max_condition_views``
                conditioning images.
            cond_cameras: their cameras, batch shape ``(B, Vc)``.
            anchor_cameras: batch shape ``(B, Va)``, the cameras whose views the scene must explain
                (the compressor's context cameras at training time).
            cond_mask: optional ``(B, Vc)`` bool, ``False`` = that view is absent (replaced by the
                learned null token); ``None`` = all present. All ``False`` is the unconditional
                branch of classifier-free guidance (anchors are kept).
            generator: source of any training-time randomness inside the network (e.g. camera
                dropout), so that training steps are reproducible and resumable exactly.

        Returns:
            ``(B, N, D)``.
        """
