"""Config of the training loop (recipe section ``train``)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
        validate_every: steps between validation renders (0 = only at the end).
        num_workers: DataLoader workers.
        compile: wrap the networks in ``torch.compile`` (opt-in; slow first step).
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
    latent_cache: str = ""

    def __post_init__(self) -> None:
        if self.decay not in ("constant", "multistep", "cosine"):
            raise ValueError(f"train.decay must be constant, multistep or cosine, got {self.decay!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"train.precision must be auto, bf16 or fp32, got {self.precision!r}")
        if len(self.kl_weights) != 2 or len(self.kl_schedule) != 2:
            raise ValueError("train.kl_weights and train.kl_schedule need exactly two values each")
        if self.batch_size < 1 or self.grad_accumulation < 1:
            raise ValueError("train.batch_size and train.grad_accumulation must be >= 1")
        if self.steps <= 0 and self.minutes <= 0:
            raise ValueError("train.steps or train.minutes must be > 0")
