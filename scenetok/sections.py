"""The core (non-component) recipe sections and their typed configs: ``model``, ``train``,
``eval`` and ``render``.

Plain dataclasses with no heavy imports, declared in one low-level module so that the recipe
loader, ``scenetok plugins show`` and every layer above read the same definitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

#: Rollout strategies for trajectories longer than the decoder window (see :mod:`scenetok.rollout`).
STRATEGIES = ("full_sequence", "autoregressive", "pyramid")
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
    """

    reference_view: str = "random"
    context_latents: str = "sample"
    cfg_dropout: float = 0.0
    token_mask_ratio: float = 0.0
    kl_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.reference_view not in ("random", "first", "middle"):
            raise ValueError(f"model.reference_view must be random, first or middle, got {self.reference_view!r}")
        if self.context_latents not in ("sample", "mean"):
            raise ValueError(f"model.context_latents must be sample or mean, got {self.context_latents!r}")
        for name in ("cfg_dropout", "token_mask_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"model.{name} must be in [0, 1], got {value}")


#: Values of ``train.adamw_impl``.
ADAMW_IMPLS = ("auto", "fused", "foreach", "forloop")


@dataclass
class TrainConfig:
    """How to train (recipe section ``train``). Defaults follow the paper's RE10K run where that
    makes sense on any machine.

    Attributes:
        steps: optimiser steps to run (0 = until ``minutes`` run out).
        minutes: wall-clock budget in minutes (0 = no limit); training stops cleanly at the budget.
        batch_size: scenes per step *per process*.
        grad_accumulation: micro-batches per optimiser step.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay (torch default 0.01, as the paper).
        betas: AdamW betas.
        warmup_steps: linear warm-up length; the LR starts at ``warmup_factor * lr``.
        warmup_factor: initial LR factor of the warm-up (paper 5e-4).
        decay: ``"constant"``, ``"multistep"`` or ``"cosine"`` after warm-up.
        milestones: multistep milestones, counted after the warm-up (paper [20k, 150k, 500k]).
        gamma: multistep decay factor (paper 0.4).
        min_lr_factor: final LR factor of the cosine decay.
        grad_clip: max global gradient norm (paper 0.05 on RE10K).
        skip_grad_norm: a step whose global gradient norm (before clipping) exceeds this is
            skipped (0 = never); NaN/Inf gradients are always skipped.
        max_consecutive_skips: abort after this many skipped steps in a row.
        precision: ``"auto"`` (bf16 autocast where supported), ``"bf16"`` or ``"fp32"``.
        ema_decay: EMA of the weights (0 = no EMA).
        freeze_compressor_after: freeze the token compressor after this step (0 = never).
        kl_weights: KL weight schedule ``[w0, w1]`` (paper 1e-10 both on RE10K).
        kl_schedule: ``[s0, s1]``: w0 until s0, linear to w1 at s1.
        log_every: steps between metric log lines in ``metrics.jsonl``.
        checkpoint_every: steps between checkpoints (and at the end / on SIGINT).
        keep_checkpoints: how many recent checkpoints to keep.
        validate_every: steps between validation renders (0 = never).
        num_workers: DataLoader workers.
        compile: wrap the networks in ``torch.compile`` (opt-in; slow first step).
        adamw_impl: AdamW implementation: ``"auto"`` (the fused kernel on CPU and CUDA: about 3x
            faster than the for-loop one on CPU, see ``scenetok bench``), ``"fused"``,
            ``"foreach"`` or ``"forloop"``.
        latent_cache: directory written by ``scenetok data cache``; when set, training reads
            precomputed latents instead of images and never runs the (frozen) image compressor.
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

    def __post_init__(self) -> None:
        if self.decay not in ("constant", "multistep", "cosine"):
            raise ValueError(f"train.decay must be constant, multistep or cosine, got {self.decay!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"train.precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.adamw_impl not in ADAMW_IMPLS:
            raise ValueError(f"train.adamw_impl must be one of {', '.join(ADAMW_IMPLS)}, got {self.adamw_impl!r}")
        if len(self.kl_weights) != 2 or len(self.kl_schedule) != 2:
            raise ValueError("train.kl_weights and train.kl_schedule need exactly two values each")
        if self.batch_size < 1 or self.grad_accumulation < 1:
            raise ValueError("train.batch_size and train.grad_accumulation must be >= 1")
        if self.steps <= 0 and self.minutes <= 0:
            raise ValueError("train.steps or train.minutes must be > 0")


@dataclass
class EvalConfig:
    """How ``scenetok eval`` measures a model (recipe section ``eval``). How each scene is
    rendered (steps, strategy, guidance, determinism) is the ``render`` section's.

    Attributes:
        split: dataset split to evaluate (held-out scenes).
        index: evaluation index JSON (``{scene: {context: [...], target: [...]}}``); empty = write
            a deterministic one for ``split`` into the output directory.
        max_scenes: evaluate at most this many scenes (0 = all in the index).
        context_views: context views per scene of a generated index (0 = the dataset's).
        target_views: contiguous target frames per scene of a generated index (0 = the dataset's);
            target frames that are also context frames are not scored.
        lpips_net: LPIPS backbone (the paper: ``vgg``).
        lpips_weights: local path to the backbone weights; empty = LPIPS reported unavailable.
        fid_weights: local path to Inception weights for FID; empty = FID not computed.
        baselines: also score "nearest context view" and "mean context image".
        grid_scenes: scenes drawn in the PNG grid.
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


@dataclass
class RenderConfig:
    """How a trained model renders (recipe section ``render``): the one place for the rollout and
    sampling settings, read by ``scenetok render``, ``scenetok eval``, the quickstart, SceneGen and
    :meth:`scenetok.model.SceneTok.render`.

    Attributes:
        steps: inference steps ``K`` per latent frame (the paper's renderer: 25).
        strategy: rollout strategy for trajectories longer than the decoder window:
            ``"full_sequence"``, ``"autoregressive"`` or ``"pyramid"``.
        window: latent frames per network call ``W``; ``null`` = the decoder's maximum (the paper:
            8 for Video DC-AE, 10 for Wan).
        context_frames: clean latent frames ``C`` carried into the next window; ``null`` = half the
            window (the paper: 4 / 5).
        uncertainty: pyramid staircase spacing ``U`` (the paper: 4); unused by other strategies.
        guidance: classifier-free guidance scale (1 = off; the paper renders without guidance).
        deterministic: noise seeded per scene and posterior-mean tokens (same input, same output).
        trajectory: camera path of ``scenetok render``: ``"spline"`` through the context poses,
            ``"orbit"`` around the scene centre, or ``"targets"`` (the dataset's target frames).
        frames: frames ``scenetok render`` renders along the trajectory.
        fps: frame rate of the MP4/GIF.
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
        if self.steps < 1:
            raise ValueError(f"render.steps must be >= 1, got {self.steps}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"render.strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"render.window must be >= 1 or null, got {self.window}")
        if self.context_frames is not None and self.context_frames < 0:
            raise ValueError(f"render.context_frames must be >= 0 or null, got {self.context_frames}")
        if self.uncertainty < 0:
            raise ValueError(f"render.uncertainty must be >= 0, got {self.uncertainty}")
        if self.trajectory not in TRAJECTORIES:
            raise ValueError(f"render.trajectory must be one of {', '.join(TRAJECTORIES)}, got {self.trajectory!r}")
        if self.frames < 1 or self.fps < 1:
            raise ValueError(f"render.frames and render.fps must be >= 1, got {self.frames}, {self.fps}")


#: Recipe section -> its config class.
CORE_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "render": RenderConfig,
}
