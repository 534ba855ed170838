"""Minimal components of every kind, for testing the registry and recipes in isolation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scenetok.interfaces import (
    DiagonalGaussian,
    Decoder,
    ImageCompressor,
    LatentSpec,
    Sampler,
    SceneDataset,
    TokenCompressor,
)


class FakeImageCompressor(ImageCompressor):
    @dataclass
    class Config:
        """Attributes:
        factor: pooling factor.
        """

        factor: int = 2

    def __init__(self, config: Config):
        super().__init__()
        self.config = config

    @classmethod
    def latent_spec(cls, config):
        return LatentSpec(channels=3, spatial_factor=config.factor)

    def encode(self, images, sample=False):
        b, v = images.shape[:2]
        out = torch.nn.functional.avg_pool2d(images.flatten(0, 1), self.config.factor)
        return out.unflatten(0, (b, v))

    def decode(self, latents):
        b, f = latents.shape[:2]
        out = torch.nn.functional.interpolate(latents.flatten(0, 1), scale_factor=self.config.factor)
        return out.unflatten(0, (b, f))


class FakeTokenCompressor(TokenCompressor):
    @dataclass
    class Config:
        num_tokens: int = 4
        token_dim: int = 8
        depth: int = 1

    presets = {"S": {"depth": 2}, "L": {"depth": 4, "num_tokens": 16}}

    def __init__(self, config: Config, *, in_channels: int, latent_size: tuple[int, int]):
        super().__init__()
        self.config = config
        self.proj = torch.nn.Linear(in_channels, 2 * config.token_dim)

    @classmethod
    def token_shape(cls, config):
        return config.num_tokens, config.token_dim

    def forward(self, latents, cameras):
        pooled = latents.mean(dim=(1, 3, 4))
        out = self.proj(pooled)[:, None].expand(-1, self.config.num_tokens, -1)
        mean, logvar = out.chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)


class FakeDecoder(Decoder):
    @dataclass
    class Config:
        window: int = 8
        depth: int = 1
        width: int = 16

        def __post_init__(self):
            if self.depth < 1:
                raise ValueError(f"depth must be >= 1, got {self.depth}")

    presets = {"S": {"depth": 2}}

    def __init__(self, config: Config, *, in_channels, latent_size, token_dim, latent_spec):
        super().__init__()
        self.config = config
        self.cond = torch.nn.Linear(token_dim, in_channels)
        self.null = torch.nn.Parameter(torch.zeros(1, 1, token_dim))

    @classmethod
    def max_latent_frames(cls, config):
        return config.window

    def forward(self, noisy_latents, timesteps, cameras, scene_tokens, token_mask=None):
        tokens = self.null.expand(noisy_latents.shape[0], 1, -1) if scene_tokens is None else scene_tokens
        bias = self.cond(tokens.mean(1))[:, None, :, None, None]
        return noisy_latents * 0.5 + bias


class FakeSampler(Sampler):
    @dataclass
    class Config:
        steps: int = 4
        prediction: str = "flow"

    def __init__(self, config: Config):
        self.config = config

    @classmethod
    def prediction_target(cls, config):
        return config.prediction

    @classmethod
    def process_family(cls):
        return "fake"

    def sample_timesteps(self, batch, frames, generator=None, device=None):
        return torch.rand(batch, frames, generator=generator).to(device)

    def add_noise(self, clean, noise, t):
        t = t[..., None, None, None]
        return (1 - t) * clean + t * noise

    def training_target(self, clean, noise, t):
        return noise - clean

    def network_timesteps(self, t):
        return t * 1000

    def inference_levels(self, steps):
        return torch.linspace(1, 0, steps + 1, dtype=torch.float64)

    def step(self, x_t, prediction, t, t_next, generator=None):
        return x_t + (t_next - t)[..., None, None, None].to(x_t) * prediction


class FakeDataset(SceneDataset):
    @dataclass
    class Config:
        image_size: int = 8
        context_views: int = 2
        target_views: int = 2
        split: str = "train"
        num_scenes: int = 3

    def __init__(self, config: Config):
        self.config = config

    def scenes(self):
        return [f"scene{i}" for i in range(self.config.num_scenes)]

    def num_frames(self, scene):
        return 8

    def load_views(self, scene, indices):
        n, s = len(indices), self.config.image_size
        return {
            "images": torch.rand(n, 3, s, s),
            "extrinsics": torch.eye(4).repeat(n, 1, 1),
            "intrinsics": torch.eye(3).repeat(n, 1, 1),
            "indices": torch.tensor(indices),
        }

    def __len__(self):
        return self.config.num_scenes

    def __getitem__(self, i):
        scene = self.scenes()[i]
        c = self.config.context_views
        return {"scene": scene, "context": self.load_views(scene, list(range(c))),
                "target": self.load_views(scene, list(range(c, c + self.config.target_views)))}


FAKES = {
    "image_compressor": {"fakeae": FakeImageCompressor},
    "token_compressor": {"faketok": FakeTokenCompressor},
    "decoder": {"fakedit": FakeDecoder},
    "sampler": {"fakeflow": FakeSampler},
    "dataset": {"fakeset": FakeDataset},
}

FAKE_RECIPE = """\
recipe_version: 1
image_compressor: fakeae
token_compressor: {name: faketok, num_tokens: 4}
decoder: {name: fakedit, depth: 1}
sampler: fakeflow
dataset: {name: fakeset, image_size: 8}
train: {steps: 10, warmup_steps: 2}
"""
