"""The core (non-component) recipe sections and their typed configs: ``model``, ``train``,
``eval``, ``render`` and (SceneGen recipes only) ``scenegen``.

Plain dataclasses with no heavy imports, declared in one low-level module so that the recipe
loader, ``scenetok plugins show`` and every layer above read the same definitions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

#: Rollout strategies for trajectories longer than the decoder window (see :mod:`scenetok.rollout`).
STRATEGIES = ("full_sequence", "autoregressive", "pyramid")
#: Experiment loggers ``train.loggers`` may name; each is a training-callback hook module
#: (:mod:`scenetok.tensorboard_logger`) that acts only when its name is listed.
LOGGERS = ("tensorboard",)
#: Camera paths of ``scenetok render``.
TRAJECTORIES = ("spline", "orbit", "targets")


@dataclass
class ModelConfig:
    """Options of the SceneTok composition (recipe section ``model``).

    Attributes:
        reference_view: context view that poses are made relative to during training:
            ``"random"`` (the paper), ``"first"`` or ``"middle"``. Evaluation always uses the middle.
        context_latents: ``"sample"`` (the paper's training: VA-VAE posterior sample) or ``"mean"``.
        cfg_dropout: probability that a training sample is rendered from the learned null tokens
            instead of its scene tokens, so classifier-free guidance works at render time.
        token_mask_ratio: if > 0, each training sample replaces a random fraction in
            ``[0, token_mask_ratio]`` of its scene tokens by the null token ("how many tokens does a
            view need" studies).
        kl_scale: multiplies the KL term (the schedule itself lives in ``train``).
        scene_scale: 0 (the default, as the paper) keeps each dataset's world units. A value > 0
            normalises every scene's scale from its context cameras: after the poses are made
            relative, all translations are scaled so that the context camera centres lie at this
            mean distance from their centroid. For captures of arbitrary scale (SfM); set it
            when training and keep it when evaluating, so that the model never sees world units.
    """

    reference_view: str = "random"
    context_latents: str = "sample"
    cfg_dropout: float = 0.0
    token_mask_ratio: float = 0.0
    kl_scale: float = 1.0
    scene_scale: float = 0.0

    def __post_init__(self) -> None:
        if self.reference_view not in ("random", "first", "middle"):
            raise ValueError(f"model.reference_view must be random, first or middle, got {self.reference_view!r}")
        if self.context_latents not in ("sample", "mean"):
            raise ValueError(f"model.context_latents must be sample or mean, got {self.context_latents!r}")
        problems = _range_problems("model", self, {"cfg_dropout": (0, 1), "token_mask_ratio": (0, 1),
                                                   "scene_scale": (0, None)})
        if problems:
            raise ValueError("; ".join(problems))


#: Values of ``train.adamw_impl``.
ADAMW_IMPLS = ("auto", "fused", "foreach", "forloop")


@dataclass
class TrainConfig:
    """How to train (recipe section ``train``). Defaults follow the paper's RE10K run where that
    makes sense on any machine.

    Attributes:
        steps: optimiser steps to run, >= 0: the reproducible budget (0 = until ``minutes`` run out).
        minutes: wall-clock cap in minutes, >= 0 (0 = no limit); training stops cleanly at the cap.
            The steps reached then depend on machine load, so compare runs by ``steps``.
            ``steps`` and ``minutes`` cannot both be 0.
        batch_size: scenes per step *per process*, >= 1.
        grad_accumulation: micro-batches per optimiser step, >= 1.
        lr: peak learning rate (AdamW), finite and > 0.
        weight_decay: AdamW weight decay, finite and >= 0 (torch default 0.01, as the paper).
        betas: AdamW betas, two values in [0, 1).
        warmup_steps: linear warm-up length, >= 0; the LR starts at ``warmup_factor * lr``.
        warmup_factor: initial LR factor of the warm-up, in (0, 1] (paper 5e-4).
        decay: ``"constant"``, ``"multistep"`` or ``"cosine"`` after warm-up.
        milestones: multistep milestones (each >= 0), counted after the warm-up (paper [20k,
            150k, 500k]).
        gamma: multistep decay factor, in (0, 1] (paper 0.4).
        min_lr_factor: final LR factor of the cosine decay, in [0, 1].
        grad_clip: max global gradient norm, >= 0 (0 = no clipping; paper 0.05 on RE10K).
        skip_grad_norm: a step whose global gradient norm (before clipping) exceeds this is
            skipped, >= 0 (0 = never); NaN/Inf gradients are always skipped.
        max_consecutive_skips: abort after this many skipped steps in a row, >= 1.
        precision: ``"auto"`` (bf16 autocast where supported), ``"bf16"`` or ``"fp32"``.
        ema_decay: EMA of the weights, in [0, 1) (0 = no EMA).
        freeze_compressor_after: freeze the token compressor after this step, >= 0 (0 = never).
        kl_weights: KL weight schedule ``[w0, w1]``, finite and >= 0 (paper 1e-10 both on RE10K).
        kl_schedule: ``[s0, s1]`` (each >= 0): w0 until s0, linear to w1 at s1.
        log_every: steps between metric log lines in ``metrics.jsonl``, >= 1.
        checkpoint_every: steps between checkpoints (and at the end / on SIGINT), >= 1.
        keep_checkpoints: how many recent checkpoints to keep, >= 1.
        validate_every: steps between validation renders, >= 0 (0 = never).
        num_workers: DataLoader workers, >= 0 (0 = load in the training process).
        compile: wrap the networks in ``torch.compile`` (opt-in; slow first step).
        adamw_impl: AdamW implementation: ``"auto"`` (the fused kernel on CPU and CUDA: about 3x
            faster than the for-loop one on CPU, see ``scenetok bench``), ``"fused"``,
            ``"foreach"`` or ``"forloop"``.
        latent_cache: directory written by ``scenetok data cache``; when set, training reads
            precomputed latents instead of images and never runs the (frozen) image compressor.
        loggers: experiment loggers besides ``metrics.jsonl`` and the log lines: ``[tensorboard]``
            writes TensorBoard events to ``RUN/tensorboard`` (needs ``pip install
            'scenetok[tensorboard]'``).
    """

    steps: int = 1000
    minutes: float = 0.0
    batch_size: int = 4
    grad_accumulation: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 2000
    warmup_factor: float = 5e-4
    decay: str = "multistep"
    milestones: list[int] = field(default_factory=lambda: [20000, 150000, 500000])
    gamma: float = 0.4
    min_lr_factor: float = 0.1
    grad_clip: float = 0.05
    skip_grad_norm: float = 0.0
    max_consecutive_skips: int = 20
    precision: str = "auto"
    ema_decay: float = 0.0
    freeze_compressor_after: int = 0
    kl_weights: list[float] = field(default_factory=lambda: [1e-10, 1e-10])
    kl_schedule: list[int] = field(default_factory=lambda: [100000, 300000])
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    validate_every: int = 0
    num_workers: int = 0
    compile: bool = False
    adamw_impl: str = "auto"
    latent_cache: str = ""
    loggers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = [name for name in self.loggers if name not in LOGGERS]
        if unknown:
            raise ValueError(f"train.loggers: unknown logger(s) {unknown}; available: {', '.join(LOGGERS)}")
        if self.decay not in ("constant", "multistep", "cosine"):
            raise ValueError(f"train.decay must be constant, multistep or cosine, got {self.decay!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"train.precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.adamw_impl not in ADAMW_IMPLS:
            raise ValueError(f"train.adamw_impl must be one of {', '.join(ADAMW_IMPLS)}, got {self.adamw_impl!r}")
        if len(self.kl_weights) != 2 or len(self.kl_schedule) != 2:
            raise ValueError("train.kl_weights and train.kl_schedule need exactly two values each")
        problems = _range_problems("train", self, {
            "steps": (0, None), "minutes": (0, None), "batch_size": (1, None), "grad_accumulation": (1, None),
            "weight_decay": (0, None), "warmup_steps": (0, None), "warmup_factor": (0, 1, "open_low"),
            "gamma": (0, 1, "open_low"), "min_lr_factor": (0, 1), "grad_clip": (0, None),
            "skip_grad_norm": (0, None), "max_consecutive_skips": (1, None), "ema_decay": (0, 1, "open_high"),
            "freeze_compressor_after": (0, None), "log_every": (1, None), "checkpoint_every": (1, None),
            "keep_checkpoints": (1, None), "validate_every": (0, None), "num_workers": (0, None),
        })
        if not (math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"train.lr must be finite and > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(math.isfinite(b) and 0 <= b < 1 for b in self.betas):
            problems.append(f"train.betas must be two values in [0, 1), got {list(self.betas)}")
        if not all(math.isfinite(w) and w >= 0 for w in self.kl_weights):
            problems.append(f"train.kl_weights must be finite and >= 0, got {list(self.kl_weights)}")
        for name in ("kl_schedule", "milestones"):
            if any(v < 0 for v in getattr(self, name)):
                problems.append(f"train.{name} must be >= 0, got {list(getattr(self, name))}")
        if not problems and self.steps == 0 and self.minutes == 0:
            problems.append("train.steps or train.minutes must be > 0")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class EvalConfig:
    """How ``scenetok eval`` measures a model (recipe section ``eval``). How each scene is
    rendered (steps, strategy, guidance, determinism) is the ``render`` section's.

    Attributes:
        split: dataset split to evaluate (held-out scenes).
        index: evaluation index JSON (``{scene: {context: [...], target: [...]}}``); empty = write
            a deterministic one for ``split`` into the output directory.
        max_scenes: evaluate at most this many scenes, >= 0 (0 = all in the index).
        context_views: context views per scene of a generated index, >= 0 (0 = the dataset's).
        target_views: contiguous target frames per scene of a generated index, >= 0 (0 = the
            dataset's); target frames that are also context frames are not scored.
        lpips_net: LPIPS backbone (the paper: ``vgg``).
        lpips_weights: local path to the backbone weights; empty = LPIPS reported unavailable.
        fid_weights: local path to Inception weights for FID; empty = FID not computed.
        baselines: also score "nearest context view" and "mean context image".
        grid_scenes: scenes drawn in the PNG grid, >= 0.
    """

    split: str = "test"
    index: str = ""
    max_scenes: int = 0
    context_views: int = 0
    target_views: int = 0
    lpips_net: str = "vgg"
    lpips_weights: str = ""
    fid_weights: str = ""
    baselines: bool = True
    grid_scenes: int = 4

    def __post_init__(self) -> None:
        problems = _range_problems("eval", self, {"max_scenes": (0, None), "context_views": (0, None),
                                                  "target_views": (0, None), "grid_scenes": (0, None)})
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class RenderConfig:
    """How a trained model renders (recipe section ``render``): the one place for the rollout and
    sampling settings, read by ``scenetok render``, ``scenetok eval``, the quickstart, SceneGen and
    :meth:`scenetok.model.SceneTok.render`.

    Attributes:
        steps: inference steps ``K`` per latent frame, >= 1 (the paper's renderer: 25).
        strategy: rollout strategy for trajectories longer than the decoder window:
            ``"full_sequence"``, ``"autoregressive"`` or ``"pyramid"``.
        window: latent frames per network call ``W``, >= 1; ``null`` = the decoder's maximum (the
            paper: 8 for Video DC-AE, 10 for Wan).
        context_frames: clean latent frames ``C`` carried into the next window, >= 0; ``null`` =
            half the window (the paper: 4 / 5).
        uncertainty: pyramid staircase spacing ``U``, >= 0 (the paper: 4); unused by other
            strategies.
        guidance: classifier-free guidance scale, finite and >= 0 (1 = off; the paper renders
            without guidance).
        deterministic: noise seeded per scene and posterior-mean tokens (same input, same output).
        trajectory: camera path of ``scenetok render``: ``"spline"`` through the context poses,
            ``"orbit"`` around the scene centre, or ``"targets"`` (the dataset's target frames).
        frames: frames ``scenetok render`` renders along the trajectory, >= 1.
        fps: frame rate of the MP4/GIF, >= 1.
    """

    steps: int = 25
    strategy: str = "full_sequence"
    window: Optional[int] = None
    context_frames: Optional[int] = None
    uncertainty: int = 4
    guidance: float = 1.0
    deterministic: bool = True
    trajectory: str = "spline"
    frames: int = 16
    fps: int = 8

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"render.strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"render.window must be >= 1 or null, got {self.window}")
        if self.context_frames is not None and self.context_frames < 0:
            raise ValueError(f"render.context_frames must be >= 0 or null, got {self.context_frames}")
        if self.trajectory not in TRAJECTORIES:
            raise ValueError(f"render.trajectory must be one of {', '.join(TRAJECTORIES)}, got {self.trajectory!r}")
        problems = _range_problems("render", self, {"steps": (1, None), "uncertainty": (0, None),
                                                    "frames": (1, None), "fps": (1, None)})
        if not (math.isfinite(self.guidance) and self.guidance >= 0):
            problems.append(f"render.guidance must be finite and >= 0, got {self.guidance}")
        if problems:
            raise ValueError("; ".join(problems))


def _range_problems(section: str, config: Any, ranges: dict[str, tuple[Any, ...]]) -> list[str]:
    """One message per field outside its range. ``ranges`` maps field -> ``(low, high[, open])``
    (``None`` = unbounded; ``"open_low"`` / ``"open_high"`` exclude that end); NaN is never in range."""
    problems = []
    for name, (low, high, *rest) in ranges.items():
        value = getattr(config, name)
        kind = rest[0] if rest else ""
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and low is not None:
            ok = value > low if kind == "open_low" else value >= low
        if ok and high is not None:
            ok = value < high if kind == "open_high" else value <= high
        if not ok:
            if high is None:
                wanted = f"> {low}" if kind == "open_low" else f">= {low}"
            else:
                wanted = f"in {'(' if kind == 'open_low' else '['}{low}, {high}{')' if kind == 'open_high' else ']'}"
            problems.append(f"{section}.{name} must be {wanted}, got {value}")
    return problems


@dataclass
class SceneGenConfig:
    """How SceneGen trains and samples on top of a frozen SceneTok (recipe section ``scenegen``;
    only SceneGen recipes, those with a ``scene_generator``, have it).

    Attributes:
        scenetok_run: run directory of the frozen SceneTok (compressor + renderer) whose token
            space is generated; loaded once, never trained. Needed to train, evaluate, generate.
        scenetok_recipe: a SceneTok recipe (file or shipped name) that only *sizes* the generator
            when there is no trained run yet: ``scenetok validate`` / ``model summary`` of a paper-
            size SceneGen recipe. Ignored when ``scenetok_run`` is set.
        token_scale: the generator sees ``tokens * token_scale`` (the paper: 0.1).
        view_keep_prob: training: probability that conditioning view ``v > 0`` is present
            (view 0 always is; the paper: 0.5).
        uncond_prob: training: probability that a whole sample is unconditional (every view
            absent, anchors kept), which trains the CFG branch (the paper's ``cfg_train``: 0.1).
        max_condition_views: conditioning images drawn per training sample (<= the generator's
            ``max_condition_views``): view 0 is one of the anchor views, the others random frames.
        guidance: classifier-free guidance scale at inference (the paper: 3.0; 1 = off).
        steps: inference steps of the token sampler (the paper: 150).
    """

    scenetok_run: Optional[str] = None
    scenetok_recipe: Optional[str] = None
    token_scale: float = 0.1
    view_keep_prob: float = 0.5
    uncond_prob: float = 0.1
    max_condition_views: int = 3
    guidance: float = 3.0
    steps: int = 150

    def __post_init__(self) -> None:
        problems = _range_problems("scenegen", self, {
            "token_scale": (0, None, "open_low"), "view_keep_prob": (0, 1), "uncond_prob": (0, 1),
            "max_condition_views": (1, None), "guidance": (0, None), "steps": (1, None)})
        if problems:
            raise ValueError("; ".join(problems))

    def scale(self, tokens: Any) -> Any:
        """Compressor tokens -> the generator's space."""
        return tokens * self.token_scale

    def unscale(self, tokens: Any) -> Any:
        """Generated tokens -> the renderer's token space."""
        return tokens / self.token_scale


#: Recipe section -> its config class.
CORE_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "render": RenderConfig,
    "scenegen": SceneGenConfig,
}
#: Core sections that only SceneGen recipes (those with a ``scene_generator``) build.
SCENEGEN_SECTIONS = ("scenegen",)
