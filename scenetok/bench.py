"""``scenetok bench``: the benchmark suite, every figure a ratio measured side by side in one run.

Sections (each a function returning a JSON-able dict; :func:`run_bench` writes them all into
``bench_<suite>.json`` and a markdown summary ``bench_<suite>.md``):

* ``context_scaling``: encode time and render time per target view for 2..32 context views. The
  claims checked: render(32 views) / render(2 views) <= 1.1 (the scene is a fixed number of
  tokens) and encode grows at most linearly with the views.
* ``training``: optimiser steps/s, model FLOPs per step (``torch.utils.flop_counter``), MFU
  against a matmul peak measured in the same run, and a breakdown of one step (data, encode,
  decoder forward, backward, optimizer, EMA) for the quickstart model and the S/B presets.
* ``changes``: the training step before and after each speed change made from these findings
  (fused AdamW, complex-multiply RoPE; and all cores vs one thread, a setting for shared
  machines), interleaved on the same batch.
* ``sampling``: PSNR/SSIM against inference steps (1..25) and solver (Euler, Heun) for a trained
  run (``--run``); skipped with a note without one.
* ``memory``: peak memory of encode / render / train step against resolution and token count
  (``torch.cuda.max_memory_allocated`` on GPU; the profiler's allocation events on CPU).
* GPU suite (``--suite gpu``): the same measurements with the L presets at 256x256 in bf16, plus
  rendered views/s.

Sizes are chosen per suite; ``--quick`` shrinks everything to seconds (used by the tests).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from scenetok import registry
from scenetok.data.dataset import build_dataset
from scenetok.model import SceneTok, image_size_of
from scenetok.recipe import Recipe, load_recipe
from scenetok.geometry.conventions import intrinsics_from_values, look_at
from scenetok.train.loop import Trainer
from scenetok.types import Cameras, SceneBatch, Views, collate_scenes

log = logging.getLogger(__name__)

SUITES = ("cpu", "gpu")


class BenchError(RuntimeError):
    """The suite cannot run here (e.g. ``--suite gpu`` without CUDA)."""

#: Every section, in report order; each is in the JSON (possibly with a ``skipped`` note).
SECTIONS = ("matmul_peak", "context_scaling", "training", "changes", "compile", "sampling", "memory")

#: Shrinks the quickstart model to a few thousand parameters at 16x16 pixels (``--quick``).
QUICK_OVERRIDES = [
    "dataset.image_size=16", "dataset.num_scenes=16", "dataset.cache_frames=0",
    "token_compressor.width=32", "token_compressor.heads=2", "token_compressor.depth=1",
    "token_compressor.num_tokens=8", "token_compressor.token_dim=8",
    "decoder.width=32", "decoder.heads=2", "decoder.depth=1",
    "train.num_workers=0",
]


@dataclass
class BenchSizes:
    """What one suite measures.

    Attributes:
        base: recipe the models derive from (a shipped recipe name or path).
        base_overrides: overrides applied to ``base`` for every model.
        context_views: context-view counts of the scaling section.
        target_views: target views rendered per scene in the scaling section.
        render_steps: inference steps of the scaling and memory renders.
        repeats: timed repetitions (median reported) after one warm-up.
        models: model name -> overrides on top of ``base_overrides`` (the training section).
        train_batch: batch size of the S/B presets (the quickstart model keeps its own).
        train_steps: timed training steps per model.
        synthetic_data: train on a random batch of the right shape instead of dataset samples
            (GPU suite: rendering rooms at 256px on the CPU would measure the CPU).
        matmul_size: side of the square matmul that measures the peak.
        dtype: matmul dtype of the peak (the dtype training computes in).
        sampling_steps: inference steps of the sampling section.
        sampling_solvers: solvers of the sampling section.
        sampling_scenes: held-out scenes scored per configuration.
        memory_resolutions: image sizes of the memory section.
        memory_tokens: scene-token counts of the memory section.
        change_steps: interleaved before/after steps per side in the changes section (0 = as
            ``train_steps``); the medians need more than a few, since one slow step (an allocator
            or page-cache hiccup) must not decide a ratio.
        compile_steps: interleaved eager/compiled steps of the ``torch.compile`` section (0 = skip).
    """

    base: str = "quickstart"
    base_overrides: list[str] = field(default_factory=list)
    context_views: list[int] = field(default_factory=lambda: [2, 4, 8, 16, 32])
    target_views: int = 4
    render_steps: int = 4
    repeats: int = 5
    models: dict[str, list[str]] = field(default_factory=dict)
    train_batch: int = 4
    train_steps: int = 5
    synthetic_data: bool = False
    matmul_size: int = 1024
    dtype: str = "float32"
    sampling_steps: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 25])
    sampling_solvers: list[str] = field(default_factory=lambda: ["euler", "heun"])
    sampling_scenes: int = 16
    memory_resolutions: list[int] = field(default_factory=lambda: [32, 64, 128])
    memory_tokens: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    change_steps: int = 0
    compile_steps: int = 0  # 0 = skip: the first compiled step alone takes about a minute


def preset_overrides(preset: str, depth: int | None = None) -> list[str]:
    """Width/depth/heads of a preset for both networks (explicit keys of the base recipe would
    otherwise win over ``preset=``)."""
    out = []
    for section, name in (("token_compressor", "perceiver"), ("decoder", "dit")):
        values = registry.get_component(section, name).presets[preset]
        for key in ("width", "depth", "heads"):
            value = depth if key == "depth" and depth is not None else values[key]
            out.append(f"{section}.{key}={value}")
    return out


def suite_sizes(suite: str, quick: bool) -> BenchSizes:
    """The sizes of ``suite`` (``cpu`` or ``gpu``), shrunk to seconds with ``quick``."""
    if suite not in SUITES:
        raise ValueError(f"--suite must be one of {SUITES}, got {suite!r}")
    if suite == "cpu" and not quick:
        # The quickstart model at its own batch size; S and B at batch 1 (a B step is ~50 GFLOP).
        return BenchSizes(models={"quickstart": [], "S": preset_overrides("S"), "B": preset_overrides("B")},
                          train_batch=1, train_steps=4, memory_resolutions=[32, 64, 128],
                          memory_tokens=[32, 64, 128, 256], change_steps=12, compile_steps=10,
                          repeats=15)  # a CPU render is ~30 ms: 5 repeats left +-10% noise in its ratios
    if suite == "cpu":
        return BenchSizes(
            base_overrides=list(QUICK_OVERRIDES), context_views=[2, 4], target_views=2, render_steps=1,
            repeats=1, models={"quickstart": [], "S": preset_overrides("S", depth=1)}, train_batch=1,
            train_steps=1, matmul_size=128, sampling_steps=[1, 2], sampling_scenes=1,
            memory_resolutions=[16, 32], memory_tokens=[8, 16])
    # GPU: the paper's L networks at 256x256 in bf16. A weight-free pixel compressor with 16x16
    # patches gives the paper's 16x16 latent grid (768 channels instead of VA-VAE's 32, which only
    # changes the input projection); the decoder's camera grid follows the latent grid.
    gpu = ["dataset.image_size=256", "image_compressor.patch_size=16", "train.precision=bf16",
           "token_compressor.patch_size=1", "token_compressor.num_tokens=256", "token_compressor.token_dim=32",
           "token_compressor.camera_resolution=128", "decoder.patch_size=1", "decoder.window=8",
           "decoder.camera_resolution=128", "dataset.context_views=4", "dataset.target_views=8",
           "train.num_workers=0"] + preset_overrides("L")
    if quick:  # an argument/shape check of the GPU suite: L widths, one block, tiny counts
        gpu = gpu[:-6] + preset_overrides("L", depth=1)
        return BenchSizes(base_overrides=gpu, context_views=[2, 4], target_views=8, render_steps=1, repeats=1,
                          models={"L": []}, train_batch=1, train_steps=1, synthetic_data=True,
                          matmul_size=1024, dtype="bfloat16", sampling_steps=[1, 2], sampling_scenes=1,
                          memory_resolutions=[256], memory_tokens=[256])
    return BenchSizes(base_overrides=gpu, context_views=[2, 4, 8, 16, 32], target_views=8, render_steps=25,
                      repeats=5, models={"L": []}, train_batch=8, train_steps=10, synthetic_data=True,
                      matmul_size=8192, dtype="bfloat16", memory_resolutions=[128, 256],
                      memory_tokens=[128, 256, 512])


# ----------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], repeats: int, device: torch.device, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(max(1, repeats)):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak bytes allocated by ``fn()`` above what was allocated before it.

    On CUDA: ``torch.cuda.max_memory_allocated``. On CPU there is no allocator counter, so the
    profiler records every allocation and free (``profile_memory``) and the peak is the maximum
    of their running sum, in time order (tensors freed inside ``fn`` still count while alive).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return int(peak)


def measure_matmul_peak(size: int, dtype: torch.dtype, device: torch.device, repeats: int = 5) -> dict[str, Any]:
    """FLOP/s of one square ``size x size`` matmul: the achievable peak MFU is measured against."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, repeats, device)
    flops = 2 * size**3
    return {"size": size, "dtype": str(dtype).removeprefix("torch."), "seconds": seconds,
            "flops_per_s": flops / seconds}


def machine_info(device: torch.device) -> dict[str, Any]:
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "device": str(device),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def random_cameras(batch: int, views: int, generator: torch.Generator) -> Cameras:
    """Cameras ``(B, V)`` at random points of a unit cube looking at random points near the
    origin, ~60 degree field of view (normalised intrinsics)."""
    eye = torch.rand(batch, views, 3, generator=generator) - 0.5
    target = eye + torch.tensor([0.0, 0.0, 1.0]) + 0.3 * torch.randn(batch, views, 3, generator=generator)
    intrinsics = intrinsics_from_values(0.9, 0.9, 0.5, 0.5).expand(batch, views, 3, 3).clone()
    return Cameras(look_at(eye, target), intrinsics)


def random_views(batch: int, views: int, image_size: tuple[int, int], device: torch.device,
                 seed: int = 0) -> Views:
    """Random images ``(B, V, 3, H, W)`` with plausible cameras (timing/memory need shapes, not content)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, views, 3, *image_size, generator=generator)
    cameras = random_cameras(batch, views, generator)
    return Views(images=images, cameras=cameras, indices=torch.arange(views).repeat(batch, 1)).to(device)


def random_batch(recipe: Recipe, batch: int, device: torch.device, seed: int = 0) -> SceneBatch:
    """A training batch of the recipe's shapes with random content."""
    config = recipe["dataset"].config
    size = image_size_of(config)
    return SceneBatch(context=random_views(batch, config.context_views, size, device, seed),
                      target=random_views(batch, config.target_views, size, device, seed + 1),
                      scenes=[f"random-{i}" for i in range(batch)])


def _recipe(sizes: BenchSizes, extra: Iterable[str] = ()) -> Recipe:
    return load_recipe(sizes.base, [*sizes.base_overrides, *extra])


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------


def _autocast(sizes: BenchSizes, device: torch.device) -> Any:
    """bf16 autocast for the GPU suite, nothing on CPU (a context manager)."""
    if sizes.dtype == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bench_context_scaling(sizes: BenchSizes, device: torch.device) -> dict[str, Any]:
    """Encode time and render time per target view against the number of context views."""
    recipe = _recipe(sizes)
    model = SceneTok(recipe).to(device).eval()
    targets = random_views(1, sizes.target_views, model.image_size, device, seed=99).cameras
    contexts, tokens = {}, {}
    encode_s: dict[int, list[float]] = {v: [] for v in sizes.context_views}
    render_s: dict[int, list[float]] = {v: [] for v in sizes.context_views}
    with torch.no_grad(), _autocast(sizes, device):
        for views in sizes.context_views:
            contexts[views] = random_views(1, views, model.image_size, device, seed=views)
            tokens[views] = model.encode(contexts[views]).mode()
            model.render(tokens[views], targets, steps=sizes.render_steps)  # warm-up
        # Interleaved (2, 4, ..., 32, 2, 4, ...): a load change on a shared machine hits every
        # view count alike instead of skewing the ratios.
        for _ in range(max(1, sizes.repeats)):
            for views in sizes.context_views:
                context, scene = contexts[views], tokens[views]
                encode_s[views].append(timed(lambda: model.encode(context), 1, device, warmup=0))
                render_s[views].append(timed(lambda: model.render(scene, targets, steps=sizes.render_steps),
                                             1, device, warmup=0))
    rows = []
    for views in sizes.context_views:
        encode, render = statistics.median(encode_s[views]), statistics.median(render_s[views])
        rows.append({"context_views": views, "encode_ms": encode * 1e3,
                     "render_ms_per_target_view": render * 1e3 / sizes.target_views,
                     "render_views_per_s": sizes.target_views / render})
    first, last = rows[0], rows[-1]
    for row in rows:
        row["encode_ratio"] = row["encode_ms"] / first["encode_ms"]
        row["views_ratio"] = row["context_views"] / first["context_views"]
        row["render_ratio"] = row["render_ms_per_target_view"] / first["render_ms_per_target_view"]
    render_ratio = last["render_ratio"]
    # Encode "at most linear": the encode-time ratio divided by the view ratio stays <= 1 (with
    # 10% tolerance for timer noise); > 1 means super-linear growth (the views attend jointly).
    encode_growth = last["encode_ratio"] / last["views_ratio"]
    return {
        "target_views": sizes.target_views, "render_steps": sizes.render_steps, "rows": rows,
        "claims": {
            f"render_ratio_{last['context_views']}_vs_{first['context_views']}": render_ratio,
            "render_flat (<= 1.1)": render_ratio <= 1.1,
            f"encode_ratio_over_views_ratio_{last['context_views']}_vs_{first['context_views']}": encode_growth,
            "encode_at_most_linear (<= 1.1)": encode_growth <= 1.1,
        },
    }


class _StepTimer:
    """Wall-clock marks inside :meth:`Trainer.train_step`, taken by hooks (the step itself is not
    modified): forward of the model / token compressor / decoder, the last gradient accumulated
    (end of backward), the optimizer step and the EMA update."""

    def __init__(self, trainer: Trainer):
        self.trainer, self.device = trainer, trainer.device
        self.marks: dict[str, float] = {}
        self.handles: list[Any] = []
        self.spans: dict[str, float] = {}
        model = trainer.model
        for name, module in (("forward", model), ("image_compressor", model.image_compressor),
                             ("encode", model.token_compressor), ("decoder_forward", model.decoder)):
            self.handles.append(module.register_forward_pre_hook(self._start(name)))
            self.handles.append(module.register_forward_hook(self._end(name)))
        for parameter in model.parameters():
            if parameter.requires_grad:
                self.handles.append(parameter.register_post_accumulate_grad_hook(self._grad))
        self.handles.append(trainer.optimizer.register_step_pre_hook(lambda *a: self._mark("optimizer_start")))
        self.handles.append(trainer.optimizer.register_step_post_hook(lambda *a: self._mark("optimizer_end")))
        self._ema_update = None
        if trainer.ema is not None:
            original = trainer.ema.update

            def ema_update(networks: Any) -> None:
                self._mark("ema_start")
                original(networks)
                self._mark("ema_end")

            self._ema_update = original
            trainer.ema.update = ema_update  # type: ignore[method-assign]

    def _mark(self, name: str) -> None:
        _sync(self.device)
        self.marks[name] = time.perf_counter()

    def _start(self, name: str) -> Callable[..., None]:
        return lambda *args: self._mark(f"{name}_start")

    def _end(self, name: str) -> Callable[..., None]:
        def hook(*args: Any) -> None:
            self._mark(f"{name}_end")
            self.spans[name] = self.spans.get(name, 0.0) + self.marks[f"{name}_end"] - self.marks[f"{name}_start"]
        return hook

    def _grad(self, _parameter: torch.Tensor) -> None:
        self._mark("backward_end")  # the last one wins: the end of the backward pass

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        if self._ema_update is not None:
            self.trainer.ema.update = self._ema_update  # type: ignore[method-assign]

    def step(self, batch: SceneBatch) -> dict[str, float]:
        """One timed train step -> seconds per part (they add up to ``total``)."""
        self.marks, self.spans = {}, {}
        _sync(self.device)
        start = time.perf_counter()
        self.trainer.train_step([batch])
        _sync(self.device)
        total = time.perf_counter() - start
        m = self.marks
        forward = self.spans.get("forward", 0.0)
        backward = m.get("backward_end", m["forward_end"]) - m["forward_end"]
        optimizer = m.get("optimizer_end", 0.0) - m.get("optimizer_start", 0.0)
        ema = m.get("ema_end", 0.0) - m.get("ema_start", 0.0)
        parts = {
            "image_compressor": self.spans.get("image_compressor", 0.0),
            "encode": self.spans.get("encode", 0.0),
            "decoder_forward": self.spans.get("decoder_forward", 0.0),
        }
        parts["other_forward"] = forward - sum(parts.values())
        parts.update({"backward": backward, "optimizer": optimizer, "ema": ema})
        parts["other"] = total - forward - backward - optimizer - ema  # zero_grad, clipping, schedule
        parts["total"] = total
        return parts


def _training_batch(trainer: Trainer, sizes: BenchSizes, step: int, epoch: int = 0) -> tuple[SceneBatch, float]:
    """The batch of ``step`` from the trainer's own data path, and the seconds it took (fetch +
    collate, as one DataLoader worker does it). ``epoch`` 0 renders the scenes (cold caches);
    epoch 1 draws new views of the same scenes, which is what most of a training run does."""
    if sizes.synthetic_data:
        return random_batch(trainer.recipe, trainer.config.batch_size, trainer.device, seed=step), 0.0
    start = time.perf_counter()
    keys = [(epoch, (step * trainer.config.batch_size + i) % len(trainer.dataset))
            for i in range(trainer.config.batch_size)]
    batch = collate_scenes([trainer.dataset[key] for key in keys])
    return batch.to(trainer.device), time.perf_counter() - start


def _flops_per_step(trainer: Trainer, batch: SceneBatch) -> int:
    """Model FLOPs of one optimiser step (forward + backward), counted by ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        trainer.train_step([batch])
    return int(counter.get_total_flops())


def make_trainer(recipe: Recipe, run_dir: Path, optimizer: str | None = None) -> Trainer:
    """A :class:`Trainer` for measuring (nothing is written to ``run_dir`` unless it saves);
    ``optimizer`` forces AdamW's ``"forloop"``, ``"foreach"`` or ``"fused"`` implementation."""
    if optimizer is not None:
        recipe.sections["train"] = dataclasses.replace(recipe.sections["train"], adamw_impl=optimizer)
    return Trainer(recipe, run_dir, progress=False)


def bench_training(sizes: BenchSizes, device: torch.device, peak_flops: float) -> dict[str, Any]:
    """Steps/s, FLOPs per step, MFU and the breakdown of one step, per model."""
    models = {}
    for name, overrides in sizes.models.items():
        extra = list(overrides)
        if name != "quickstart":
            extra.append(f"train.batch_size={sizes.train_batch}")
        recipe = _recipe(sizes, extra)
        with tempfile.TemporaryDirectory(prefix="scenetok-bench-") as run_dir:
            trainer = make_trainer(recipe, Path(run_dir))
            # Two batches: rendered (cold), then new views of the same scenes (cached frames).
            cold = [_training_batch(trainer, sizes, step, epoch=0)[1] for step in range(2)]
            fetched = [_training_batch(trainer, sizes, step, epoch=1) for step in range(2)]
            batches, cached = [b for b, _ in fetched], [s for _, s in fetched]
            trainer.train_step([batches[0]])  # warm-up (allocator, first-call dispatch)
            flops = _flops_per_step(trainer, batches[1])
            # Steps/s from plain steps; the breakdown from two more with the timing hooks (which
            # synchronise the GPU at every mark, so they would slow the steps they time).
            plain = []
            for i in range(sizes.train_steps):
                _sync(trainer.device)
                start = time.perf_counter()
                trainer.train_step([batches[i % 2]])
                _sync(trainer.device)
                plain.append(time.perf_counter() - start)
            timer = _StepTimer(trainer)
            try:
                parts = [timer.step(batches[i % 2]) for i in range(2)]
            finally:
                timer.close()
            breakdown = {key: statistics.median(p[key] for p in parts) for key in parts[0]}
            data = statistics.median(cached) if not sizes.synthetic_data else 0.0
            step_s = statistics.median(plain)
            parameters = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
            total_with_data = step_s + data
            models[name] = {
                "overrides": extra, "parameters": parameters, "batch_size": trainer.config.batch_size,
                "image_size": list(trainer.model.image_size), "steps_timed": len(plain),
                "step_ms": step_s * 1e3, "steps_per_s": 1.0 / step_s,
                "steps_per_s_with_inline_data": 1.0 / total_with_data,
                "flops_per_step": flops, "achieved_flops_per_s": flops / step_s, "mfu": flops / step_s / peak_flops,
                "data_ms": data * 1e3, "data_ms_cold": statistics.median(cold) * 1e3,
                "data_source": "random batch" if sizes.synthetic_data else "dataset",
                "breakdown_ms": {key: value * 1e3 for key, value in breakdown.items()},
                "breakdown_fraction": {key: value / breakdown["total"] for key, value in breakdown.items()
                                       if key != "total"},
            }
    return {"peak_flops_per_s": peak_flops, "models": models}


@contextlib.contextmanager
def _reference_rope() -> Any:
    """The RoPE formula before the complex-multiply rewrite, installed where attention calls it."""
    from scenetok.nn import attention, rope  # lazy: only the benchmark swaps implementations

    fast = attention.apply_rope
    attention.apply_rope = rope.apply_rope_reference
    try:
        yield
    finally:
        attention.apply_rope = fast


#: Training-step changes measured by :func:`bench_changes`: name -> (what "before" is, what
#: "after" is). "before" runs on a trainer with AdamW's for-loop implementation where it says so.
CHANGES = {
    "adamw_fused": "AdamW for-loop implementation (torch's CPU default) -> fused kernel (train.adamw_impl=auto)",
    "rope_complex": "RoPE as split/negate/stack/multiply-add -> one complex multiply per pair",
    "all": "the step before both changes -> the step now",
    "one_thread": "torch intra-op threads = all cores -> 1 (a setting, not a default: for shared machines)",
}


@contextlib.contextmanager
def _threads(count: int) -> Any:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def bench_changes(sizes: BenchSizes, device: torch.device) -> dict[str, Any]:
    """Each training-step change before vs after, on the first model, the same batch and
    interleaved (before, after, before, after, ...) so load changes hit both sides alike."""
    name, overrides = next(iter(sizes.models.items()))
    extra = list(overrides) + ([] if name == "quickstart" else [f"train.batch_size={sizes.train_batch}"])
    repeats = max(1, sizes.change_steps or sizes.train_steps)
    with tempfile.TemporaryDirectory(prefix="scenetok-bench-") as run_dir:
        trainers = {"forloop": make_trainer(_recipe(sizes, extra), Path(run_dir) / "a", optimizer="forloop"),
                    "auto": make_trainer(_recipe(sizes, extra), Path(run_dir) / "b", optimizer="auto")}
        batch = _training_batch(trainers["auto"], sizes, 0)[0]
        timers = {}
        for key, trainer in trainers.items():
            trainer.train_step([batch])  # warm-up, allocates optimizer state
            timers[key] = _StepTimer(trainer)
        none = contextlib.nullcontext
        variants = {
            "adamw_fused": (("forloop", none), ("auto", none)),
            "rope_complex": (("auto", _reference_rope), ("auto", none)),
            "all": (("forloop", _reference_rope), ("auto", none)),
        }
        if device.type == "cpu" and (os.cpu_count() or 1) > 1:
            variants["one_thread"] = (("auto", lambda: _threads(os.cpu_count() or 1)), ("auto", lambda: _threads(1)))
        samples: dict[str, dict[str, list[dict[str, float]]]] = {c: {"before": [], "after": []} for c in variants}
        try:
            for _ in range(repeats):
                for change, sides in variants.items():
                    for side, (key, context) in zip(("before", "after"), sides):
                        with context():
                            samples[change][side].append(timers[key].step(batch))
        finally:
            for timer in timers.values():
                timer.close()
    out: dict[str, Any] = {"model": name, "repeats": repeats, "changes": {}}
    for change, sides in samples.items():
        row: dict[str, Any] = {"description": CHANGES[change]}
        for side, parts in sides.items():
            row[f"{side}_ms"] = {key: statistics.median(p[key] for p in parts) * 1e3 for key in parts[0]}
        row["step_speedup"] = row["before_ms"]["total"] / row["after_ms"]["total"]
        row["optimizer_speedup"] = row["before_ms"]["optimizer"] / max(row["after_ms"]["optimizer"], 1e-9)
        out["changes"][change] = row
    return out


def bench_compile(sizes: BenchSizes, device: torch.device) -> dict[str, Any]:
    """``train.compile``: the first model's step eager vs compiled (interleaved, same batch), the
    compile time (first compiled step minus a compiled step, from an empty inductor cache) and the
    steps it takes to pay back."""
    if sizes.compile_steps < 1:
        return {"skipped": "compile_steps = 0 (the quick suite; the first compiled step alone takes about a minute)"}
    name, overrides = next(iter(sizes.models.items()))
    extra = list(overrides) + ([] if name == "quickstart" else [f"train.batch_size={sizes.train_batch}"])
    with tempfile.TemporaryDirectory(prefix="scenetok-bench-") as run_dir, \
            mock.patch.dict(os.environ, {"TORCHINDUCTOR_CACHE_DIR": str(Path(run_dir) / "inductor-cache")}):
        # An empty inductor cache: what the first `train.compile=true` run on a machine pays (a
        # warm cache from an earlier run cuts the compile time about 3x).
        eager = make_trainer(_recipe(sizes, extra), Path(run_dir) / "eager")
        compiled = make_trainer(_recipe(sizes, [*extra, "train.compile=true"]), Path(run_dir) / "compiled")
        batch = _training_batch(eager, sizes, 0)[0]
        eager.train_step([batch])
        first = timed(lambda: compiled.train_step([batch]), 1, device, warmup=0)  # compiles
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(sizes.compile_steps):
            for key, trainer in (("eager", eager), ("compiled", compiled)):
                times[key].append(timed(lambda t=trainer: t.train_step([batch]), 1, device, warmup=0))
    eager_s, compiled_s = statistics.median(times["eager"]), statistics.median(times["compiled"])
    compile_s = max(first - compiled_s, 0.0)
    saved = eager_s - compiled_s
    quickstart_steps = int(load_recipe("quickstart").sections["train"].steps)
    break_even = compile_s / saved if saved > 0 else None
    return {"model": name, "repeats": sizes.compile_steps, "eager_ms": eager_s * 1e3, "compiled_ms": compiled_s * 1e3,
            "step_speedup": eager_s / compiled_s, "compile_s": compile_s, "break_even_steps": break_even,
            "quickstart_steps": quickstart_steps, "inductor_cache": "empty (a fresh temporary directory)",
            "pays_back_in_quickstart": break_even is not None and break_even < quickstart_steps}


def bench_sampling(sizes: BenchSizes, device: torch.device, run: Path | None) -> dict[str, Any]:
    """PSNR/SSIM of a trained run against inference steps and solver, on the same held-out scenes."""
    if run is None:
        return {"skipped": "no trained run given: pass --run RUN_DIR (e.g. runs/quickstart) to measure "
                           "PSNR/SSIM against sampling steps and solver"}
    from scenetok.eval.metrics import psnr, ssim  # lazy: torchmetrics is only needed here

    base = SceneTok.from_pretrained(run, device=device)
    config = base.recipe.sections["eval"]
    dataset = build_dataset(base.recipe, split=config.split)
    count = min(sizes.sampling_scenes, len(dataset))
    samples = [collate_scenes([dataset[i]]) for i in range(count)]
    rows = []
    for solver in sizes.sampling_solvers:
        model = SceneTok.from_pretrained(run, [f"sampler.solver={solver}"], device=device)
        for steps in sizes.sampling_steps:
            scores_p, scores_s, seconds = [], [], 0.0
            for batch in samples:
                start = time.perf_counter()
                prediction = model.reconstruct(batch.to(device), deterministic=True,
                                               generator=torch.Generator().manual_seed(0), steps=steps).cpu()
                seconds += time.perf_counter() - start
                scores_p.append(psnr(prediction, batch.target.images))
                scores_s.append(ssim(prediction, batch.target.images))
            views = sum(b.target.num_views for b in samples)
            rows.append({"solver": solver, "steps": steps, "psnr": float(torch.cat(scores_p).mean()),
                         "ssim": float(torch.cat(scores_s).mean()), "ms_per_view": seconds * 1e3 / views})
    reference = rows[0]
    for row in rows:
        row["psnr_delta_db_vs_first"] = row["psnr"] - reference["psnr"]
        row["time_ratio_vs_first"] = row["ms_per_view"] / reference["ms_per_view"]
    best = max(rows, key=lambda r: r["psnr"])
    return {"run": str(run), "trained_step": base.trained_step, "scenes": count,
            "reference": f"{reference['solver']} {reference['steps']} step(s)", "rows": rows,
            "best": {"solver": best["solver"], "steps": best["steps"], "psnr": best["psnr"]}}


def bench_memory(sizes: BenchSizes, device: torch.device) -> dict[str, Any]:
    """Peak bytes of encode, render and one train step against image size and token count."""
    configs = [(res, None) for res in sizes.memory_resolutions]
    configs += [(None, tokens) for tokens in sizes.memory_tokens]
    rows = []
    batch_size = 1 if sizes.synthetic_data else sizes.train_batch
    for resolution, tokens in configs:
        extra = []
        if resolution is not None:
            extra.append(f"dataset.image_size={resolution}")
        if tokens is not None:
            extra.append(f"token_compressor.num_tokens={tokens}")
        recipe = _recipe(sizes, extra)
        model = SceneTok(recipe).to(device)
        batch = random_batch(recipe, batch_size, device)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        model.eval()

        def encode() -> None:
            with torch.no_grad(), _autocast(sizes, device):
                model.encode(batch.context)

        with torch.no_grad(), _autocast(sizes, device):
            scene = model.encode(batch.context).mode()

        def render() -> None:
            with _autocast(sizes, device):
                model.render(scene, batch.target.cameras, steps=1)

        def train_step() -> None:
            model.train()
            with _autocast(sizes, device):
                loss = model.loss(batch, generator=torch.Generator().manual_seed(0))["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=False)  # keep gradients allocated: the steady state

        train_step()  # allocate optimizer state and gradients outside the measurement
        num_tokens, _ = type(model.token_compressor).token_shape(model.token_compressor.config)
        rows.append({"image_size": model.image_size[0], "num_tokens": num_tokens, "batch_size": batch_size,
                     "encode_mb": peak_memory_bytes(encode, device) / 2**20,
                     "render_mb": peak_memory_bytes(render, device) / 2**20,
                     "train_step_mb": peak_memory_bytes(train_step, device) / 2**20})
    base_res = next(r for r in rows[: len(sizes.memory_resolutions)])
    for row in rows[: len(sizes.memory_resolutions)]:
        row["varies"] = "image_size"
        row["train_ratio_vs_first"] = row["train_step_mb"] / base_res["train_step_mb"]
    base_tok = rows[len(sizes.memory_resolutions)] if sizes.memory_tokens else None
    for row in rows[len(sizes.memory_resolutions):]:
        row["varies"] = "num_tokens"
        row["train_ratio_vs_first"] = row["train_step_mb"] / base_tok["train_step_mb"]
    method = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "torch.profiler allocation events"
    return {"method": method, "rows": rows}


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


def run_bench(suite: str = "cpu", out: str | Path = "bench/results", quick: bool = False,
              run: str | Path | None = None, sections: Iterable[str] | None = None,
              sizes: BenchSizes | None = None, name: str | None = None, threads: int | None = None) -> dict[str, Any]:
    """Run the suite and write ``bench_<suite>[_quick].json`` and ``.md`` into ``out``
    (``<name>.json``/``.md`` if given). ``sizes`` replaces the suite's sizes (Python API);
    ``threads`` sets torch's intra-op threads for the run (default: torch's choice)."""
    previous_threads = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        return _run_bench(suite, out, quick, run, sections, sizes, name)
    finally:
        torch.set_num_threads(previous_threads)


def _run_bench(suite: str, out: str | Path, quick: bool, run: str | Path | None, sections: Iterable[str] | None,
               sizes: BenchSizes | None, name: str | None) -> dict[str, Any]:
    if suite == "gpu" and not torch.cuda.is_available():
        raise BenchError("scenetok bench --suite gpu needs a CUDA device (none is available here); "
                           "run --suite cpu instead")
    sizes = sizes or suite_sizes(suite, quick)
    wanted = list(sections) if sections is not None else list(SECTIONS)
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown bench section(s) {sorted(unknown)}; choose from {SECTIONS}")
    device = torch.device("cuda" if suite == "gpu" else "cpu")
    dtype = torch.bfloat16 if sizes.dtype == "bfloat16" else torch.float32
    report: dict[str, Any] = {"suite": suite, "quick": quick, "machine": machine_info(device),
                              "sizes": dataclasses.asdict(sizes), "seconds": {}}
    started = time.perf_counter()

    def section(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if name not in wanted:
            report[name] = {"skipped": "not selected"}
            return
        log.info("bench: %s", name)
        begin = time.perf_counter()
        report[name] = fn()
        report["seconds"][name] = time.perf_counter() - begin

    section("matmul_peak", lambda: measure_matmul_peak(sizes.matmul_size, dtype, device, repeats=sizes.repeats))
    peak = report["matmul_peak"].get("flops_per_s") or measure_matmul_peak(sizes.matmul_size, dtype, device)[
        "flops_per_s"]
    section("context_scaling", lambda: bench_context_scaling(sizes, device))
    section("training", lambda: bench_training(sizes, device, peak))
    section("changes", lambda: bench_changes(sizes, device))
    section("compile", lambda: bench_compile(sizes, device))
    section("sampling", lambda: bench_sampling(sizes, device, Path(run) if run else None))
    section("memory", lambda: bench_memory(sizes, device))
    report["seconds"]["total"] = time.perf_counter() - started

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = name or f"bench_{suite}" + ("_quick" if quick else "")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    (out / f"{stem}.md").write_text(format_markdown(report))
    report["files"] = [str(out / f"{stem}.json"), str(out / f"{stem}.md")]
    return report


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------


def _f(value: Any, digits: int = 2) -> str:
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -digits):
            return f"{value:.{digits}e}"
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(cell) for cell in row) + " |" for row in rows]
    return lines


def format_markdown(report: dict[str, Any]) -> str:
    """The human summary of a bench report (every section, skipped ones with their note)."""
    m = report["machine"]
    lines = [f"# scenetok bench: {report['suite']} suite" + (" (quick)" if report["quick"] else ""), "",
             f"{m['date']} on {m['platform']} ({m['processor']}, {m['cpu_count']} CPUs, {m['torch_threads']} "
             f"torch threads, load average {m.get('load_average')}), torch {m['torch']}, device {m['device']}"
             + (f" ({m['gpu']})" if m.get("gpu") else "") + ".",
             "Every figure comes from this one run; ratios compare rows measured side by side.", ""]

    def skipped(name: str) -> bool:
        note = report[name].get("skipped")
        if note:
            lines.extend([f"_skipped: {note}_", ""])
        return bool(note)

    lines += ["## Matmul peak", ""]
    if not skipped("matmul_peak"):
        p = report["matmul_peak"]
        lines += [f"{p['size']}x{p['size']} {p['dtype']} matmul: {p['flops_per_s'] / 1e9:.1f} GFLOP/s "
                  "(the peak MFU is measured against).", ""]

    lines += ["## Context scaling", ""]
    if not skipped("context_scaling"):
        c = report["context_scaling"]
        lines += [f"{c['target_views']} target views, {c['render_steps']} render step(s).", ""]
        lines += _table(["context views", "encode ms", "encode ratio", "views ratio", "render ms / target view",
                         "render views/s", "render ratio"],
                        [[r["context_views"], r["encode_ms"], r["encode_ratio"], r["views_ratio"],
                          r["render_ms_per_target_view"], r["render_views_per_s"], r["render_ratio"]]
                         for r in c["rows"]])
        lines += ["", "Claims: " + "; ".join(f"{k}: {_f(v)}" for k, v in c["claims"].items()), ""]

    lines += ["## Training throughput", ""]
    if not skipped("training"):
        t = report["training"]
        lines += _table(["model", "params", "batch", "image", "step ms", "steps/s", "steps/s with inline data",
                         "GFLOP/step", "GFLOP/s", "MFU"],
                        [[n, r["parameters"], r["batch_size"], "x".join(map(str, r["image_size"])), r["step_ms"],
                          r["steps_per_s"],
                          r["steps_per_s_with_inline_data"], r["flops_per_step"] / 1e9,
                          r["achieved_flops_per_s"] / 1e9, r["mfu"]] for n, r in t["models"].items()])
        lines += ["", "Breakdown of one step (ms; fraction of the step):", ""]
        keys = list(next(iter(t["models"].values()))["breakdown_ms"])
        lines += _table(["model", "data (cold)", "data"] + keys,
                        [[n, r["data_ms_cold"], r["data_ms"]]
                         + [f"{r['breakdown_ms'][k]:.1f} ({r['breakdown_fraction'].get(k, 1.0):.0%})" for k in keys]
                         for n, r in t["models"].items()])
        lines += ["", "`data` is fetch + collate of one batch in this process, for scenes seen before (`cold`: "
                  "first visit, rendering included); training runs it in a DataLoader worker, in parallel "
                  "with the step. `other` is zero_grad, gradient clipping, the loss read-out and the LR "
                  "schedule.", ""]

    lines += ["## Training-step changes (before/after)", ""]
    if not skipped("changes"):
        ch = report["changes"]
        lines += [f"Model: {ch['model']}; same batch, before and after interleaved, median of {ch['repeats']}.", ""]
        lines += _table(["change", "before ms", "after ms", "step speed-up", "backward ms before/after",
                         "optimizer ms before/after"],
                        [[f"{n}: {r['description']}", r["before_ms"]["total"], r["after_ms"]["total"],
                          r["step_speedup"],
                          f"{r['before_ms']['backward']:.1f} / {r['after_ms']['backward']:.1f}",
                          f"{r['before_ms']['optimizer']:.1f} / {r['after_ms']['optimizer']:.1f}"]
                         for n, r in ch["changes"].items()])
        lines += [""]

    lines += ["## torch.compile (train.compile)", ""]
    if not skipped("compile"):
        c = report["compile"]
        even = "never (no step saved)" if c["break_even_steps"] is None else f"{c['break_even_steps']:.0f} steps"
        lines += [f"Model {c['model']}, median of {c['repeats']} interleaved steps: eager {c['eager_ms']:.1f} ms, "
                  f"compiled {c['compiled_ms']:.1f} ms ({c['step_speedup']:.2f}x); compiling (empty inductor cache) took "
                  f"{c['compile_s']:.0f} s, paid back after {even}, "
                  f"{'within' if c['pays_back_in_quickstart'] else 'not within'} the quickstart's "
                  f"{c['quickstart_steps']} steps.", ""]

    lines += ["## Sampling steps and solver", ""]
    if not skipped("sampling"):
        s = report["sampling"]
        lines += [f"Run {s['run']} (step {s['trained_step']}), {s['scenes']} held-out scene(s); deltas and "
                  f"ratios vs {s['reference']}.", ""]
        lines += _table(["solver", "steps", "PSNR", "SSIM", "ms / view", "PSNR delta dB", "time ratio"],
                        [[r["solver"], r["steps"], r["psnr"], r["ssim"], r["ms_per_view"],
                          r["psnr_delta_db_vs_first"], r["time_ratio_vs_first"]] for r in s["rows"]])
        lines += ["", f"Best: {s['best']['solver']} with {s['best']['steps']} step(s), {s['best']['psnr']:.2f} dB.", ""]

    lines += ["## Peak memory", ""]
    if not skipped("memory"):
        mem = report["memory"]
        lines += [f"Measured with {mem['method']} (MB above what was allocated before).", ""]
        lines += _table(["varies", "image", "tokens", "batch", "encode MB", "render MB", "train step MB",
                         "train ratio"],
                        [[r["varies"], r["image_size"], r["num_tokens"], r["batch_size"], r["encode_mb"],
                          r["render_mb"], r["train_step_mb"], r["train_ratio_vs_first"]] for r in mem["rows"]])
        lines += [""]
    findings = _findings(report)
    if findings:
        lines += ["## Findings (computed from the numbers above)", ""] + [f"* {f}" for f in findings] + [""]
    lines += [f"Total time: {report['seconds']['total']:.0f} s."]
    return "\n".join(lines) + "\n"


def _findings(report: dict[str, Any]) -> list[str]:
    """One-line readings of the measurements: where a training step goes, whether the data path
    keeps up, what each change bought. Every sentence is derived from the report's numbers."""
    out = []
    training = report.get("training", {}).get("models", {})
    for name, row in training.items():
        parts = {k: v for k, v in row["breakdown_fraction"].items()}
        top = max(parts, key=parts.get)
        line = (f"{name}: {row['steps_per_s']:.2f} steps/s at MFU {row['mfu']:.1%}; the largest part of a step is "
                f"{top} ({parts[top]:.0%})")
        if row["data_source"] == "dataset":
            cached, cold, step = row["data_ms"], row["data_ms_cold"], row["step_ms"]
            line += (f"; a batch of seen scenes takes {cached / step:.2f}x a step to load "
                     f"({'one worker keeps up' if cached < step else 'data-bound even with cached frames'}), "
                     f"a batch of new scenes {cold / step:.2f}x "
                     f"({'the first epoch is data-bound' if cold > step else 'never data-bound'})")
        out.append(line + ".")
    for name, row in report.get("changes", {}).get("changes", {}).items():
        out.append(f"{name}: step {row['before_ms']['total']:.0f} -> {row['after_ms']['total']:.0f} ms "
                   f"({row['step_speedup']:.2f}x).")
    scaling = report.get("context_scaling", {}).get("claims")
    if scaling:
        out.append("context scaling: " + ", ".join(f"{k} = {_f(v)}" for k, v in scaling.items()) + ".")
    return out


def check_finite(report: dict[str, Any]) -> list[str]:
    """Paths of non-finite numbers in a report (used by the tests and as a sanity check)."""
    bad: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")
        elif isinstance(value, float) and not math.isfinite(value):
            bad.append(path)

    walk(report, "report")
    return bad
