"""Render camera paths from a trained SceneTok (``scenetok render``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RenderConfig:
    """Defaults of ``scenetok render`` (recipe section ``render``).

    Attributes:
        trajectory: ``"spline"`` through the context poses, ``"orbit"`` around the scene centre, or
            ``"targets"`` (the dataset's own target frames).
        frames: number of frames to render along the trajectory.
        steps: sampler steps (0 = the sampler's default).
        strategy: rollout strategy for trajectories longer than the decoder window.
        window: latent frames per window (0 = the decoder's maximum).
        context_frames: clean frames carried into the next window (-1 = half the window).
        cfg_scale: classifier-free guidance scale (1 = off).
        deterministic: fixed noise seed per scene and posterior means.
        fps: frame rate of the MP4/GIF.
    """

    trajectory: str = "spline"
    frames: int = 16
    steps: int = 0
    strategy: str = "full_sequence"
    window: int = 0
    context_frames: int = -1
    cfg_scale: float = 1.0
    deterministic: bool = True
    fps: int = 8

    def __post_init__(self) -> None:
        if self.trajectory not in ("spline", "orbit", "targets"):
            raise ValueError(f"render.trajectory must be spline, orbit or targets, got {self.trajectory!r}")
        if self.strategy not in ("full_sequence", "autoregressive", "pyramid"):
            raise ValueError(f"render.strategy must be full_sequence, autoregressive or pyramid, got {self.strategy!r}")
