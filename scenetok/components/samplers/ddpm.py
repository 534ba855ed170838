"""DDPM / DDIM (epsilon or v prediction) on the shared continuous time scale.

Continuous time and the discrete schedule
-----------------------------------------
A DDPM with ``T`` training steps has ``alpha_bar[i]`` for discrete indices ``i = 0 .. T-1``. We
prepend the clean state and use the extended table ``A[0] = 1, A[j] = alpha_bar[j - 1]``
(``j = 1 .. T``), and read it at ``j = t * T``:

* ``t = 0`` is clean data *exactly* (``alpha_bar = 1``), ``t = 1`` is the last training step
  ``T - 1``, and ``t = (i + 1) / T`` is discrete step ``i`` exactly;
* between grid points ``log alpha_bar`` is interpolated linearly (a fractional step of the same
  schedule), so any level of a rollout scheduling matrix is well defined;
* the network timestep is ``t * T - 1`` clamped at 0, i.e. the discrete index ``i`` on the grid,
  which is also the flow sampler's ``t * 1000 - 1`` scale when ``T = 1000``.

Training draws ``t`` from the configured distribution and rounds it *up* to the grid
``{1/T, ..., 1}``, so training sees exactly the classic discrete DDPM steps. The inference levels
``k / steps`` land on the grid whenever ``steps`` divides ``T``; they reproduce diffusers'
``timestep_spacing="trailing"`` with ``set_alpha_to_one=True`` (e.g. 50 steps: indices 999, 979,
..., 19, then clean).

The beta / alpha_bar tables come from diffusers' ``DDPMScheduler``. Its ``add_noise``/``step``
take one integer timestep per call (or one per batch element), not per-latent-frame continuous
levels, so the noising, the targets and the DDIM / ancestral updates are written here per frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from scenetok.interfaces import Sampler
from scenetok.sampling import (
    check_step_levels,
    draw_training_timesteps,
    per_frame,
    standard_normal,
    validate_timestep_fields,
)

logger = logging.getLogger(__name__)

PREDICTIONS = ("epsilon", "v")
BETA_SCHEDULES = ("linear", "cosine")
DDPM_SOLVERS = ("ddpm", "ddim")


def alpha_bar_table(train_steps: int, beta_schedule: str, beta_start: float, beta_end: float) -> Tensor:
    """The extended table ``[1, alpha_bar[0], ..., alpha_bar[T-1]]`` as float64 ``(T + 1,)``.

    ``beta_schedule="cosine"`` is diffusers' ``squaredcos_cap_v2`` (Nichol & Dhariwal 2021, betas
    capped at 0.999); ``"linear"`` spaces betas linearly from ``beta_start`` to ``beta_end``.
    """
    # diffusers costs ~1 s to import and is only needed to build the table.
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(
        num_train_timesteps=train_steps,
        beta_schedule={"linear": "linear", "cosine": "squaredcos_cap_v2"}[beta_schedule],
        beta_start=beta_start,
        beta_end=beta_end,
    )
    alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
    return torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod])


class DDPMSampler(Sampler):
    """Gaussian diffusion with epsilon or v prediction; DDPM (ancestral) or DDIM inference.

    Every method takes per-latent-frame levels ``t`` of shape ``(B, F)`` in ``[0, 1]`` (see the
    module docstring for how they map to the discrete schedule).
    """

    @dataclass
    class Config:
        """DDPM configuration.

        Attributes:
            prediction: network target, ``"epsilon"`` (the noise) or ``"v"``
                (``sqrt(a) eps - sqrt(1 - a) x_0`` with ``a = alpha_bar``).
            beta_schedule: ``"linear"`` (``beta_start`` .. ``beta_end``) or ``"cosine"``
                (``squaredcos_cap_v2``; pair it with ``prediction="v"``, epsilon prediction is
                ill-conditioned where ``alpha_bar`` is ~0).
            beta_start: first beta of the linear schedule.
            beta_end: last beta of the linear schedule.
            train_steps: number of discrete training steps ``T``.
            solver: ``"ddpm"`` (ancestral sampling with the posterior variance, diffusers'
                ``fixed_small``; equal to DDIM with ``eta = 1``) or ``"ddim"``.
            eta: DDIM stochasticity (0 = deterministic); ignored by ``"ddpm"``.
            clip_sample: if set, clamp the predicted ``x_0`` to ``[-clip_sample, clip_sample]``
                before each update (diffusers' ``clip_sample``; latents are standardised, so the
                default is off).
            timesteps: training distribution of ``t`` before rounding to the grid:
                ``"uniform"`` (classic DDPM), ``"logit_normal"`` or ``"shifted"``.
            logit_mean: mean of the logit-normal distribution.
            logit_std: standard deviation of the logit-normal distribution (> 0).
            shift: shift of the ``"shifted"`` distribution (> 0).
            timestep_mode: ``"per_sample"``, ``"per_chunk"`` or ``"per_frame"`` (as for flow).
            chunks: number of chunks for ``"per_chunk"``.
            shared_prob: probability of one shared ``t`` per sample in the per-chunk/per-frame
                modes.
        """

        prediction: str = "epsilon"
        beta_schedule: str = "linear"
        beta_start: float = 1e-4
        beta_end: float = 0.02
        train_steps: int = 1000
        solver: str = "ddim"
        eta: float = 0.0
        clip_sample: Optional[float] = None
        timesteps: str = "uniform"
        logit_mean: float = 0.0
        logit_std: float = 1.0
        shift: float = 1.0
        timestep_mode: str = "per_chunk"
        chunks: int = 2
        shared_prob: float = 0.2

        def __post_init__(self) -> None:
            validate_timestep_fields(self)
            if self.prediction not in PREDICTIONS:
                raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
            if self.beta_schedule not in BETA_SCHEDULES:
                raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
            if not 0.0 < self.beta_start < self.beta_end < 1.0:
                raise ValueError(
                    f"beta_start/beta_end need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
            if self.train_steps < 2:
                raise ValueError(f"train_steps must be >= 2, got {self.train_steps}")
            if self.solver not in DDPM_SOLVERS:
                raise ValueError(f"solver must be one of {DDPM_SOLVERS}, got {self.solver!r}")
            if self.eta < 0:
                raise ValueError(f"eta must be >= 0, got {self.eta}")
            if self.clip_sample is not None and self.clip_sample <= 0:
                raise ValueError(f"clip_sample must be > 0 or None, got {self.clip_sample}")

    presets = {
        # The official legacy configs, linear betas: diffusers DDPM (render with render.steps=1000)
        # and DDIM (render.steps=70). The step count is a render setting, not the sampler's.
        "ddpm": {"solver": "ddpm"},
        "ddim": {"solver": "ddim", "eta": 0.0},
    }

    def __init__(self, config: Config) -> None:
        self.config = config
        table = alpha_bar_table(config.train_steps, config.beta_schedule, config.beta_start, config.beta_end)
        self._log_alpha_bar = table.log()  # (T + 1,) float64

    # -- declared capabilities ----------------------------------------------------------------

    @classmethod
    def prediction_target(cls, config: Config) -> str:
        return config.prediction

    @classmethod
    def process_family(cls) -> str:
        return "ddpm"

    # -- the schedule on the continuous scale -------------------------------------------------

    def alpha_bar(self, t: Tensor) -> Tensor:
        """``alpha_bar`` at continuous levels ``t`` (any shape), float64, ``alpha_bar(0) = 1``."""
        steps = self.config.train_steps
        position = t.to(torch.float64).clamp(0.0, 1.0) * steps
        lower = position.floor().clamp(max=steps - 1)
        weight = position - lower
        table = self._log_alpha_bar.to(t.device)
        lower_index = lower.long()
        log_value = (1.0 - weight) * table[lower_index] + weight * table[lower_index + 1]
        return log_value.exp()

    # -- training -----------------------------------------------------------------------------

    def sample_timesteps(self, batch: int, frames: int, generator: torch.Generator | None = None,
                         device: torch.device | str | None = None) -> Tensor:
        """Training levels ``(B, F)`` on the discrete grid ``{1/T, ..., 1}`` (float32)."""
        c = self.config
        continuous = draw_training_timesteps(
            batch, frames, distribution=c.timesteps, mode=c.timestep_mode, chunks=c.chunks,
            shared_prob=c.shared_prob, logit_mean=c.logit_mean, logit_std=c.logit_std,
            shift=c.shift, generator=generator, device=device)
        # Round up to the grid so every training step is a discrete DDPM step (never t = 0).
        index = torch.ceil(continuous.double() * c.train_steps).clamp(1, c.train_steps)
        return (index / c.train_steps).float()

    def add_noise(self, clean: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """``x_t = sqrt(a) x_0 + sqrt(1 - a) eps`` with ``a = alpha_bar(t)`` per frame."""
        a = per_frame(self.alpha_bar(t), clean)
        work = torch.promote_types(clean.dtype, torch.float32)
        noisy = a.sqrt().to(work) * clean.to(work) + (1.0 - a).sqrt().to(work) * noise.to(work)
        return noisy.to(clean.dtype)

    def training_target(self, clean: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """``eps`` or ``v = sqrt(a) eps - sqrt(1 - a) x_0``."""
        if self.config.prediction == "epsilon":
            return noise.clone()
        a = per_frame(self.alpha_bar(t), clean)
        work = torch.promote_types(clean.dtype, torch.float32)
        target = a.sqrt().to(work) * noise.to(work) - (1.0 - a).sqrt().to(work) * clean.to(work)
        return target.to(clean.dtype)

    def network_timesteps(self, t: Tensor) -> Tensor:
        """``t * T - 1`` clamped at 0: the discrete index on the grid (``t = 1`` -> ``T - 1``)."""
        return (t * self.config.train_steps - 1.0).clamp_min(0.0)

    # -- inference ----------------------------------------------------------------------------

    def inference_levels(self, steps: int) -> Tensor:
        """``steps + 1`` evenly spaced levels from 1 to 0 (float64; "trailing" spacing)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)

    def predict_clean(self, x_t: Tensor, prediction: Tensor, t: Tensor) -> Tensor:
        """The clean estimate ``x_0`` implied by the network's prediction at level ``t``."""
        clean, _ = self._clean_and_noise(x_t, prediction, per_frame(self.alpha_bar(t), x_t))
        return clean.to(x_t.dtype)

    def step(self, x_t: Tensor, prediction: Tensor, t: Tensor, t_next: Tensor,
             generator: torch.Generator | None = None, *, noise: Tensor | None = None) -> Tensor:
        """DDIM / ancestral update from ``t`` to ``t_next`` (both ``(B, F)``), per frame.

        ``x_next = sqrt(a') x_0 + sqrt(1 - a' - s^2) eps + s z`` with
        ``s = eta sqrt((1 - a') / (1 - a)) sqrt(1 - a / a')`` (``eta = 1`` for ``"ddpm"``, which is
        exactly the DDPM posterior ``q(x_next | x_t, x_0)`` with ``fixed_small`` variance, also
        for multi-step jumps). ``noise`` (``z``, shape of ``x_t``) overrides the draw from
        ``generator``. Frames with ``t == t_next`` are returned unchanged.
        """
        check_step_levels(t, t_next)
        work = torch.promote_types(x_t.dtype, torch.float32)
        a = per_frame(self.alpha_bar(t), x_t)
        a_next = per_frame(self.alpha_bar(t_next), x_t)
        clean, eps = self._clean_and_noise(x_t, prediction, a)

        eta = self.config.eta if self.config.solver == "ddim" else 1.0
        # Frames that do not move may sit at t = 0 (a = 1): guard the 0/0 there; they are masked below.
        variance = (1.0 - a_next) / (1.0 - a).clamp_min(1e-20) * (1.0 - a / a_next)
        sigma = eta * variance.clamp_min(0.0).sqrt()
        direction = (1.0 - a_next - sigma**2).clamp_min(0.0).sqrt()
        moved = a_next.sqrt().to(work) * clean + direction.to(work) * eps
        if eta > 0:
            if noise is None:
                noise = standard_normal(x_t.shape, generator, x_t.device, x_t.dtype)
            moved = moved + sigma.to(work) * noise.to(work)
        return torch.where(per_frame(t == t_next, x_t), x_t, moved.to(x_t.dtype))

    def _clean_and_noise(self, x_t: Tensor, prediction: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_0, eps)`` estimates (in float32 or wider) from the prediction; ``a`` broadcastable."""
        work = torch.promote_types(x_t.dtype, torch.float32)
        x, pred = x_t.to(work), prediction.to(work)
        root_a, root_1ma = a.sqrt().to(work), (1.0 - a).sqrt().to(work)
        if self.config.prediction == "epsilon":
            eps = pred
            clean = (x - root_1ma * eps) / root_a
        else:  # v
            clean = root_a * x - root_1ma * pred
            eps = root_1ma * x + root_a * pred
        if self.config.clip_sample is not None:
            bound = self.config.clip_sample
            clean = clean.clamp(-bound, bound)
            # Re-derive eps from the clipped x_0 (as diffusers' DDIM does); where a = 1 (t = 0)
            # eps is undefined and unused.
            eps = (x - root_a * clean) / root_1ma.clamp_min(1e-10)
        return clean, eps
