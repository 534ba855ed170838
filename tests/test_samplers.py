"""Noise processes: FlowSampler (rectified flow) and DDPMSampler (epsilon / v, DDPM / DDIM)."""

from __future__ import annotations

import pytest
import torch

from scenetok.components.samplers.ddpm import DDPMSampler
from scenetok.components.samplers.flow import FlowSampler
from scenetok.sampling import shift_timesteps

B, F, C, H, W = 2, 3, 4, 5, 5


def latents(seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn(B, F, C, H, W, generator=g, dtype=dtype)
    noise = torch.randn(B, F, C, H, W, generator=g, dtype=dtype)
    return clean, noise


def per_frame_levels(seed: int, low: float = 0.05) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return low + (1 - low) * torch.rand(B, F, generator=g, dtype=torch.float64)


DDPM_VARIANTS = [
    dict(prediction="epsilon", beta_schedule="linear"),
    dict(prediction="v", beta_schedule="linear"),
    dict(prediction="v", beta_schedule="cosine"),
]


# -- configs and declared capabilities ------------------------------------------------------


@pytest.mark.parametrize("cls, field, value", [
    (FlowSampler, "timesteps", "lognormal"),
    (FlowSampler, "timestep_mode", "chunked"),
    (FlowSampler, "solver", "rk4"),
    (FlowSampler, "shared_prob", 1.5),
    (FlowSampler, "shift", 0.0),
    (FlowSampler, "prediction", "x0"),
    (DDPMSampler, "prediction", "x0"),
    (DDPMSampler, "beta_schedule", "squaredcos"),
    (DDPMSampler, "solver", "euler"),
    (DDPMSampler, "eta", -1.0),
    (DDPMSampler, "chunks", 0),
])
def test_invalid_config_names_the_field(cls, field, value):
    with pytest.raises(ValueError, match=field):
        cls.Config(**{field: value})


def test_process_strings_and_presets():
    assert FlowSampler.process(FlowSampler.Config()) == "flow/flow"
    assert DDPMSampler.process(DDPMSampler.Config()) == "ddpm/epsilon"
    assert DDPMSampler.process(DDPMSampler.Config(prediction="v")) == "ddpm/v"
    assert FlowSampler.default_config("dl3dv").shift == 4.0
    assert DDPMSampler.default_config("ddim").solver == "ddim"


# -- rectified flow ---------------------------------------------------------------------------


def test_flow_noising_and_target_definitions():
    sampler = FlowSampler(FlowSampler.Config())
    clean, noise = latents(0)
    t = per_frame_levels(1)
    x_t = sampler.add_noise(clean, noise, t)
    expected = (1 - t[..., None, None, None]) * clean + t[..., None, None, None] * noise
    torch.testing.assert_close(x_t, expected)
    torch.testing.assert_close(sampler.training_target(clean, noise, t), noise - clean)
    torch.testing.assert_close(sampler.add_noise(clean, noise, torch.zeros(B, F)), clean)


def test_flow_oracle_recovers_clean_in_one_euler_step():
    sampler = FlowSampler(FlowSampler.Config(solver="euler"))
    clean, noise = latents(2)
    t = per_frame_levels(3)
    x_t = sampler.add_noise(clean, noise, t)
    oracle = sampler.training_target(clean, noise, t)
    torch.testing.assert_close(sampler.step(x_t, oracle, t, torch.zeros_like(t)), clean)
    # An intermediate step lands exactly on the forward process at t_next (straight paths).
    t_next = t * 0.4
    torch.testing.assert_close(sampler.step(x_t, oracle, t, t_next), sampler.add_noise(clean, noise, t_next))
    torch.testing.assert_close(sampler.predict_clean(x_t, oracle, t), clean)


@pytest.mark.parametrize("solver, evaluations", [("euler", 5), ("heun", 9)])
def test_flow_solvers_with_oracle_and_evaluation_count(solver, evaluations):
    sampler = FlowSampler(FlowSampler.Config(solver=solver, timesteps="shifted", shift=3.0))
    clean, noise = latents(4)
    calls = []

    def model_fn(x, t):
        calls.append(t.clone())
        return noise - clean

    levels = sampler.inference_levels(5)
    x = noise
    for level, level_next in zip(levels[:-1], levels[1:]):
        x = sampler.denoise_step(model_fn, x, torch.full((B, F), float(level), dtype=torch.float64),
                                 torch.full((B, F), float(level_next), dtype=torch.float64))
    torch.testing.assert_close(x, clean)
    # Heun: two evaluations per step except the last (an Euler step to t = 0).
    assert len(calls) == evaluations
    assert all(bool((c > 0).all()) for c in calls)


def test_flow_heun_refuses_single_prediction_step():
    sampler = FlowSampler(FlowSampler.Config(solver="heun"))
    x = torch.zeros(B, F, C, H, W)
    with pytest.raises(RuntimeError, match="denoise_step"):
        sampler.step(x, x, torch.ones(B, F), torch.zeros(B, F))


def test_flow_heun_matches_hand_computed_update():
    sampler = FlowSampler(FlowSampler.Config(solver="heun"))
    x = torch.ones(1, 2, 1)
    t = torch.tensor([[1.0, 0.5]])
    t_next = torch.tensor([[0.5, 0.0]])

    def model_fn(x_in, t_in):  # velocity = x * (1 + t): second evaluation differs from the first
        return x_in * (1 + t_in[..., None])

    out = sampler.denoise_step(model_fn, x, t, t_next)
    # frame 0 (Heun): v1 = 2, x' = 1 - 0.5*2 = 0, v2 = 0 * 1.5 = 0, x = 1 - 0.5 * (2 + 0)/2 = 0.5
    # frame 1 (last step, Euler): v1 = 1.5, x = 1 - 0.5 * 1.5 = 0.25
    torch.testing.assert_close(out, torch.tensor([[[0.5], [0.25]]]))


def test_flow_network_timesteps_and_levels():
    sampler = FlowSampler(FlowSampler.Config(timesteps="shifted", shift=4.0))
    scaled = sampler.network_timesteps(torch.tensor([0.0, 0.0005, 0.5, 1.0]))
    torch.testing.assert_close(scaled, torch.tensor([0.0, 0.0, 499.0, 999.0]))
    levels = sampler.inference_levels(25)
    assert levels.dtype == torch.float64 and levels.shape == (26,)
    assert levels[0] == 1 and levels[-1] == 0 and bool((levels.diff() < 0).all())
    # The shifted models use the shifted grid at inference unless told otherwise.
    torch.testing.assert_close(levels, shift_timesteps(torch.linspace(1, 0, 26, dtype=torch.float64), 4.0))
    assert float(levels[12]) > 1 - 12 / 25
    unshifted = FlowSampler(FlowSampler.Config(timesteps="shifted", shift=4.0, inference_shift=1.0))
    torch.testing.assert_close(unshifted.inference_levels(25), torch.linspace(1, 0, 26, dtype=torch.float64))
    assert FlowSampler(FlowSampler.Config()).effective_inference_shift == 1.0


# -- DDPM / DDIM ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", DDPM_VARIANTS)
def test_ddpm_alpha_bar_on_the_grid(variant):
    from diffusers import DDPMScheduler

    sampler = DDPMSampler(DDPMSampler.Config(**variant))
    reference = DDPMScheduler(num_train_timesteps=1000, beta_schedule={
        "linear": "linear", "cosine": "squaredcos_cap_v2"}[variant["beta_schedule"]]).alphas_cumprod
    index = torch.tensor([0, 1, 19, 500, 998, 999])
    a = sampler.alpha_bar((index + 1).double() / 1000)
    torch.testing.assert_close(a, reference[index].double())
    assert float(sampler.alpha_bar(torch.zeros(1))) == 1.0
    dense = sampler.alpha_bar(torch.linspace(0, 1, 4001, dtype=torch.float64))
    assert bool((dense.diff() < 0).all())
    torch.testing.assert_close(sampler.network_timesteps(torch.tensor([0.0, 0.001, 0.02, 1.0])),
                               torch.tensor([0.0, 0.0, 19.0, 999.0]))


@pytest.mark.parametrize("variant", DDPM_VARIANTS)
def test_ddim_oracle_follows_the_forward_process(variant):
    sampler = DDPMSampler(DDPMSampler.Config(solver="ddim", eta=0.0, **variant))
    clean, noise = latents(5)
    t = per_frame_levels(6, low=0.1)
    x_t = sampler.add_noise(clean, noise, t)
    oracle = sampler.training_target(clean, noise, t)
    torch.testing.assert_close(sampler.predict_clean(x_t, oracle, t), clean)
    t_next = t * 0.3
    torch.testing.assert_close(sampler.step(x_t, oracle, t, t_next), sampler.add_noise(clean, noise, t_next))
    torch.testing.assert_close(sampler.step(x_t, oracle, t, torch.zeros_like(t)), clean)


def test_ddpm_targets():
    sampler = DDPMSampler(DDPMSampler.Config(prediction="v"))
    clean, noise = latents(7)
    t = per_frame_levels(8)
    a = sampler.alpha_bar(t)[..., None, None, None]
    torch.testing.assert_close(sampler.add_noise(clean, noise, t), a.sqrt() * clean + (1 - a).sqrt() * noise)
    torch.testing.assert_close(sampler.training_target(clean, noise, t), a.sqrt() * noise - (1 - a).sqrt() * clean)
    epsilon = DDPMSampler(DDPMSampler.Config(prediction="epsilon"))
    torch.testing.assert_close(epsilon.training_target(clean, noise, t), noise)
    torch.testing.assert_close(epsilon.add_noise(clean, noise, torch.zeros(B, F)), clean)


@pytest.mark.parametrize("index", [999, 500, 20, 0])
def test_ddpm_ancestral_step_matches_diffusers(index):
    from diffusers import DDPMScheduler

    sampler = DDPMSampler(DDPMSampler.Config(solver="ddpm"))
    reference = DDPMScheduler(num_train_timesteps=1000, clip_sample=False, variance_type="fixed_small")
    reference.set_timesteps(1000)
    x_t, prediction = latents(9, dtype=torch.float32)
    expected = reference.step(prediction, index, x_t, generator=torch.Generator().manual_seed(3)).prev_sample
    t = torch.full((B, F), (index + 1) / 1000)
    ours = sampler.step(x_t, prediction, t, torch.full((B, F), index / 1000),
                        generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_ddim_chain_matches_diffusers_trailing(prediction):
    from diffusers import DDIMScheduler

    steps = 10
    sampler = DDPMSampler(DDPMSampler.Config(solver="ddim", prediction=prediction))
    reference = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=True,
                              timestep_spacing="trailing",
                              prediction_type={"epsilon": "epsilon", "v": "v_prediction"}[prediction])
    reference.set_timesteps(steps)
    x_start, _ = latents(10, dtype=torch.float32)

    def fake_network(x, step):  # any smooth function of (x, step) exercises the bookkeeping
        return 0.3 * x + 0.01 * step

    x_ref = x_start
    for step, timestep in enumerate(reference.timesteps):
        x_ref = reference.step(fake_network(x_ref, step), timestep, x_ref).prev_sample
    levels = sampler.inference_levels(steps)
    assert torch.equal(sampler.network_timesteps(levels[:-1]).round().long(), reference.timesteps.long())
    x = x_start
    for step in range(steps):
        t = torch.full((B, F), float(levels[step]))
        t_next = torch.full((B, F), float(levels[step + 1]))
        x = sampler.step(x, fake_network(x, step), t, t_next)
    torch.testing.assert_close(x, x_ref, rtol=1e-4, atol=1e-4)


def test_ddpm_clean_frames_stay_clean_and_finite():
    for prediction in ("epsilon", "v"):
        sampler = DDPMSampler(DDPMSampler.Config(solver="ddpm", prediction=prediction, clip_sample=3.0))
        x, prediction_tensor = latents(11, dtype=torch.float32)
        t = torch.tensor([[0.0, 0.5, 1.0]] * B)
        t_next = torch.tensor([[0.0, 0.5, 0.9]] * B)
        out = sampler.step(x, prediction_tensor, t, t_next, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out).all()
        assert torch.equal(out[:, :2], x[:, :2])
        assert not torch.equal(out[:, 2], x[:, 2])


# -- shared behaviour -------------------------------------------------------------------------


def make_samplers():
    return [
        FlowSampler(FlowSampler.Config()),
        DDPMSampler(DDPMSampler.Config(solver="ddim", eta=0.5, prediction="v")),
        DDPMSampler(DDPMSampler.Config(solver="ddpm", prediction="epsilon")),
    ]


@pytest.mark.parametrize("sampler", make_samplers(), ids=["flow", "ddim-v", "ddpm-eps"])
def test_per_frame_timesteps_equal_separate_calls(sampler):
    clean, noise = latents(12)
    t = per_frame_levels(13, low=0.2)
    t_next = t * torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64)  # one frame does not move
    prediction = torch.randn_like(clean)
    step_noise = torch.randn_like(clean)

    def step(x, pred, a, b, z):
        if isinstance(sampler, DDPMSampler):
            return sampler.step(x, pred, a, b, noise=z)
        return sampler.step(x, pred, a, b)

    joint = {
        "add_noise": sampler.add_noise(clean, noise, t),
        "target": sampler.training_target(clean, noise, t),
        "step": step(clean, prediction, t, t_next, step_noise),
    }
    for f in range(F):
        s = slice(f, f + 1)
        torch.testing.assert_close(joint["add_noise"][:, s], sampler.add_noise(clean[:, s], noise[:, s], t[:, s]))
        torch.testing.assert_close(joint["target"][:, s], sampler.training_target(clean[:, s], noise[:, s], t[:, s]))
        separate = step(clean[:, s], prediction[:, s], t[:, s], t_next[:, s], step_noise[:, s])
        torch.testing.assert_close(joint["step"][:, s], separate)
    assert torch.equal(joint["step"][:, 1], clean[:, 1])  # t == t_next -> unchanged


@pytest.mark.parametrize("sampler", make_samplers(), ids=["flow", "ddim-v", "ddpm-eps"])
def test_steps_keep_dtype_and_do_not_mutate_inputs(sampler):
    x, prediction = latents(14, dtype=torch.bfloat16)
    x_copy, prediction_copy = x.clone(), prediction.clone()
    t = torch.full((B, F), 0.6)
    out = sampler.step(x, prediction, t, t * 0.5, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    assert torch.equal(x, x_copy) and torch.equal(prediction, prediction_copy)
    with pytest.raises(ValueError, match="t_next"):
        sampler.step(x, prediction, t * 0.5, t)


@pytest.mark.parametrize("cls", [FlowSampler, DDPMSampler])
def test_training_timestep_modes(cls):
    g = torch.Generator().manual_seed(0)
    per_sample = cls(cls.Config(timestep_mode="per_sample")).sample_timesteps(64, 8, generator=g)
    assert per_sample.shape == (64, 8) and bool((per_sample == per_sample[:, :1]).all())

    chunked = cls(cls.Config(timestep_mode="per_chunk", chunks=2, shared_prob=0.2))
    t = chunked.sample_timesteps(4000, 8, generator=g)
    assert bool((t[:, :4] == t[:, :1]).all()) and bool((t[:, 4:] == t[:, 4:5]).all())
    shared_fraction = float((t[:, 0] == t[:, 4]).float().mean())
    assert abs(shared_fraction - 0.2) < 0.04  # binomial std ~0.006 (+ DDPM grid collisions ~0.001)

    independent = cls(cls.Config(timestep_mode="per_frame", shared_prob=0.0)).sample_timesteps(256, 8, generator=g)
    assert float((independent[:, 0] == independent[:, 1]).float().mean()) < 0.02
    assert bool(((independent > 0) & (independent <= 1)).all())

    again = cls(cls.Config(timestep_mode="per_frame")).sample_timesteps(
        5, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, cls(cls.Config(timestep_mode="per_frame")).sample_timesteps(
        5, 3, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("distribution, extra, median", [
    ("uniform", {}, 0.5),
    ("logit_normal", {"logit_mean": 1.0}, float(torch.sigmoid(torch.tensor(1.0)))),
    ("shifted", {"shift": 4.0}, 0.8),  # shift(0.5) = 4 * 0.5 / (1 + 3 * 0.5)
])
def test_training_timestep_distributions(distribution, extra, median):
    sampler = FlowSampler(FlowSampler.Config(timesteps=distribution, timestep_mode="per_sample", **extra))
    t = sampler.sample_timesteps(20000, 1, generator=torch.Generator().manual_seed(0))
    assert abs(float(t.median()) - median) < 0.02


def test_ddpm_training_timesteps_are_on_the_grid():
    sampler = DDPMSampler(DDPMSampler.Config(timestep_mode="per_frame"))
    t = sampler.sample_timesteps(128, 4, generator=torch.Generator().manual_seed(0))
    index = t.double() * 1000
    torch.testing.assert_close(index, index.round(), atol=1e-3, rtol=0)
    assert float(index.min()) >= 1 - 1e-3 and float(index.max()) <= 1000 + 1e-3
