"""``scenetok eval``: render the targets of an evaluation index and score them.

The protocol (PAPER.md §3): for each scene of the index, encode its context frames, render its
target frames, and compare with the ground truth (PSNR / SSIM / LPIPS per frame; FID over all
frames when Inception weights are given). The same targets are scored for two baselines, "copy
the nearest context view" and "mean context image", so every report shows what the model adds.
Target frames that are also context frames are excluded from scoring by default: copying a
context view would score them perfectly and say nothing about novel-view synthesis.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scenetok.types import SceneBatch, collate_scenes

log = logging.getLogger(__name__)


@dataclass
class EvalReport:
    out_dir: Path
    data: dict[str, Any]
    markdown: str


def scene_seed(scene: str, seed: int = 0) -> int:
    """A stable per-scene seed (deterministic mode: same scene -> same noise)."""
    digest = hashlib.sha256(f"{seed}:{scene}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def evaluation_sample(dataset: Any, scene: str, context: list[int], target: list[int],
                      exclude_context_targets: bool = True) -> dict[str, Any] | None:
    """The sample for one index entry, or ``None`` if no novel target frame is left."""
    if exclude_context_targets:
        target = [t for t in target if t not in set(context)]
    if not target:
        return None
    return dataset.load_selection(scene, list(context), target)


def evaluate_model(model: Any, dataset: Any, entries: Iterable[Any], *, config: Any, out_dir: Path,
                   metadata: dict[str, Any] | None = None, progress: bool = True,
                   allow_random_lpips: bool = False) -> EvalReport:
    """Score ``model`` (a :class:`~scenetok.model.SceneTok`, or ``None`` for baselines only) on
    ``entries`` of an evaluation index and write ``eval.json``, ``eval.md`` and ``eval_grid.png``."""
    from scenetok.eval.baselines import copy_nearest_context, mean_context
    from scenetok.eval.metrics import FIDMetric, LPIPSMetric, MetricSuite
    from scenetok.eval.report import ReportExample, format_markdown, write_eval_report
    from scenetok.interfaces import CorruptSampleError

    lpips = LPIPSMetric(config.lpips_net, backbone_weights=config.lpips_weights or None,
                        allow_random_backbone=allow_random_lpips)
    fid_factory = (lambda: FIDMetric(config.fid_weights)) if config.fid_weights else None
    suite = MetricSuite(lpips=lpips, fid_factory=fid_factory)
    entries = list(entries)
    if config.max_scenes:
        entries = entries[: config.max_scenes]
    examples: list[ReportExample] = []
    skipped: list[str] = []
    excluded_frames = 0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(entries), desc="eval", unit="scene", dynamic_ncols=True)
    for start in range(0, len(entries), config.batch_size):
        samples = []
        for entry in entries[start : start + config.batch_size]:
            try:
                sample = evaluation_sample(dataset, entry.scene, entry.context, entry.target)
            except CorruptSampleError as error:
                log.warning("skipping scene %s: %s", entry.scene, error)
                skipped.append(f"{entry.scene}: {error}")
                continue
            if sample is None:
                skipped.append(f"{entry.scene}: every target frame is a context frame")
                continue
            excluded_frames += len(entry.target) - len(sample["target"]["indices"])
            samples.append(sample)
        # Scenes with different target counts cannot share a batch: group by shape.
        groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for sample in samples:
            key = (len(sample["context"]["indices"]), len(sample["target"]["indices"]))
            groups.setdefault(key, []).append(sample)
        for group in groups.values():
            batch = collate_scenes(group)
            _score_batch(model, batch, suite, config, examples, copy_nearest_context, mean_context, ReportExample)
        if bar is not None:
            bar.update(min(config.batch_size, len(entries) - start))
    if bar is not None:
        bar.close()

    results = suite.compute()
    meta = dict(metadata or {})
    meta.update({"scenes_requested": len(entries), "scenes_skipped": skipped,
                 "target_frames_excluded_as_context": excluded_frames,
                 "deterministic": config.deterministic, "steps": config.steps or None,
                 "strategy": config.strategy, "cfg_scale": config.cfg_scale})
    written = write_eval_report(out_dir, results, metadata=meta, examples=examples)
    import json

    data = json.loads(written["json"].read_text())
    return EvalReport(Path(out_dir), data, format_markdown(data))


def _score_batch(model: Any, batch: SceneBatch, suite: Any, config: Any, examples: list[Any],
                 copy_nearest_context: Any, mean_context: Any, ReportExample: Any) -> None:
    truth = batch.target.images
    predictions: dict[str, torch.Tensor] = {}
    if model is not None:
        predictions["model"] = torch.cat([_render_scene(model, _select(batch, i), config)
                                          for i in range(len(batch.scenes))])
    if config.baselines:
        predictions["nearest_context"] = copy_nearest_context(batch.context, batch.target.cameras)
        predictions["mean_context"] = mean_context(batch.context, batch.target.cameras)
    for method, prediction in predictions.items():
        suite.update(method, batch.scenes, prediction, truth)
    for i, scene in enumerate(batch.scenes):
        if len(examples) >= config.grid_scenes:
            break
        main = predictions.get("model", predictions.get("nearest_context"))
        examples.append(ReportExample(
            scene=scene, context=batch.context.images[i], prediction=main[i], target=truth[i],
            baselines={k: v[i] for k, v in predictions.items() if k != "model"},
        ))


def _select(batch: SceneBatch, i: int) -> SceneBatch:
    """Scene ``i`` of ``batch`` as a batch of one."""
    from scenetok.types import Cameras, Views

    def pick(views: Views) -> Views:
        take = lambda t: None if t is None else t[i : i + 1]  # noqa: E731
        return Views(images=take(views.images),
                     cameras=Cameras(views.cameras.extrinsics[i : i + 1], views.cameras.intrinsics[i : i + 1]),
                     indices=views.indices[i : i + 1], latents=take(views.latents), depths=take(views.depths))

    return SceneBatch(pick(batch.context), pick(batch.target), [batch.scenes[i]])


def _render_scene(model: Any, scene_batch: SceneBatch, config: Any) -> torch.Tensor:
    """Render one scene's targets ``(1, V, 3, H, W)``; in deterministic mode its noise depends on
    the scene key alone (not on batch composition or evaluation order)."""
    device = next(model.parameters()).device
    seed = scene_seed(scene_batch.scenes[0]) if config.deterministic else int(torch.seed())
    return model.reconstruct(scene_batch.to(device), deterministic=config.deterministic,
                             generator=torch.Generator().manual_seed(seed), steps=config.steps or None,
                             strategy=config.strategy, cfg_scale=config.cfg_scale).cpu()


def evaluate_run(run: str | Path, index: str | Path | None = None, out_dir: str | Path | None = None,
                 overrides: Iterable[str] = (), max_scenes: int | None = None, progress: bool = True,
                 allow_random_lpips: bool = False) -> EvalReport:
    """``scenetok eval``: load a run/checkpoint and evaluate it on its recipe's held-out split."""
    from scenetok.data.index import write_evaluation_index
    from scenetok.datasets import build_dataset
    from scenetok.train.loop import load_trained

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, recipe, step = load_trained(run, overrides, device=device)
    config = recipe.sections["eval"]
    if max_scenes is not None:
        import dataclasses

        config = dataclasses.replace(config, max_scenes=max_scenes)
    out = Path(out_dir) if out_dir else Path(run) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    index_path = Path(index) if index else (Path(config.index) if config.index else None)
    if index_path is None:
        dataset_config = recipe["dataset"].config
        index_path = write_evaluation_index(
            build_dataset(recipe, split=config.split), out / "index.json",
            context_views=config.context_views or dataset_config.context_views,
            target_views=config.target_views or dataset_config.target_views, seed=0)
        log.info("wrote a deterministic evaluation index for split %r: %s", config.split, index_path)
    # The dataset resolves the index: unknown scenes are reported and skipped, suffixed keys mapped.
    dataset = build_dataset(recipe, split=config.split, index=str(index_path))
    entries = dataset.evaluation_entries()
    metadata = {"run": str(run), "step": step, "index": str(index_path), "split": config.split,
                "recipe": recipe.source}
    return evaluate_model(model, dataset, entries, config=config, out_dir=out, metadata=metadata,
                          progress=progress, allow_random_lpips=allow_random_lpips)
