"""Rectified flow, the paper's noise process for the renderer and SceneGen.

Conventions (shared with every :class:`~scenetok.interfaces.Sampler`): ``t`` in ``[0, 1]`` with
``t = 1`` pure noise, per-latent-frame timesteps ``(B, F)``.

* Forward process: ``x_t = (1 - t) x_0 + t eps`` (a straight line from data to noise).
* Network target (``"flow"``, the velocity ``dx_t/dt``): ``eps - x_0``.
* Network timestep input: ``t * 1000 - 1`` clamped at 0 (the official code's scale).
* Inference: Euler ``x_{t'} = x_t + (t' - t) v`` or Heun (two evaluations per step) over the
  levels ``k / steps`` (optionally shifted).

The helpers both built-in samplers share (training-timestep distributions, the shift map, noise
draws) live in :mod:`scenetok.sampling`, the public module plugin samplers import too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from scenetok.interfaces import Sampler
from scenetok.sampling import (
    ModelFn,
    check_step_levels,
    draw_training_timesteps,
    per_frame,
    shift_timesteps,
    validate_timestep_fields,
)

logger = logging.getLogger(__name__)

FLOW_SOLVERS = ("euler", "heun")
FLOW_PREDICTIONS = ("flow", "sample")


# --------------------------------------------------------------------------------------------
# The sampler
# --------------------------------------------------------------------------------------------


class FlowSampler(Sampler):
    """Rectified flow with velocity (``eps - x_0``) prediction, Euler or Heun inference.

    Example::

        sampler = FlowSampler(FlowSampler.Config(timesteps="logit_normal"))
        t = sampler.sample_timesteps(B, F)                     # (B, F)
        x_t = sampler.add_noise(x0, noise, t)
        loss = (net(x_t, sampler.network_timesteps(t)) - sampler.training_target(x0, noise, t)) ** 2
    """

    @dataclass
    class Config:
        """Rectified-flow configuration.

        Attributes:
            timesteps: training timestep distribution: ``"uniform"``, ``"logit_normal"`` (the RE10K
                models, ``sigmoid(N(logit_mean, logit_std))``) or ``"shifted"`` (``U(0,1)`` through
                the shift map with ``shift``; the DL3DV models, s = 4 or 8).
            logit_mean: mean of the logit-normal distribution.
            logit_std: standard deviation of the logit-normal distribution (> 0).
            shift: shift ``s`` of the ``"shifted"`` training distribution (> 0; 1 = uniform).
            timestep_mode: how timesteps vary across the ``F`` latent frames of a sample:
                ``"per_sample"``, ``"per_chunk"`` (``chunks`` runs of consecutive frames) or
                ``"per_frame"``. Rollout strategies other than ``full_sequence`` need a network
                trained with per-chunk or per-frame levels.
            chunks: number of chunks for ``"per_chunk"`` (the paper: 2).
            shared_prob: probability of one shared ``t`` per sample in the per-chunk/per-frame
                modes (the paper: 0.2).
            solver: ``"euler"`` (one network evaluation per step) or ``"heun"`` (two; the last step
                to ``t = 0`` is an Euler step, see :meth:`denoise_step`).
            prediction: what the network outputs: ``"flow"`` (the velocity ``eps - x_0``, the
                paper) or ``"sample"`` (the clean latents ``x_0``; the velocity is recovered as
                ``(x_t - x_0) / t``). ``sample`` learns the conditional mean directly, which
                converges much faster for small models trained briefly (the CPU quickstart).
            inference_shift: shift applied to the inference levels ``k / K`` (``K`` is
                ``render.steps``). ``None`` (default)
                uses ``shift`` when ``timesteps == "shifted"`` and 1 otherwise, which is what the
                official models were evaluated with.
        """

        timesteps: str = "logit_normal"
        logit_mean: float = 0.0
        logit_std: float = 1.0
        shift: float = 1.0
        timestep_mode: str = "per_chunk"
        chunks: int = 2
        shared_prob: float = 0.2
        solver: str = "euler"
        inference_shift: Optional[float] = None
        prediction: str = "flow"

        def __post_init__(self) -> None:
            validate_timestep_fields(self)
            if self.prediction not in FLOW_PREDICTIONS:
                raise ValueError(f"prediction must be one of {FLOW_PREDICTIONS}, got {self.prediction!r}")
            if self.solver not in FLOW_SOLVERS:
                raise ValueError(f"solver must be one of {FLOW_SOLVERS}, got {self.solver!r}")
            if self.inference_shift is not None and self.inference_shift <= 0:
                raise ValueError(f"inference_shift must be > 0, got {self.inference_shift}")

    presets = {
        # The RE10K renderer (scenetok_va-vdc_lognorm_re10k_scratch).
        "re10k": {"timesteps": "logit_normal", "timestep_mode": "per_chunk", "chunks": 2},
        # The DL3DV renderers (shift 4; the shift-8 variant is `shift: 8` on top).
        "dl3dv": {"timesteps": "shifted", "shift": 4.0, "timestep_mode": "per_chunk", "chunks": 2},
    }

    #: Scale of the network's timestep input (``t * 1000 - 1``).
    NETWORK_TIMESTEP_SCALE = 1000.0

    def __init__(self, config: Config) -> None:
        self.config = config

    # -- declared capabilities ----------------------------------------------------------------

    @classmethod
    def prediction_target(cls, config: Config) -> str:
        return config.prediction

    @classmethod
    def process_family(cls) -> str:
        return "flow"

    @property
    def effective_inference_shift(self) -> float:
        """The shift applied to the inference levels (resolves ``inference_shift=None``)."""
        if self.config.inference_shift is not None:
            return float(self.config.inference_shift)
        return float(self.config.shift) if self.config.timesteps == "shifted" else 1.0

    # -- training -----------------------------------------------------------------------------

    def sample_timesteps(self, batch: int, frames: int, generator: torch.Generator | None = None,
                         device: torch.device | str | None = None) -> Tensor:
        """Training timesteps ``(B, F)`` in ``[0, 1]`` (see :func:`draw_training_timesteps`)."""
        c = self.config
        return draw_training_timesteps(
            batch, frames, distribution=c.timesteps, mode=c.timestep_mode, chunks=c.chunks,
            shared_prob=c.shared_prob, logit_mean=c.logit_mean, logit_std=c.logit_std,
            shift=c.shift, generator=generator, device=device)

    def add_noise(self, clean: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """``x_t = (1 - t) x_0 + t eps``; ``clean``/``noise`` ``(B, F, ...)``, ``t`` ``(B, F)``."""
        work = torch.promote_types(clean.dtype, torch.float32)
        t = per_frame(t, clean).to(work)
        return ((1.0 - t) * clean.to(work) + t * noise.to(work)).to(clean.dtype)

    def training_target(self, clean: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """The velocity ``eps - x_0`` (independent of ``t`` on straight paths), or ``x_0`` itself
        with ``prediction="sample"``."""
        return clean if self.config.prediction == "sample" else noise - clean

    def velocity(self, x_t: Tensor, prediction: Tensor, t: Tensor) -> Tensor:
        """The velocity implied by a network output (frames at ``t = 0`` get 0: they never move)."""
        if self.config.prediction == "flow":
            return prediction
        t = per_frame(t, x_t).to(x_t.dtype)
        return torch.where(t > 0, (x_t - prediction) / t.clamp_min(1e-8), torch.zeros_like(x_t))

    def network_timesteps(self, t: Tensor) -> Tensor:
        """``t * 1000 - 1`` clamped at 0 (the official scale; ``t = 1`` -> 999)."""
        return (t * self.NETWORK_TIMESTEP_SCALE - 1.0).clamp_min(0.0)

    # -- inference ----------------------------------------------------------------------------

    def inference_levels(self, steps: int) -> Tensor:
        """``steps + 1`` levels ``shift(k / steps)`` for ``k = steps .. 0`` (float64)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        levels = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        return shift_timesteps(levels, self.effective_inference_shift)

    def predict_clean(self, x_t: Tensor, prediction: Tensor, t: Tensor) -> Tensor:
        """The clean estimate ``x_0 = x_t - t v`` implied by a prediction."""
        if self.config.prediction == "sample":
            return prediction
        return x_t - per_frame(t, x_t).to(x_t.dtype) * prediction

    def step(self, x_t: Tensor, prediction: Tensor, t: Tensor, t_next: Tensor,
             generator: torch.Generator | None = None) -> Tensor:
        """One Euler step ``x_t + (t_next - t) v`` for every frame (``(B, F)`` levels).

        Frames with ``t == t_next`` are returned unchanged. With ``solver="heun"`` this raises:
        Heun needs a second network evaluation, use :meth:`denoise_step` (as the rollout does).
        """
        if self.config.solver != "euler":
            raise RuntimeError(
                f"FlowSampler(solver={self.config.solver!r}) needs two network evaluations per "
                "step; call denoise_step(model_fn, x_t, t, t_next) instead of step()")
        check_step_levels(t, t_next)
        return self._euler(x_t, self.velocity(x_t, prediction, t), t, t_next)

    def denoise_step(self, model_fn: ModelFn, x_t: Tensor, t: Tensor, t_next: Tensor,
                     generator: torch.Generator | None = None) -> Tensor:
        """One solver step that calls the network itself: ``model_fn(x, t) -> velocity``.

        Heun (the explicit trapezoidal rule) evaluates the network again at the Euler proposal
        ``(x', t_next)`` and averages both velocities. Frames whose step ends at ``t_next = 0``
        take the plain Euler step instead (as in EDM's Heun sampler): the network is never trained
        at exactly ``t = 0`` and the final correction is not worth an evaluation. Frames with
        ``t == t_next`` (clean context, or waiting frames) stay unchanged.
        """
        check_step_levels(t, t_next)
        velocity = self.velocity(x_t, model_fn(x_t, t), t)
        proposal = self._euler(x_t, velocity, t, t_next)
        if self.config.solver == "euler":
            return proposal
        corrected = (t_next > 0) & (t_next < t)
        if not bool(corrected.any()):
            return proposal
        velocity_next = self.velocity(proposal, model_fn(proposal, t_next), t_next)
        heun = self._euler(x_t, 0.5 * (velocity + velocity_next), t, t_next)
        return torch.where(per_frame(corrected, x_t), heun, proposal)

    @staticmethod
    def _euler(x_t: Tensor, velocity: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
        # The update is computed in at least float32 so bf16 latents do not lose the small steps.
        work = torch.promote_types(x_t.dtype, torch.float32)
        dt = per_frame(t_next - t, x_t).to(work)
        moved = (x_t.to(work) + dt * velocity.to(work)).to(x_t.dtype)
        return torch.where(per_frame(t == t_next, x_t), x_t, moved)
