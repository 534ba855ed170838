"""Contract test suites: the rules every component of a kind must follow, core or plugin.

Subclass the suite of your component's kind in a test module, name the subclass ``Test...`` and
implement its factory; pytest then runs every contract test against your component::

    from scenetok.testing.contracts import ImageCompressorContract

    class TestMyVAE(ImageCompressorContract):
        component_class = MyVAE

        def make_config(self):
            return MyVAE.Config(width=8)   # tiny

Keep the configs tiny: the suites run on a CPU in seconds.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import pytest
import torch

from scenetok.interfaces import LatentSpec
from scenetok.types import Cameras


def random_cameras(batch: int, views: int, generator: torch.Generator | None = None) -> Cameras:
    """Plausible cameras ``(B, V)``: random rotations, centres in a unit cube, ~60 degree FOV."""
    axis_angle = torch.randn(batch, views, 3, generator=generator) * 0.3
    import kornia

    rotation = kornia.geometry.conversions.axis_angle_to_rotation_matrix(axis_angle.reshape(-1, 3))
    extrinsics = torch.eye(4).repeat(batch * views, 1, 1)
    extrinsics[:, :3, :3] = rotation
    extrinsics[:, :3, 3] = torch.rand(batch * views, 3, generator=generator) - 0.5
    intrinsics = torch.tensor([[0.9, 0.0, 0.5], [0.0, 0.9, 0.5], [0.0, 0.0, 1.0]]).repeat(batch * views, 1, 1)
    return Cameras(extrinsics.reshape(batch, views, 4, 4), intrinsics.reshape(batch, views, 3, 3))


class ComponentContract:
    """Rules shared by every kind: a typed ``Config`` that round-trips through OmegaConf, and
    presets that build."""

    component_class: ClassVar[type]

    def make_config(self) -> Any:
        """A (tiny) config of the component under test."""
        return self.component_class.Config()

    def test_config_is_a_dataclass_that_round_trips_through_omegaconf(self) -> None:
        from omegaconf import OmegaConf

        config = self.make_config()
        assert dataclasses.is_dataclass(config)
        rebuilt = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(type(config)),
                                                      OmegaConf.to_container(OmegaConf.structured(config))))
        assert rebuilt == config

    def test_presets_build_valid_configs(self) -> None:
        from omegaconf import OmegaConf

        for preset in getattr(self.component_class, "presets", {}):
            config = self.component_class.default_config(preset)
            OmegaConf.structured(config)  # schema-valid


class ImageCompressorContract(ComponentContract):
    """Shapes follow ``latent_spec``; decode returns ``[0, 1]`` images; the mean is deterministic."""

    image_size: ClassVar[tuple[int, int]] = (32, 32)
    num_views: ClassVar[int] = 2

    def make_component(self) -> Any:
        return self.component_class(self.make_config())

    def frames(self, spec: Any) -> int:
        if spec.temporal_factor == 1:
            return self.num_views
        return spec.chunk_frames or (1 + spec.temporal_factor if spec.first_frame_alone else spec.temporal_factor)

    def test_encode_and_decode_shapes_follow_the_latent_spec(self) -> None:
        compressor = self.make_component()
        spec = type(compressor).latent_spec(compressor.config)
        frames = self.frames(spec)
        height, width = self.image_size
        images = torch.rand(1, frames, 3, height, width)
        latents = compressor.encode(images)
        assert latents.shape == (1, spec.latent_frames(frames), spec.channels,
                                 height // spec.spatial_factor, width // spec.spatial_factor)
        decoded = compressor.decode(latents)
        assert decoded.shape == images.shape
        assert decoded.min() >= 0.0 and decoded.max() <= 1.0

    def test_posterior_mean_is_deterministic(self) -> None:
        compressor = self.make_component()
        spec = type(compressor).latent_spec(compressor.config)
        images = torch.rand(1, self.frames(spec), 3, *self.image_size)
        torch.testing.assert_close(compressor.encode(images), compressor.encode(images))


class TokenCompressorContract(ComponentContract):
    """``(B, N, D)`` Gaussians, any number of views, invariant to the order of the views."""

    in_channels: ClassVar[int] = 12
    latent_size: ClassVar[tuple[int, int]] = (8, 8)

    def make_component(self) -> Any:
        return self.component_class(self.make_config(), in_channels=self.in_channels, latent_size=self.latent_size)

    def inputs(self, views: int, batch: int = 2) -> tuple[torch.Tensor, Cameras]:
        generator = torch.Generator().manual_seed(views)
        latents = torch.randn(batch, views, self.in_channels, *self.latent_size, generator=generator)
        return latents, random_cameras(batch, views, generator)

    @pytest.mark.parametrize("views", [1, 3])
    def test_output_shape_for_any_number_of_views(self, views: int) -> None:
        module = self.make_component().eval()
        num_tokens, token_dim = type(module).token_shape(module.config)
        distribution = module(*self.inputs(views))
        assert distribution.mean.shape == (2, num_tokens, token_dim)
        assert distribution.logvar.shape == (2, num_tokens, token_dim)
        assert distribution.kl().shape == (2,)

    def test_permutation_invariant_over_views(self) -> None:
        module = self.make_component().eval()
        latents, cameras = self.inputs(4)
        order = torch.tensor([2, 0, 3, 1])
        a = module(latents, cameras).mean
        b = module(latents[:, order], cameras[:, order]).mean
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


class DecoderContract(ComponentContract):
    """Predictions have the input's shape, for conditional and null-token (CFG) calls."""

    in_channels: ClassVar[int] = 12
    latent_size: ClassVar[tuple[int, int]] = (4, 4)
    token_shape: ClassVar[tuple[int, int]] = (8, 16)

    def make_component(self) -> Any:
        return self.component_class(self.make_config(), in_channels=self.in_channels, latent_size=self.latent_size,
                                    token_dim=self.token_shape[1], latent_spec=LatentSpec(self.in_channels, 4))

    def test_shapes_conditional_and_unconditional(self) -> None:
        module = self.make_component().eval()
        frames = min(3, type(module).max_latent_frames(module.config))
        noisy = torch.randn(2, frames, self.in_channels, *self.latent_size)
        timesteps = torch.rand(2, frames) * 999
        cameras = random_cameras(2, frames)
        tokens = torch.randn(2, *self.token_shape)
        assert module(noisy, timesteps, cameras, tokens).shape == noisy.shape
        assert module(noisy, timesteps, cameras, None).shape == noisy.shape
        mask = torch.zeros(2, self.token_shape[0], dtype=torch.bool)
        mask[:, ::2] = True
        assert module(noisy, timesteps, cameras, tokens, token_mask=mask).shape == noisy.shape


class SamplerContract(ComponentContract):
    """The noising / target / step triple is consistent, per frame."""

    def make_component(self) -> Any:
        return self.component_class(self.make_config())

    def test_oracle_prediction_recovers_clean_data_in_one_step(self) -> None:
        sampler = self.make_component()
        generator = torch.Generator().manual_seed(0)
        clean = torch.randn(2, 3, 4, 2, 2, generator=generator, dtype=torch.float64)
        noise = torch.randn(clean.shape, generator=generator, dtype=torch.float64)
        t = torch.tensor([[0.9, 0.5, 0.2], [0.7, 0.3, 1.0]], dtype=torch.float64)
        noisy = sampler.add_noise(clean, noise, t)
        oracle = sampler.training_target(clean, noise, t)
        recovered = sampler.step(noisy, oracle, t, torch.zeros_like(t), generator=generator)
        torch.testing.assert_close(recovered, clean, atol=1e-4, rtol=1e-4)

    def test_frames_at_the_same_level_are_unchanged(self) -> None:
        sampler = self.make_component()
        x = torch.randn(1, 2, 3, 2, 2)
        t = torch.tensor([[0.5, 0.0]])
        t_next = torch.tensor([[0.25, 0.0]])
        out = sampler.step(x, torch.randn_like(x), t, t_next)
        torch.testing.assert_close(out[:, 1], x[:, 1])

    def test_levels_and_timesteps(self) -> None:
        sampler = self.make_component()
        levels = sampler.inference_levels(10)
        assert levels.shape == (11,) and float(levels[0]) == pytest.approx(1.0) and float(levels[-1]) == 0.0
        assert bool((levels[1:] <= levels[:-1]).all())
        t = sampler.sample_timesteps(4, 3, generator=torch.Generator().manual_seed(0))
        assert t.shape == (4, 3) and bool(((t >= 0) & (t <= 1)).all())


class SceneGeneratorContract(ComponentContract):
    """``(B, N, D)`` predictions for 1..max conditioning views; absent views are ignored whatever
    they contain; anchors form a set (their order does not matter)."""

    num_tokens: ClassVar[int] = 6
    token_dim: ClassVar[int] = 4
    in_channels: ClassVar[int] = 4
    latent_size: ClassVar[tuple[int, int]] = (4, 4)
    num_anchors: ClassVar[int] = 3

    def make_component(self) -> Any:
        module = self.component_class(self.make_config(), num_tokens=self.num_tokens, token_dim=self.token_dim,
                                      in_channels=self.in_channels, latent_size=self.latent_size)
        with torch.no_grad():  # zero-initialised output layers would make every check trivial
            generator = torch.Generator().manual_seed(0)
            for parameter in module.parameters():
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
        return module.eval()

    def inputs(self, views: int, batch: int = 2, seed: int = 0) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(seed)
        return {
            "noisy_tokens": torch.randn(batch, self.num_tokens, self.token_dim, generator=generator),
            "timesteps": torch.rand(batch, self.num_tokens, generator=generator) * 999,
            "cond_latents": torch.randn(batch, views, self.in_channels, *self.latent_size, generator=generator),
            "cond_cameras": random_cameras(batch, views, generator),
            "anchor_cameras": random_cameras(batch, self.num_anchors, generator),
        }

    def test_shapes_for_every_number_of_views_and_unconditional(self) -> None:
        module = self.make_component()
        max_views = type(module).max_condition_views(module.config)
        for views in range(1, max_views + 1):
            inputs = self.inputs(views)
            assert module(**inputs).shape == (2, self.num_tokens, self.token_dim)
            absent = torch.zeros(2, views, dtype=torch.bool)
            assert module(**inputs, cond_mask=absent).shape == (2, self.num_tokens, self.token_dim)

    def test_absent_views_are_ignored(self) -> None:
        module = self.make_component()
        views = type(module).max_condition_views(module.config)
        if views < 2:
            pytest.skip("a single-view generator has no optional views")
        inputs = self.inputs(views)
        mask = torch.ones(2, views, dtype=torch.bool)
        mask[:, 1:] = False
        other = self.inputs(views, seed=1)
        changed = dict(inputs)
        changed["cond_latents"] = torch.cat([inputs["cond_latents"][:, :1], other["cond_latents"][:, 1:]], 1)
        changed["cond_cameras"] = Cameras.cat([inputs["cond_cameras"][:, :1], other["cond_cameras"][:, 1:]])
        torch.testing.assert_close(module(**inputs, cond_mask=mask), module(**changed, cond_mask=mask))
        # ... and a single view equals that view plus absent slots
        single = dict(inputs)
        single["cond_latents"] = inputs["cond_latents"][:, :1]
        single["cond_cameras"] = inputs["cond_cameras"][:, :1]
        torch.testing.assert_close(module(**single), module(**inputs, cond_mask=mask), atol=1e-5, rtol=1e-5)
        # whereas a present view does matter
        assert not torch.allclose(module(**inputs), module(**changed), atol=1e-4)

    def test_anchor_order_does_not_matter(self) -> None:
        module = self.make_component()
        inputs = self.inputs(1)
        shuffled = dict(inputs)
        shuffled["anchor_cameras"] = inputs["anchor_cameras"][:, torch.tensor([2, 0, 1])]
        torch.testing.assert_close(module(**inputs), module(**shuffled), atol=1e-5, rtol=1e-5)
