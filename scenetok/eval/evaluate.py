"""``scenetok eval``: render the targets of an evaluation index and score them.

The protocol (PAPER.md §3): for each scene of the index, encode its context frames, render its
target frames, and compare with the ground truth (PSNR / SSIM / LPIPS per frame; FID over all
frames when Inception weights are given). The same targets are scored for two baselines, "copy
the nearest context view" and "mean context image", so every report shows what the model adds.
Target frames that are also context frames are excluded from scoring by default: copying a
context view would score them perfectly and say nothing about novel-view synthesis. A video target
autoencoder (Video DC-AE, Wan) renders frames in groups of consecutive frames, so with one the
targets are rendered as the index lists them, context frames included, and those frames are left
out of the scores afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from scenetok.data.dataset import build_dataset
from scenetok.data.index import evaluation_view_counts, write_evaluation_index
from scenetok.data.view_sampling import stable_seed
from scenetok.eval.baselines import copy_nearest_context, mean_context
from scenetok.eval.metrics import FIDMetric, LPIPSMetric, MetricSuite
from scenetok.eval.report import ReportExample, format_markdown, write_eval_report
from scenetok.interfaces import CorruptSampleError
from scenetok.model import SceneTok
from scenetok.sections import EvalConfig, RenderConfig
from scenetok.types import SceneBatch, collate_scenes

log = logging.getLogger(__name__)


@dataclass
class EvalReport:
    """What ``scenetok eval`` wrote.

    Attributes:
        out_dir: folder of ``eval.json``, ``eval.md`` and the grid.
        data: the ``eval.json`` content.
        markdown: the ``eval.md`` content.
        scored_scenes: scenes whose targets were scored (0: the evaluation measured nothing).
    """

    out_dir: Path
    data: dict[str, Any]
    markdown: str
    scored_scenes: int = 0

    def why_nothing_scored(self) -> str:
        """The reasons scenes were skipped, grouped, for the error of an empty evaluation."""
        meta = self.data.get("metadata", {})
        reasons = Counter(str(line).split(": ", 1)[-1] for line in meta.get("scenes_skipped", []))
        parts = []
        missing = meta.get("index_scenes_not_in_dataset", 0)
        if missing:
            parts.append(f"{missing} index entries name scenes that are not in the dataset's "
                         f"{meta.get('split', '?')!r} split (is it the index of another dataset or split?)")
        for reason, count in reasons.most_common():
            parts.append(f"{count} scenes: {reason}")
        if reasons.get("every target frame is a context frame"):
            parts.append("write the index with evaluation view counts (eval.context_views, eval.target_views; "
                         "`scenetok data index` uses them) so targets fall between context frames")
        if not parts:
            parts.append(f"the index {meta.get('index', '')} has no entries")
        return "; ".join(parts) + "."


def evaluation_sample(dataset: Any, scene: str, context: list[int], target: list[int],
                      exclude_context_targets: bool = True) -> dict[str, Any] | None:
    """The sample for one index entry, or ``None`` if no novel target frame is left."""
    if exclude_context_targets:
        context_frames = set(context)
        target = [t for t in target if t not in context_frames]
    if not target:
        return None
    return dataset.load_selection(scene, list(context), target)


def metric_suite(config: EvalConfig, allow_random_lpips: bool = False) -> MetricSuite:
    """The metrics the recipe's ``eval`` section asks for: PSNR/SSIM always, LPIPS with its
    backbone weights (else reported unavailable), FID when Inception weights are given."""
    lpips = LPIPSMetric(config.lpips_net, backbone_weights=config.lpips_weights or None,
                        allow_random_backbone=allow_random_lpips)
    fid_factory = (lambda: FIDMetric(config.fid_weights)) if config.fid_weights else None
    return MetricSuite(lpips=lpips, fid_factory=fid_factory)


def evaluate_model(model: SceneTok | None, dataset: Any, entries: Iterable[Any], *, config: EvalConfig,
                   out_dir: Path, render: RenderConfig | None = None, metadata: dict[str, Any] | None = None,
                   progress: bool = True, allow_random_lpips: bool = False) -> EvalReport:
    """Score ``model`` (or ``None`` for baselines only) on ``entries`` of an evaluation index and
    write ``eval.json``, ``eval.md`` and ``eval_grid.png``. Scenes are rendered with ``render``
    (default: the model's recipe's ``render`` section).

    Scenes are rendered one at a time: in deterministic mode each scene's noise depends on its key
    alone, and scenes of an index may differ in their numbers of views."""
    if render is None:
        render = model.render_config if model is not None else RenderConfig()
    suite = metric_suite(config, allow_random_lpips)
    entries = list(entries)
    if config.max_scenes:
        entries = entries[: config.max_scenes]
    examples: list[ReportExample] = []
    skipped: list[str] = []
    scored = 0
    excluded_frames = 0
    # Removing context frames from a video autoencoder's targets would break its frame groups.
    render_context_frames = model is not None and model.target_spec.temporal_factor > 1
    for entry in tqdm(entries, desc="eval", unit="scene", dynamic_ncols=True, disable=not progress):
        try:
            sample = evaluation_sample(dataset, entry.scene, entry.context, entry.target,
                                       exclude_context_targets=not render_context_frames)
        except CorruptSampleError as error:
            log.warning("skipping scene %s: %s", entry.scene, error)
            skipped.append(f"{entry.scene}: {error}")
            continue
        novel = None
        if sample is not None and render_context_frames:
            context = set(entry.context)
            novel = torch.tensor([int(i) not in context for i in sample["target"]["indices"]])
            sample = sample if novel.any() else None
        if sample is None:
            skipped.append(f"{entry.scene}: every target frame is a context frame")
            continue
        scored_frames = len(sample["target"]["indices"]) if novel is None else int(novel.sum())
        excluded_frames += len(entry.target) - scored_frames
        _score_scene(model, collate_scenes([sample]), suite, config, render, examples, novel)
        scored += 1

    meta = dict(metadata or {})
    meta.update({"scenes_requested": len(entries), "scenes_scored": scored, "scenes_skipped": skipped,
                 "target_frames_excluded_as_context": excluded_frames,
                 "render": dataclasses.asdict(render)})
    written = write_eval_report(out_dir, suite.compute(), metadata=meta, examples=examples)
    data = json.loads(written["json"].read_text())
    if not scored:
        log.error("no frame was scored: %d of %d scenes skipped", len(skipped), len(entries))
    return EvalReport(Path(out_dir), data, format_markdown(data), scored_scenes=scored)


def _score_scene(model: SceneTok | None, batch: SceneBatch, suite: MetricSuite, config: EvalConfig,
                 render: RenderConfig, examples: list[ReportExample], scored: torch.Tensor | None = None) -> None:
    """Render one scene (a batch of one) and add it, and its baselines, to ``suite``; ``scored``
    (``(V,)`` bool) selects the target frames that count (default: all)."""
    truth = batch.target.images
    predictions: dict[str, torch.Tensor] = {}
    if model is not None:
        device = next(model.parameters()).device
        # Deterministic mode: the noise depends on the scene key alone.
        seed = stable_seed("render", batch.scenes[0]) if render.deterministic else int(torch.seed())
        predictions["model"] = model.reconstruct(
            batch.to(device), deterministic=render.deterministic, generator=torch.Generator().manual_seed(seed),
            settings=render).cpu()
    if config.baselines:
        predictions["nearest_context"] = copy_nearest_context(batch.context, batch.target.cameras)
        predictions["mean_context"] = mean_context(batch.context, batch.target.cameras)
    if scored is not None:
        truth = truth[:, scored]
        predictions = {method: prediction[:, scored] for method, prediction in predictions.items()}
    for method, prediction in predictions.items():
        suite.update(method, batch.scenes, prediction, truth)
    if len(examples) < config.grid_scenes:
        main = predictions.get("model", predictions.get("nearest_context"))
        examples.append(ReportExample(
            scene=batch.scenes[0], context=batch.context.images[0], prediction=main[0], target=truth[0],
            baselines={k: v[0] for k, v in predictions.items() if k != "model"},
        ))


def evaluation_setup(recipe: Any, run: str | Path, index: str | Path | None, out_dir: str | Path | None,
                     max_scenes: int | None) -> tuple[EvalConfig, Path, Path, Any]:
    """What every ``scenetok eval`` (SceneTok or SceneGen run) starts from: the recipe's ``eval``
    section (with ``max_scenes``), the output folder, the evaluation index (``index``, else
    ``eval.index``, else a deterministic one of the held-out split written into the output folder
    with the ``eval.*_views`` counts) and the dataset reading it."""
    config = recipe.sections["eval"]
    if max_scenes is not None:
        config = dataclasses.replace(config, max_scenes=max_scenes)
    out = Path(out_dir) if out_dir else Path(run) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    index_path = Path(index) if index else (Path(config.index) if config.index else None)
    if index_path is None:
        context, target, explanation = evaluation_view_counts(config, recipe["dataset"].config)
        index_path = write_evaluation_index(
            build_dataset(recipe, split=config.split), out / "index.json",
            context_views=context, target_views=target, seed=0)
        log.info("wrote a deterministic evaluation index for split %r (%s): %s", config.split, explanation,
                 index_path)
    # The dataset resolves the index: unknown scenes are reported and skipped, suffixed keys mapped.
    return config, out, index_path, build_dataset(recipe, split=config.split, index=str(index_path))


def evaluate_run(run: str | Path, index: str | Path | None = None, out_dir: str | Path | None = None,
                 overrides: Iterable[str] = (), max_scenes: int | None = None, progress: bool = True,
                 allow_random_lpips: bool = False) -> EvalReport:
    """``scenetok eval``: load a run/checkpoint and evaluate it on its recipe's held-out split."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SceneTok.from_pretrained(run, overrides, device=device)
    recipe, step = model.recipe, model.trained_step
    config, out, index_path, dataset = evaluation_setup(recipe, run, index, out_dir, max_scenes)
    entries = dataset.evaluation_entries()
    not_in_dataset = sum(1 for record in dataset.skipped if record["reason"].startswith("in the evaluation index"))
    metadata = {"run": str(run), "step": step, "index": str(index_path), "split": config.split,
                "recipe": recipe.source, "index_scenes_not_in_dataset": not_in_dataset}
    return evaluate_model(model, dataset, entries, config=config, out_dir=out, metadata=metadata,
                          progress=progress, allow_random_lpips=allow_random_lpips)
