"""Config of evaluation (recipe section ``eval``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvalConfig:
    """How ``scenetok eval`` measures a model (recipe section ``eval``).

    Attributes:
        split: dataset split to evaluate (held-out scenes).
        index: evaluation index JSON (``{scene: {context: [...], target: [...]}}``); empty = write
            a deterministic one for ``split`` into the output directory.
        max_scenes: evaluate at most this many scenes (0 = all in the index).
        context_views: context views per scene of a generated index (0 = the dataset's).
        target_views: contiguous target frames per scene of a generated index (0 = the dataset's);
            target frames that are also context frames are not scored.
        steps: sampler steps (0 = the sampler's default).
        strategy: rollout strategy for long target clips.
        cfg_scale: classifier-free guidance scale (1 = off; the paper renders without CFG).
        deterministic: fixed noise per scene and posterior means (same input -> same output).
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
    steps: int = 0
    strategy: str = "full_sequence"
    cfg_scale: float = 1.0
    deterministic: bool = True
    lpips_net: str = "vgg"
    lpips_weights: str = ""
    fid_weights: str = ""
    baselines: bool = True
    grid_scenes: int = 4

    def __post_init__(self) -> None:
        if self.strategy not in ("full_sequence", "autoregressive", "pyramid"):
            raise ValueError(f"eval.strategy must be full_sequence, autoregressive or pyramid, got {self.strategy!r}")
