"""Rollout strategies: scheduling matrices, window masks and the generic generation loop."""

from __future__ import annotations

import itertools

import pytest
import torch

from scenetok.components.samplers.ddpm import DDPMSampler
from scenetok.components.samplers.flow import FlowSampler
from scenetok.rollout import (
    build_schedule,
    guided,
    rollout,
    schedule_counters,
    schedule_for,
)
from scenetok.sections import STRATEGIES, RenderConfig


@pytest.mark.parametrize("strategy, expected", [
    ("full_sequence", 175), ("autoregressive", 800), ("pyramid", 196)])
def test_reference_step_counts(strategy, expected):
    schedule = build_schedule(strategy, frames=32, steps=25, window=8, context_frames=4, uncertainty=4)
    assert schedule.num_steps == expected
    assert schedule.noise_levels.shape == (expected + 1, 32)
    assert schedule.window_mask.shape == (expected, 32)


def test_short_trajectory_is_plain_joint_denoising():
    schedule = build_schedule("full_sequence", frames=6, steps=25, window=8, context_frames=4)
    assert schedule.num_steps == 25
    assert bool(schedule.window_mask.all())
    expected = torch.linspace(1, 0, 26, dtype=torch.float64)[:, None].expand(26, 6)
    torch.testing.assert_close(schedule.noise_levels, expected)


def test_hand_computed_matrices():
    # full_sequence, F=6, W=4, C=2, K=2: window 0..3, then slides by 2 to 2..5.
    counters, mask = schedule_counters("full_sequence", 6, 2, 4, 2)
    assert counters.tolist() == [[2] * 6, [1, 1, 1, 1, 2, 2], [0, 0, 0, 0, 2, 2],
                                 [0, 0, 0, 0, 1, 1], [0] * 6]
    assert mask.int().tolist() == [[1, 1, 1, 1, 0, 0]] * 2 + [[0, 0, 1, 1, 1, 1]] * 2
    # pyramid, F=3, W=2, C=0, U=K=2: frame 1 starts when frame 0 reaches 0; slide by one frame.
    counters, mask = schedule_counters("pyramid", 3, 2, 2, 0, uncertainty=2)
    assert counters.tolist() == [[2, 2, 2], [1, 2, 2], [0, 1, 2], [0, 0, 1], [0, 0, 0]]
    assert mask.int().tolist() == [[1, 1, 0], [1, 1, 0], [0, 1, 1], [0, 1, 1]]
    # autoregressive: one frame at a time, later frames wait at full noise.
    counters, _ = schedule_counters("autoregressive", 3, 2, 3, 1)
    assert counters.tolist() == [[2, 2, 2], [1, 2, 2], [0, 2, 2], [0, 1, 2], [0, 0, 2], [0, 0, 1], [0, 0, 0]]


def test_pyramid_staircase_spacing():
    counters, _ = schedule_counters("pyramid", 32, 25, 8, 4, uncertainty=4)
    # Inside the first window the frames start three steps apart: gaps of U - 1 levels.
    assert counters[4, :3].tolist() == [21, 24, 25]
    first_step = (counters < 25).int().argmax(0) - 1  # row g + 1 holds the levels after step g
    assert first_step[:8].tolist() == [0, 3, 6, 9, 12, 15, 18, 21]


CASES = [
    (strategy, frames, steps, window, context, uncertainty)
    for strategy in STRATEGIES
    for frames, steps, window in itertools.product([1, 5, 9, 17], [1, 3, 6], [1, 4, 8])
    for context in range(window)
    for uncertainty in ([4] if strategy != "pyramid" else [0, 1, 2, 3, 6])
]


def test_schedule_invariants():
    for case in CASES:
        strategy, frames, steps, window, context, uncertainty = case
        levels, mask = build_schedule(strategy, frames, steps, window, context, uncertainty)
        assert bool((levels[0] == 1).all()) and bool((levels[-1] == 0).all()), case
        assert bool((levels.diff(dim=0) <= 0).all()), case  # monotone non-increasing per frame
        changed = levels[1:] != levels[:-1]
        assert bool(changed.any(dim=1).all()), case  # every global step moves some frame
        assert not bool((changed & ~mask).any()), case  # ... and only frames inside the window
        width = min(window, frames)
        assert bool((mask.sum(1) == width).all()), case
        first = mask.int().argmax(1)  # contiguous window of `width` frames starting at `first`
        expected = (torch.arange(frames) >= first[:, None]) & (torch.arange(frames) < first[:, None] + width)
        assert torch.equal(mask, expected), case
        # Every frame descends exactly one level per step it takes: K steps in all.
        assert bool((changed.sum(0) == steps).all()), case


def test_invalid_schedules():
    with pytest.raises(ValueError, match="context_frames"):
        build_schedule("full_sequence", 16, 5, 4, 4)
    with pytest.raises(ValueError, match="strategy"):
        build_schedule("diagonal", 16, 5, 4, 1)
    with pytest.raises(ValueError, match="levels"):
        build_schedule("full_sequence", 16, 5, 4, 1, levels=torch.linspace(1, 0, 5))
    with pytest.raises(ValueError, match="strategy"):
        RenderConfig(strategy="pyramids")


def test_render_settings_schedule_uses_sampler_levels_and_render_steps():
    sampler = FlowSampler(FlowSampler.Config(timesteps="shifted", shift=4.0))
    settings = RenderConfig(steps=6, strategy="pyramid", uncertainty=2, context_frames=1)
    schedule = schedule_for(settings, sampler, 12, max_window=4)
    allowed = sampler.inference_levels(6)
    assert bool(torch.isin(schedule.noise_levels, allowed).all())
    assert schedule.num_steps == build_schedule("pyramid", 12, 6, 4, 1, 2).num_steps
    with pytest.raises(ValueError, match="max_latent_frames"):
        schedule_for(RenderConfig(window=8), sampler, 12, max_window=4)
    # null window and context frames: the decoder's window, half of it carried over
    default = schedule_for(RenderConfig(steps=6), sampler, 12, max_window=4)
    assert default.num_steps == build_schedule("full_sequence", 12, 6, 4, 2).num_steps


def test_guidance():
    cond, uncond = torch.tensor([2.0]), torch.tensor([1.0])
    torch.testing.assert_close(guided(cond, uncond, 1.0), cond)
    torch.testing.assert_close(guided(cond, uncond, 3.0), torch.tensor([4.0]))
    torch.testing.assert_close(guided(cond, uncond, 0.0), uncond)


# -- the generation loop ----------------------------------------------------------------------

SHAPE = (2, 10, 3, 2, 2)


def oracle(sampler, clean):
    """A denoiser that knows the answer: returns the exact target for the window's x_t."""

    def denoise(x, t, frame_index):
        x0 = clean[:, frame_index]
        tt = t[..., None, None, None].to(torch.float64)
        if isinstance(sampler, FlowSampler):
            return torch.where(tt > 0, (x - x0) / tt.clamp_min(1e-12), torch.zeros_like(x))
        a = sampler.alpha_bar(t)[..., None, None, None]
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt().clamp_min(1e-12)
        if sampler.config.prediction == "epsilon":
            return torch.where(tt > 0, eps, torch.zeros_like(x))
        return torch.where(tt > 0, a.sqrt() * eps - (1 - a).sqrt() * x0, torch.zeros_like(x))

    return denoise


SAMPLERS = {
    "flow-euler": lambda: FlowSampler(FlowSampler.Config()),
    "flow-heun": lambda: FlowSampler(FlowSampler.Config(solver="heun", timesteps="shifted", shift=3.0)),
    "ddim-eps": lambda: DDPMSampler(DDPMSampler.Config(solver="ddim")),
    "ddpm-v": lambda: DDPMSampler(DDPMSampler.Config(solver="ddpm", prediction="v", beta_schedule="cosine")),
}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_rollout_with_oracle_recovers_clean_latents(strategy, name):
    sampler = SAMPLERS[name]()
    clean = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    settings = RenderConfig(steps=5, strategy=strategy, context_frames=2, uncertainty=2)
    schedule = schedule_for(settings, sampler, SHAPE[1], 4)
    out = rollout(oracle(sampler, clean), sampler, SHAPE, schedule,
                  generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(out, clean)


def test_rollout_calls_follow_the_schedule():
    sampler = FlowSampler(FlowSampler.Config())
    schedule = build_schedule("pyramid", SHAPE[1], 3, 4, 2, uncertainty=2)
    calls = []

    def denoise(x, t, frame_index):
        calls.append((frame_index.clone(), t.clone(), x.clone()))
        return torch.zeros_like(x)

    rollout(denoise, sampler, SHAPE, schedule, generator=torch.Generator().manual_seed(0))
    assert len(calls) == schedule.num_steps
    saw_clean_context = False
    for step, (frame_index, t, x) in enumerate(calls):
        assert torch.equal(frame_index, schedule.window_mask[step].nonzero().squeeze(1))
        assert t.shape == (SHAPE[0], len(frame_index)) and t.dtype == torch.float32
        assert torch.equal(t, schedule.noise_levels[step, frame_index].float().expand_as(t))
        assert x.shape == (SHAPE[0], len(frame_index)) + SHAPE[2:]
        saw_clean_context |= bool((t == 0).any())
    assert saw_clean_context  # clean frames enter the network at level 0


def test_rollout_is_deterministic_and_respects_initial_noise():
    sampler = DDPMSampler(DDPMSampler.Config(solver="ddpm"))
    schedule = build_schedule("autoregressive", 4, 3, 2, 1)

    def denoise(x, t, frame_index):
        return 0.5 * x

    first = rollout(denoise, sampler, (1, 4, 2), schedule, generator=torch.Generator().manual_seed(7))
    second = rollout(denoise, sampler, (1, 4, 2), schedule, generator=torch.Generator().manual_seed(7))
    other = rollout(denoise, sampler, (1, 4, 2), schedule, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, second) and not torch.equal(first, other)

    noise = torch.randn(1, 4, 2)
    flow = FlowSampler(FlowSampler.Config())
    out = rollout(lambda x, t, i: torch.zeros_like(x), flow, (1, 4, 2), schedule, noise=noise)
    torch.testing.assert_close(out, noise)  # zero velocity keeps the initial noise
    with pytest.raises(ValueError, match="shape"):
        rollout(denoise, flow, (1, 5, 2), schedule)
