"""The one training loop (no Lightning): ``scenetok train RECIPE --run DIR``.

* AdamW, warm-up + decay, gradient clipping, bf16 autocast where supported, accumulation, EMA,
  compressor freeze after N steps, KL weight schedule.
* A step whose gradients are NaN/Inf (or whose norm exceeds ``train.skip_grad_norm``) is skipped
  and counted; ``train.max_consecutive_skips`` in a row abort the run with a clear message, and
  the last good checkpoint stays the newest one.
* Exact resume: everything random in a step is drawn from generators seeded by
  ``(seed, step, rank)`` and the data order is a function of the step, so re-running the same
  command on the same run directory continues bit-for-bit where the last checkpoint left off.
* SIGINT/SIGTERM write a checkpoint before exiting.
* ``torchrun --nproc_per_node N`` runs DistributedDataParallel (gloo on CPU, nccl on GPU), with
  per-rank data and rank-0-only logging and checkpointing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scenetok.checkpoint import CheckpointError, capture_rng_state, list_checkpoints, load_checkpoint, restore_rng_state, save_checkpoint
from scenetok.data.cache import CachedLatentDataset
from scenetok.data.dataset import build_dataset
from scenetok.eval.report import write_grid
from scenetok.hookspecs import HookCallError, call_hook
from scenetok.model import SceneTok
from scenetok.recipe import Recipe, RecipeError, load_recipe, read_recipe_file, upgrade_stored_recipe
from scenetok.render_io import loss_curve_png
from scenetok.run_record import end_session, start_session
from scenetok.scenegen.runs import build_scenegen
from scenetok.sections import TrainConfig
from scenetok.train.ema import EMA, EMAConfig
from scenetok.train.schedules import KLWeightScheduleConfig, LRScheduleConfig, build_lr_scheduler, kl_weight
from scenetok.types import SceneBatch, collate_scenes

log = logging.getLogger(__name__)

#: Keys of ``train`` that may change between the original command and a resume.
RESUMABLE_CHANGES = {"steps", "minutes", "log_every", "checkpoint_every", "keep_checkpoints",
                     "validate_every", "num_workers", "loggers", "adamw_impl"}


class TrainingAborted(RuntimeError):
    """Too many consecutive skipped steps (NaN/Inf or huge gradients)."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    reason: str  # "finished", "budget", "interrupted", "aborted", "data_error", "hook_failed"
    metrics: dict[str, float] = field(default_factory=dict)
    signal: str | None = None  # "SIGINT" / "SIGTERM" when a signal stopped the run


# ----------------------------------------------------------------------------------------------
# Distributed helpers
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistributedContext:
    """Join the process group if launched by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedContext()
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    context = DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank)
    log.info("distributed: rank %d of %d (%s)", context.rank, context.world_size, backend)
    return context


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


class StepBatchSampler:
    """Yields the ``(epoch, index)`` keys of each step's micro-batches, as a pure function of the step.

    Each epoch is a seeded permutation of the dataset; global position ``p`` of the stream is
    shared by all ranks and each rank takes its own slice, so resuming at step ``s`` only needs
    ``s`` (no loader state).
    """

    def __init__(self, size: int, batch_size: int, accumulation: int, context: DistributedContext,
                 seed: int, start_step: int, end_step: int | None):
        if size <= 0:
            raise ValueError("the training dataset is empty")
        self.size, self.batch, self.accumulation = size, batch_size, accumulation
        self.context, self.seed = context, seed
        self.start_step, self.end_step = start_step, end_step
        self._permutations: dict[int, torch.Tensor] = {}

    def _index(self, position: int) -> tuple[int, int]:
        epoch, offset = divmod(position, self.size)
        if epoch not in self._permutations:
            self._permutations = {epoch: torch.randperm(self.size, generator=torch.Generator().manual_seed(
                self.seed * 1_000_003 + epoch))}
        return epoch, int(self._permutations[epoch][offset])

    def batch_indices(self, step: int, micro: int) -> list[tuple[int, int]]:
        per_step = self.batch * self.accumulation * self.context.world_size
        start = step * per_step + (micro * self.context.world_size + self.context.rank) * self.batch
        return [self._index(p) for p in range(start, start + self.batch)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while self.end_step is None or step < self.end_step:
            for micro in range(self.accumulation):
                yield self.batch_indices(step, micro)
            step += 1


class NoUsableSamplesError(RuntimeError):
    """Every sample tried for one batch position was unusable (see the skip report)."""


class EpochIndexed(torch.utils.data.Dataset):
    """Lets a batch sampler address samples as ``(epoch, index)``: the dataset's view selection
    depends on ``(seed, epoch, index)`` (see ``SceneDataset.set_epoch``), so every epoch sees new
    views of each scene and the sample of a step never depends on loader state.

    Corrupt samples are skipped (and reported) by the dataset itself, which tries the following
    samples; when that fails too (a whole stretch of bad scenes), replacements are drawn from a
    permutation seeded by ``(epoch, index)``, so a step's data stays a pure function of the step
    and a bad stretch never wedges the run at one step. Only when :attr:`replacement_attempts`
    replacements fail as well does :class:`NoUsableSamplesError` stop the run (with the reasons).
    """

    #: Replacement draws per batch position after the dataset's own skipping gave up.
    replacement_attempts = 8

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def _load(self, epoch: int, index: int) -> Any:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        try:
            return self._load(epoch, index)
        except Exception as error:  # noqa: BLE001 - a bad stretch of data: draw replacements
            errors = [f"{type(error).__name__}: {error}"]
        size = len(self.dataset)
        order = torch.randperm(size, generator=torch.Generator().manual_seed(
            (epoch * 1_000_003 + index) % (2**63)))
        for replacement in order[: self.replacement_attempts].tolist():
            try:
                sample = self._load(epoch, int(replacement))
            except Exception as error:  # noqa: BLE001
                errors.append(f"{type(error).__name__}: {error}")
                continue
            log.warning("sample %d (epoch %d) and the following ones are unusable; using sample %d instead",
                        index, epoch, replacement)
            return sample
        raise NoUsableSamplesError(
            f"no usable training sample: {len(errors)} attempts from sample {index} (epoch {epoch}) failed; "
            f"check the dataset (dataset.report_path lists every skipped scene). Last: {errors[-1][:500]}")


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------


def resolve_precision(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or ``None`` for fp32."""
    if config.precision == "fp32":
        return None
    if config.precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return None  # CPU "auto": fp32 (bf16 autocast on CPU is opt-in via precision: bf16)


def build_model(recipe: Recipe, device: torch.device) -> nn.Module:
    """The model a recipe trains: a :class:`~scenetok.model.SceneTok`, or for a SceneGen recipe (one
    with a ``scene_generator``) a :class:`~scenetok.scenegen.model.SceneGen` on its frozen SceneTok.
    Both expose ``networks()`` (what checkpoints and EMA store), ``forward(batch, kl_weight,
    generator)`` returning ``{"loss", "mse", "kl"}``, and ``reconstruct`` for validation grids."""
    if recipe.component("scene_generator") is not None:
        return build_scenegen(recipe, device=device)
    return SceneTok(recipe).to(device)


def adamw_implementation(name: str, device: torch.device) -> dict[str, bool]:
    """AdamW keyword arguments selecting ``train.adamw_impl``. ``auto`` takes the fused kernel on
    CPU and CUDA: one kernel over all parameters instead of a Python loop of small ops, which
    measured ~3x faster optimizer steps on CPU (``scenetok bench``, "AdamW implementation")."""
    if name == "auto":
        name = "fused" if device.type in ("cpu", "cuda") else "forloop"
    return {"fused": {"fused": True}, "foreach": {"foreach": True}, "forloop": {"foreach": False}}[name]


class Trainer:
    """Runs :class:`~scenetok.model.SceneTok` (or SceneGen) training for one recipe in one run directory."""

    def __init__(self, recipe: Recipe, run_dir: Path, progress: bool = True,
                 context: DistributedContext | None = None):

        self.recipe = recipe
        self.config: TrainConfig = recipe.sections["train"]
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.context = context or DistributedContext()
        self.device = torch.device(f"cuda:{self.context.local_rank}" if torch.cuda.is_available() else "cpu")
        self.autocast_dtype = resolve_precision(self.config, self.device)

        torch.manual_seed(recipe.seed)
        self.model = build_model(recipe, self.device)
        self.networks = self.model.networks()
        if self.config.compile:
            # In-place compilation keeps parameter names (and so checkpoints) unchanged.
            for network in self.networks.values():
                network.compile()
        self.dataset = EpochIndexed(self._training_data())
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=self.config.lr, betas=tuple(self.config.betas),
                                           weight_decay=self.config.weight_decay,
                                           **adamw_implementation(self.config.adamw_impl, self.device))
        self.scheduler = build_lr_scheduler(self.optimizer, LRScheduleConfig(
            warmup_steps=self.config.warmup_steps, warmup_start_factor=self.config.warmup_factor,
            decay=self.config.decay, milestones=list(self.config.milestones), gamma=self.config.gamma,
            decay_steps=max(1, self.config.steps - self.config.warmup_steps), min_factor=self.config.min_lr_factor,
        ))
        self.ema = EMA(self.networks, EMAConfig(decay=self.config.ema_decay, warmup=True)) \
            if self.config.ema_decay > 0 else None
        self.step = 0
        self.skipped_total = 0
        self.consecutive_skips = 0
        self._stop_signal: str | None = None
        self._last_saved_step: int | None = None
        self._validation_data: Any = None
        #: ``(step, PNG path)`` of the newest validation grid (read by logger hooks), or ``None``.
        self.last_validation: tuple[int, Path] | None = None
        self.ddp_model: nn.Module = self.model
        if self.context.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )

    def _training_data(self) -> Any:
        if not self.config.latent_cache:
            return build_dataset(self.recipe, split="train")
        if self.recipe.component("scene_generator") is not None:
            raise RecipeError(["train.latent_cache: not supported for SceneGen recipes (token targets are "
                               "computed on the fly by the frozen SceneTok)"])
        target = self.recipe.component("target_image_compressor")
        log.info("training on cached latents from %s", self.config.latent_cache)
        return CachedLatentDataset(self.config.latent_cache, expect_compressor=self.recipe["image_compressor"].name,
                                   expect_target_compressor=None if target is None else target.name)

    # -- checkpoints ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:

        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng_state(),
            "step": self.step,
            "skipped_total": self.skipped_total,
            "compressor_frozen": self.model.compressor_frozen,
            "ema_num_updates": self.ema.num_updates if self.ema else 0,
        }

    def save(self) -> Path | None:
        if not self.context.is_main:
            return None

        tensors = {"model": self.networks.state_dict()}
        if self.ema is not None:
            tensors["ema"] = self.ema.state_dict()
        path = save_checkpoint(self.run_dir, self.step, tensors, self.state(), self.recipe.resolved(),
                               keep_last=self.config.keep_checkpoints)
        self._last_saved_step = self.step
        log.info("checkpoint: %s", path)
        return path

    def resume(self) -> bool:
        """Load the newest valid checkpoint of the run, if any. Returns whether it resumed."""

        if not list_checkpoints(self.run_dir):
            return False
        checkpoint = load_checkpoint(self.run_dir, map_location=self.device)
        try:
            self.networks.load_state_dict(checkpoint.tensors["model"])
            if self.ema is not None and "ema" in checkpoint.tensors:
                self.ema.load_state_dict(checkpoint.tensors["ema"],
                                         num_updates=checkpoint.state.get("ema_num_updates"))
            if checkpoint.state.get("compressor_frozen"):
                self.model.freeze_compressor()
            self.optimizer.load_state_dict(checkpoint.state["optimizer"])
            self.scheduler.load_state_dict(checkpoint.state["scheduler"])
            restore_rng_state(checkpoint.state["rng"])
            self.step = int(checkpoint.state["step"])
            self.skipped_total = int(checkpoint.state.get("skipped_total", 0))
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, IndexError) as error:
            # the files are intact (hashes match) but their content does not fit this run
            raise CheckpointError(f"{checkpoint.path}: its state does not fit this run "
                                  f"({type(error).__name__}: {str(error)[:300]})") from error
        if self.step < 0:
            raise CheckpointError(f"{checkpoint.path}: step {self.step} < 0")
        self._last_saved_step = self.step
        log.info("resumed from %s at step %d", checkpoint.path, self.step)
        return True

    # -- one step ------------------------------------------------------------------------------

    def _generator(self, micro: int) -> torch.Generator:
        seed = (self.recipe.seed * 1_000_003 + self.step) * 64 + micro * 8 + self.context.rank
        return torch.Generator(device="cpu").manual_seed(seed)

    def kl_weight(self) -> float:
        w0, w1 = self.config.kl_weights
        s0, s1 = self.config.kl_schedule
        return kl_weight(self.step, KLWeightScheduleConfig(w0, w1, s0, max(s0, s1)))

    def train_step(self, micro_batches: list[SceneBatch]) -> dict[str, float]:
        """One optimiser step over ``grad_accumulation`` micro-batches."""
        cfg = self.config
        if cfg.freeze_compressor_after and self.step >= cfg.freeze_compressor_after and not self.model.compressor_frozen:
            log.info("step %d: freezing the token compressor", self.step)
            self.model.freeze_compressor()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        totals = {"loss": 0.0, "mse": 0.0, "kl": 0.0}
        kl_weight = self.kl_weight()
        for micro, batch in enumerate(micro_batches):
            batch = batch.to(self.device)
            sync = contextlib.nullcontext()
            if self.context.enabled and micro < len(micro_batches) - 1:
                sync = self.ddp_model.no_sync()  # type: ignore[operator]
            autocast = torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype \
                else contextlib.nullcontext()
            with sync, autocast:
                out = self.ddp_model(batch, kl_weight=kl_weight, generator=self._generator(micro))
            with sync:
                (out["loss"] / len(micro_batches)).backward()
            for key in totals:
                totals[key] += float(out[key].detach()) / len(micro_batches)

        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if params else 0.0
        bad = not math.isfinite(grad_norm) or not math.isfinite(totals["loss"])
        huge = cfg.skip_grad_norm > 0 and grad_norm > cfg.skip_grad_norm
        skipped = bad or huge
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_total += 1
            self.consecutive_skips += 1
            scenes = [scene for batch in micro_batches for scene in batch.scenes]
            log.warning("step %d skipped (%s, grad norm %.3g; scenes: %s); %d in a row", self.step,
                        "non-finite" if bad else "huge gradient", grad_norm, ", ".join(scenes) or "?",
                        self.consecutive_skips)
            if self.consecutive_skips >= cfg.max_consecutive_skips:
                raise TrainingAborted(
                    f"{self.consecutive_skips} consecutive steps skipped (last: {'NaN/Inf' if bad else 'huge'} "
                    f"gradients, norm {grad_norm:.3g}) at step {self.step}. The last good checkpoint in "
                    f"{self.run_dir / 'checkpoints'} is kept. Lower train.lr, raise train.grad_clip or check the data."
                )
        else:
            self.optimizer.step()
            self.consecutive_skips = 0
            if self.ema is not None:
                self.ema.update(self.networks)
        with warnings.catch_warnings():
            # The schedule follows the step count, skipped steps included, so that a resumed run
            # lands on the same LR. PyTorch warns when the very first step is a skipped one.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            self.scheduler.step()
        self.step += 1
        return {**totals, "grad_norm": grad_norm, "lr": self.optimizer.param_groups[0]["lr"],
                "skipped": float(skipped), "kl_weight": kl_weight}

    # -- the loop ------------------------------------------------------------------------------

    def _loader(self, end_step: int | None) -> Iterable[SceneBatch]:
        sampler = StepBatchSampler(len(self.dataset), self.config.batch_size, self.config.grad_accumulation,
                                   self.context, self.recipe.seed, self.step, end_step)
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler, collate_fn=collate_scenes,
                                           num_workers=self.config.num_workers,
                                           persistent_workers=self.config.num_workers > 0)

    def _install_signal_handlers(self) -> dict[int, Any]:
        previous = {}

        def handler(signum: int, frame: Any) -> None:
            self._stop_signal = signal.Signals(signum).name
            log.warning("%s received: finishing this step and writing a checkpoint", self._stop_signal)

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not in the main thread
                previous[sig] = signal.signal(sig, handler)
        return previous

    def fit(self) -> TrainResult:
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = self.run_dir / "metrics.jsonl"
        if self.context.is_main:
            self.recipe.dump(self.run_dir / "recipe.yaml")
            truncate_metrics(metrics_path, self.step)
        end_step = cfg.steps if cfg.steps > 0 else None
        deadline = time.monotonic() + cfg.minutes * 60 if cfg.minutes > 0 else None
        previous_handlers = self._install_signal_handlers()
        reason = "finished"
        last: dict[str, float] = {}
        bar = None
        if self.progress and self.context.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=end_step, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        started, started_step = time.monotonic(), self.step
        try:
            call_hook("scenetok_on_train_start", trainer=self)
            micro_batches: list[SceneBatch] = []
            for batch in self._loader(end_step):
                micro_batches.append(batch)
                if len(micro_batches) < cfg.grad_accumulation:
                    continue
                last = self.train_step(micro_batches)
                micro_batches = []
                elapsed = time.monotonic() - started
                last["steps_per_s"] = (self.step - started_step) / max(elapsed, 1e-9)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{last['lr']:.1e}")
                if self.context.is_main and (self.step % cfg.log_every == 0 or self.step == 1):
                    with metrics_path.open("a") as f:
                        f.write(json.dumps({"step": self.step, "time": round(elapsed, 3), **last}) + "\n")
                    # Also with a progress bar: a redirected log of a long run needs these lines.
                    log.info("%s", progress_line(self.step, end_step, last, elapsed, deadline))
                if cfg.validate_every and self.step % cfg.validate_every == 0 and self.context.is_main:
                    self.validate()
                # After the step's validation, so loggers see its grid (trainer.last_validation).
                call_hook("scenetok_on_train_step_end", trainer=self, step=self.step, metrics=last)
                if self._stop_signal:
                    reason = "interrupted"
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    reason = "budget"
                    break
                if self.step % cfg.checkpoint_every == 0 and self.consecutive_skips == 0:
                    self.save()  # never checkpoint inside a streak of skipped steps
        except TrainingAborted as error:
            log.error("%s", error)
            reason = "aborted"
        except NoUsableSamplesError as error:
            log.error("%s", error)
            reason = "data_error"  # the steps so far are kept (checkpoint below)
        except HookCallError as error:
            log.error("%s; writing a checkpoint and stopping", error)
            reason = "hook_failed"
        finally:
            if bar is not None:
                bar.close()
            for sig, old in previous_handlers.items():
                signal.signal(sig, old)
        if reason != "aborted" and self._last_saved_step != self.step:
            self.save()
        if self.context.is_main:
            self._write_loss_curve(metrics_path)  # before the hook, so loggers can attach it
        try:
            call_hook("scenetok_on_train_end", trainer=self)
        except HookCallError as error:
            log.error("%s", error)
            reason = "hook_failed"
        return TrainResult(self.run_dir, self.step, reason, last, signal=self._stop_signal)

    def _write_loss_curve(self, metrics_path: Path) -> None:
        if not metrics_path.exists():
            return
        try:
            loss_curve_png(metrics_path, self.run_dir / "loss.png")
        except Exception as error:  # noqa: BLE001 - a plot must never fail a finished run
            log.warning("could not draw the loss curve: %s", error)

    @torch.no_grad()
    def validate(self, scenes: int = 2) -> Path | None:
        """Render a few validation scenes into ``validation/step_XXXXXX.png``."""

        if self._validation_data is None:
            self._validation_data = build_dataset(self.recipe, split="validation")
        dataset = self._validation_data
        batch = collate_scenes([dataset[i] for i in range(min(scenes, len(dataset)))]).to(self.device)
        self.model.eval()
        prediction = self.model.reconstruct(batch, generator=torch.Generator().manual_seed(0))
        out = self.run_dir / "validation" / f"step_{self.step:06d}.png"
        write_grid(out, batch, {"model": prediction.cpu()})
        self.last_validation = (self.step, out)
        return out


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_line(step: int, end_step: int | None, metrics: dict[str, float], elapsed: float,
                  deadline: float | None, now: float | None = None) -> str:
    """One periodic training log line: step, loss terms, lr, speed and the time left (from
    ``train.steps``, or from the ``train.minutes`` budget, whichever ends first)."""
    speed = metrics.get("steps_per_s", 0.0)
    remaining = []
    if end_step is not None and speed > 0:
        remaining.append((end_step - step) / speed)
    if deadline is not None:
        remaining.append(deadline - (time.monotonic() if now is None else now))
    eta = _duration(min(remaining)) if remaining else "?"
    total = f"/{end_step}" if end_step is not None else ""
    return (f"step {step}{total}  loss {metrics['loss']:.4f} (mse {metrics['mse']:.4f}, kl {metrics['kl']:.3g})  "
            f"lr {metrics['lr']:.2e}  {speed:.2f} steps/s  elapsed {_duration(elapsed)}  ETA {eta}")


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines of ``metrics.jsonl`` logged after ``step`` (the checkpoint a run resumes
    from), so a resumed run does not log the same steps twice; rewritten atomically."""
    if not path.exists():
        return
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            logged = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            dropped += 1  # a line torn by a kill in the middle of a write
            continue
        if logged <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)
        log.info("%s: dropped %d lines after step %d (resumed there)", path, dropped, step)


def _check_resume_compatible(stored: dict[str, Any], current: dict[str, Any], run_dir: Path) -> None:
    """Refuse to resume a run with a recipe that changes anything but run-length settings."""
    differences = []
    for section in sorted(set(stored) | set(current)):
        if section == "provenance":
            continue
        old, new = stored.get(section), current.get(section)
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key) and not (section == "train" and key in RESUMABLE_CHANGES):
                    differences.append(f"{section}.{key}: {old.get(key)!r} -> {new.get(key)!r}")
        elif old != new:
            differences.append(f"{section}: {old!r} -> {new!r}")
    if differences:
        raise RecipeError([f"{run_dir} was trained with a different recipe; resuming would mix two "
                           f"experiments. Differences: " + "; ".join(differences)
                           + ". Use a new --run directory."])


def fit_recorded(trainer: Trainer, overrides: Iterable[str] = ()) -> TrainResult:
    """``trainer.fit()`` with the session recorded in ``RUN/run.json`` (command line, overrides,
    versions, git commit; how it ended, including a crash)."""
    main = trainer.context.is_main
    if main:
        start_session(trainer.run_dir, trainer.recipe.source, list(overrides), trainer.step)
    status = "failed"
    try:
        result = trainer.fit()
        status = result.reason
        return result
    except BaseException as error:
        status = f"failed: {type(error).__name__}: {error}"
        raise
    finally:
        if main:
            end_session(trainer.run_dir, status, trainer.step)


def train_recipe(recipe_path: str | Path, overrides: Iterable[str] = (), run_dir: str | Path = "runs/default",
                 progress: bool = True) -> TrainResult:
    """Train (or resume) ``recipe_path`` with ``overrides`` in ``run_dir``."""
    context = init_distributed()
    run_dir = Path(run_dir)
    overrides = list(overrides)
    recipe = load_recipe(recipe_path, overrides)
    stored_path = run_dir / "recipe.yaml"
    if stored_path.exists():
        stored = read_recipe_file(stored_path)
        _check_resume_compatible(upgrade_stored_recipe(stored), recipe.resolved(), run_dir)
    trainer = Trainer(recipe, run_dir, progress=progress, context=context)
    trainer.resume()
    try:
        return fit_recorded(trainer, overrides)
    finally:
        if context.enabled:
            import torch.distributed as dist

            dist.destroy_process_group()
