"""End-to-end check of both noise processes: a tiny MLP learns a 2-D mixture of Gaussians.

Training uses each sampler's ``sample_timesteps`` / ``add_noise`` / ``training_target`` /
``network_timesteps``; sampling goes through :func:`scenetok.rollout.rollout`. Tolerances: the
sample mean within 0.15 of the data mean (per coordinate), each mode's share of the samples within
0.1 of its weight, and at least 90 % of the samples within 3 standard deviations of a mode.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from scenetok.components.samplers.ddpm import DDPMSampler
from scenetok.components.samplers.flow import FlowSampler
from scenetok.rollout import build_schedule, rollout

MODES = torch.tensor([[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]])
WEIGHTS = torch.tensor([0.5, 0.3, 0.2])
MODE_STD = 0.25
TRAIN_STEPS = 1200
BATCH = 512
SAMPLES = 2000


def draw_data(count: int, generator: torch.Generator) -> torch.Tensor:
    """``(count, 1, 2)``: one "latent frame" of two channels per sample."""
    mode = torch.multinomial(WEIGHTS, count, replacement=True, generator=generator)
    points = MODES[mode] + MODE_STD * torch.randn(count, 2, generator=generator)
    return points[:, None, :]


class TinyDenoiser(nn.Module):
    """MLP on ``[x, sin/cos(timestep features)]``; the timestep arrives in the network scale."""

    def __init__(self, width: int = 64, frequencies: int = 8) -> None:
        super().__init__()
        self.register_buffer("frequencies", torch.exp(torch.linspace(0.0, math.log(200.0), frequencies)))
        self.net = nn.Sequential(
            nn.Linear(2 + 2 * frequencies, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, 2),
        )

    def forward(self, x: torch.Tensor, network_timesteps: torch.Tensor) -> torch.Tensor:
        phase = (network_timesteps / 1000.0)[..., None] * self.frequencies  # (B, F, K)
        features = torch.cat([x, phase.sin(), phase.cos()], dim=-1)
        return self.net(features)


TRAINING_SAMPLERS = {
    "flow": lambda: FlowSampler(FlowSampler.Config(timesteps="logit_normal", timestep_mode="per_sample")),
    "ddpm": lambda: DDPMSampler(DDPMSampler.Config(prediction="epsilon", timestep_mode="per_sample")),
}


@functools.lru_cache(maxsize=None)
def trained_denoiser(family: str) -> TinyDenoiser:
    """Train once per noise process; the solver does not change what the network learns."""
    sampler = TRAINING_SAMPLERS[family]()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TinyDenoiser()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, TRAIN_STEPS)
    generator = torch.Generator().manual_seed(1)
    for _ in range(TRAIN_STEPS):
        clean = draw_data(BATCH, generator)
        noise = torch.randn(clean.shape, generator=generator)
        t = sampler.sample_timesteps(BATCH, 1, generator=generator)
        prediction = model(sampler.add_noise(clean, noise, t), sampler.network_timesteps(t))
        loss = (prediction - sampler.training_target(clean, noise, t)).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def sample(sampler, steps: int) -> torch.Tensor:
    model = trained_denoiser(sampler.process_family())

    def denoise(x, t, frame_index):
        return model(x, sampler.network_timesteps(t))

    levels = sampler.inference_levels(steps)
    plan = build_schedule("full_sequence", frames=1, steps=steps, window=1, context_frames=0, levels=levels)
    return rollout(denoise, sampler, (SAMPLES, 1, 2), plan, generator=torch.Generator().manual_seed(2))[:, 0]


def check_matches_mixture(samples: torch.Tensor) -> None:
    data_mean = (WEIGHTS[:, None] * MODES).sum(0)
    assert torch.isfinite(samples).all()
    assert (samples.mean(0) - data_mean).abs().max() < 0.15, samples.mean(0)
    distance = torch.cdist(samples, MODES)
    nearest = distance.argmin(1)
    fractions = torch.bincount(nearest, minlength=len(MODES)).float() / len(samples)
    assert (fractions - WEIGHTS).abs().max() < 0.1, fractions
    near_a_mode = (distance.min(1).values < 3 * MODE_STD).float().mean()
    assert near_a_mode > 0.9, near_a_mode


@pytest.mark.parametrize("solver, steps", [("euler", 25), ("heun", 10)])
def test_flow_learns_mixture(solver, steps):
    sampler = FlowSampler(FlowSampler.Config(timesteps="logit_normal", timestep_mode="per_sample", solver=solver))
    check_matches_mixture(sample(sampler, steps))


@pytest.mark.parametrize("solver, steps", [("ddim", 50), ("ddpm", 100)])
def test_ddpm_learns_mixture(solver, steps):
    sampler = DDPMSampler(DDPMSampler.Config(prediction="epsilon", solver=solver, timestep_mode="per_sample"))
    check_matches_mixture(sample(sampler, steps))
