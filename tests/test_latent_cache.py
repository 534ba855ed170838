"""Latent cache: exact round trip per (epoch, index), resume after an interruption, refusal of a cache
made with another configuration, reproducible posterior samples."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from scenetok.components.image_compressors.pixel import PixelCompressor
from scenetok.components.image_compressors.vavae import VAVAE
from scenetok.data.cache import CachedLatentDataset, cache_latents
from scenetok.types import collate_scenes


class TinyScenes(torch.utils.data.Dataset):
    """Samples are a pure function of (seed, epoch, index), like a SceneDataset's."""

    @dataclass
    class Config:
        seed: int = 7
        size: int = 16

    def __init__(self, length: int = 5, config: Config | None = None):
        self.length, self.config, self.epoch = length, config or self.Config(), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _views(self, generator: torch.Generator, count: int) -> dict[str, torch.Tensor]:
        size = self.config.size
        extrinsics = torch.eye(4).repeat(count, 1, 1)
        extrinsics[:, :3, 3] = torch.randn(count, 3, generator=generator) * 1e3  # large scene: float32 matters
        return {
            "images": torch.rand(count, 3, size, size, generator=generator),
            "extrinsics": extrinsics,
            "intrinsics": torch.eye(3).repeat(count, 1, 1) * 0.9,
            "indices": torch.randint(0, 100, (count,), generator=generator),
        }

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(self.config.seed * 10_000 + self.epoch * 100 + index)
        return {"scene": f"scene{index:03d}", "context": self._views(generator, 2), "target": self._views(generator, 3)}


class CountingPixel(PixelCompressor):
    """Counts encode calls; raises after ``fail_after`` calls (simulates a killed run)."""

    def __init__(self, config=None, fail_after: int | None = None):
        super().__init__(config or PixelCompressor.Config(patch_size=4))
        self.calls, self.fail_after = 0, fail_after

    def encode(self, images, sample=False):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        return super().encode(images, sample)


def test_round_trip_is_exact_for_every_epoch(tmp_path):
    dataset, compressor = TinyScenes(), PixelCompressor(PixelCompressor.Config(patch_size=4))
    manifest_path = cache_latents(dataset, compressor, tmp_path / "cache", shard_size=2, epochs=2,
                                  compressor_name="pixel", progress=False)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["complete"] and manifest["num_samples"] == 5 and manifest["num_shards"] == 3
    assert manifest["compressor"] == {"name": "pixel", "class": f"{PixelCompressor.__module__}:PixelCompressor",
                                      "config": {"patch_size": 4}}
    assert manifest["dataset"]["config"] == {"seed": 7, "size": 16}
    assert manifest["parts"]["target"] == {"latent_shapes": [[3, 48, 4, 4]], "dtype": ["float32"]}

    cached = CachedLatentDataset(tmp_path / "cache", expect_compressor="pixel")
    assert len(cached) == len(dataset)
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        cached.set_epoch(epoch)
        for index in range(len(dataset)):
            raw, got = dataset[index], cached[index]
            assert got["scene"] == raw["scene"]
            for part in ("context", "target"):
                assert "images" not in got[part]
                assert torch.equal(got[part]["latents"], compressor.encode(raw[part]["images"][None])[0])
                for key in ("extrinsics", "intrinsics", "indices"):
                    assert got[part][key].dtype == raw[part][key].dtype
                    assert torch.equal(got[part][key], raw[part][key]), (epoch, index, part, key)
    # the two cached epochs are distinct view selections
    cached.set_epoch(0)
    first = cached[0]["context"]["latents"]
    cached.set_epoch(1)
    assert not torch.equal(first, cached[0]["context"]["latents"])

    batch = collate_scenes([cached[0], cached[1]])
    assert batch.context.images is None and batch.context.latents.shape == (2, 2, 48, 4, 4)
    assert batch.target.cameras.shape == (2, 3)


def test_interrupted_run_resumes_and_skips_complete_shards(tmp_path):
    dataset = TinyScenes()
    out = tmp_path / "cache"
    # Two encodes per sample (context + target): dies inside the second shard.
    with pytest.raises(KeyboardInterrupt):
        cache_latents(dataset, CountingPixel(fail_after=5), out, shard_size=2, progress=False)
    assert (out / "epoch000" / "shard00000.safetensors").exists()
    assert not (out / "epoch000" / "shard00001.safetensors").exists()
    assert not list(out.rglob("*.tmp-*"))
    with pytest.raises(ValueError, match="incomplete"):
        CachedLatentDataset(out)

    first_shard = (out / "epoch000" / "shard00000.safetensors").stat().st_mtime_ns
    resumed = CountingPixel()
    cache_latents(dataset, resumed, out, shard_size=2, progress=False)
    assert resumed.calls == 2 * 3  # samples 2, 3, 4 only
    assert (out / "epoch000" / "shard00000.safetensors").stat().st_mtime_ns == first_shard

    fresh = tmp_path / "fresh"
    cache_latents(dataset, PixelCompressor(PixelCompressor.Config(patch_size=4)), fresh, shard_size=2, progress=False)
    a, b = CachedLatentDataset(out), CachedLatentDataset(fresh)
    for index in range(len(dataset)):
        assert torch.equal(a[index]["target"]["latents"], b[index]["target"]["latents"])

    again = CountingPixel()
    cache_latents(dataset, again, out, shard_size=2, progress=False)  # complete: nothing to do
    assert again.calls == 0 and json.loads((out / "manifest.json").read_text())["complete"]


def test_refuses_a_cache_of_another_configuration(tmp_path):
    dataset = TinyScenes()
    cache_latents(dataset, PixelCompressor(PixelCompressor.Config(patch_size=4)), tmp_path, shard_size=2,
                  compressor_name="pixel", progress=False)
    with pytest.raises(ValueError, match="differs in: compressor"):
        cache_latents(dataset, PixelCompressor(PixelCompressor.Config(patch_size=2)), tmp_path, shard_size=2,
                      compressor_name="pixel", progress=False)
    with pytest.raises(ValueError, match="cached with compressor 'pixel'"):
        CachedLatentDataset(tmp_path, expect_compressor="vavae")


def test_posterior_samples_are_reproducible_and_leave_the_global_rng_alone(tmp_path):
    compressor = VAVAE(VAVAE.Config(**VAVAE.presets["tiny"], random_init=True))
    dataset = TinyScenes(length=2, config=TinyScenes.Config(size=32))
    state = torch.get_rng_state()
    for name in ("a", "b"):
        cache_latents(dataset, compressor, tmp_path / name, shard_size=4, sample=True, progress=False)
    assert torch.equal(state, torch.get_rng_state())
    cache_latents(dataset, compressor, tmp_path / "mean", shard_size=4, progress=False)
    a, b, mean = (CachedLatentDataset(tmp_path / n) for n in ("a", "b", "mean"))
    assert torch.equal(a[1]["context"]["latents"], b[1]["context"]["latents"])
    assert not torch.equal(a[1]["context"]["latents"], mean[1]["context"]["latents"])
    assert torch.equal(mean[1]["context"]["latents"], compressor.encode(dataset[1]["context"]["images"][None])[0])


def test_refuses_trainable_compressors(tmp_path):
    compressor = PixelCompressor()
    compressor.extra = torch.nn.Linear(1, 1)  # a parameter that would be trained
    with pytest.raises(ValueError, match="trainable"):
        cache_latents(TinyScenes(), compressor, tmp_path, progress=False)
