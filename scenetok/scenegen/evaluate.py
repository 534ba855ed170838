"""Single-image scene generation scored on held-out scenes (``scenetok eval`` on a SceneGen run).

Per scene of an evaluation index (context frames = the anchors' ground-truth trajectory, target
frames = held-out views, never context frames):

* condition on **one** view, context frame 0, and use every context camera as an anchor; all
  poses relative to that view;
* ``scenegen``: sample tokens, render the target cameras with the frozen renderer;
* ``copy_condition``: every target predicted by the conditioning image (what a model that ignores
  the target pose gets);
* ``scenetok_reconstruction``: the frozen SceneTok encodes *all* context views and renders the same
  targets -- an upper bound for a generator of its token space;

PSNR/SSIM (LPIPS/FID when local weights are configured) per method on the same frames, plus the
per-channel mean/std of generated vs real (reconstruction) tokens.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from scenetok.data.view_sampling import stable_seed
from scenetok.eval.evaluate import EvalReport, evaluation_sample, metric_suite
from scenetok.eval.report import ReportExample, format_markdown, write_eval_report
from scenetok.interfaces import CorruptSampleError
from scenetok.scenegen.model import single_image_setup
from scenetok.types import SceneBatch, collate_scenes

log = logging.getLogger(__name__)

METHODS = ("scenegen", "copy_condition", "scenetok_reconstruction")


def token_statistics(tokens: list[Tensor]) -> dict[str, float]:
    """Mean and std over all scenes, tokens and channels, and the mean per-channel std."""
    stacked = torch.stack([t.float().cpu() for t in tokens])  # (S, N, D)
    return {"mean": float(stacked.mean()), "std": float(stacked.std()),
            "channel_std": float(stacked.flatten(0, 1).std(0).mean())}


@torch.no_grad()
def score_scene(model: Any, batch: SceneBatch, suite: Any, *, seed: int, steps: int | None,
                guidance: float | None, render_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Render one scene (a batch of one) for every method and add it to ``suite``.

    Returns the predictions and both token sets, for the report grid and token statistics.
    """
    device = next(model.generator.parameters()).device
    batch = batch.to(device)
    cond, anchors, targets = single_image_setup(batch, model.scenetok.config.scene_scale)

    generated = model.generate_tokens(cond, anchors.cameras, guidance=guidance, steps=steps,
                                      generator=torch.Generator().manual_seed(seed))
    real = model.scenetok.encode(anchors, sample=False).mode()
    scenetok = model.scenetok
    predictions = {
        "scenegen": scenetok.render(generated, targets, generator=torch.Generator().manual_seed(seed + 1),
                                    **render_kwargs).cpu(),
        "copy_condition": cond.images.expand(-1, targets.shape[1], -1, -1, -1).cpu(),
        "scenetok_reconstruction": scenetok.render(real, targets, generator=torch.Generator().manual_seed(seed + 1),
                                                   **render_kwargs).cpu(),
    }
    truth = batch.target.images.cpu()
    for method, prediction in predictions.items():
        suite.update(method, batch.scenes, prediction, truth)
    return {"predictions": predictions, "generated": generated[0], "real": real[0]}


def evaluate_scenegen(model: Any, dataset: Any, entries: Iterable[Any], *, config: Any, out_dir: str | Path,
                      steps: int | None = None, guidance: float | None = None,
                      render_kwargs: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
                      progress: bool = True, allow_random_lpips: bool = False) -> Any:
    """Score ``model`` (a :class:`~scenetok.scenegen.model.SceneGen`) on ``entries`` of an
    evaluation index of ``dataset``; writes ``eval.json``, ``eval.md`` and ``eval_grid.png`` into
    ``out_dir`` and returns an :class:`~scenetok.eval.evaluate.EvalReport`. ``config`` is the
    recipe's ``eval`` section (metrics, ``max_scenes``, ``grid_scenes``)."""
    suite = metric_suite(config, allow_random_lpips)
    # The effective settings, so the report never says "None" for "the recipe's default".
    steps = model.config.steps if steps is None else steps
    guidance = model.config.guidance if guidance is None else guidance
    entries = list(entries)
    if config.max_scenes:
        entries = entries[: config.max_scenes]
    examples, skipped, generated, real = [], [], [], []
    model.eval()
    for entry in tqdm(entries, desc="eval scenegen", unit="scene", dynamic_ncols=True, disable=not progress):
        try:
            sample = evaluation_sample(dataset, entry.scene, entry.context, entry.target)
        except CorruptSampleError as error:
            skipped.append(f"{entry.scene}: {error}")
            continue
        if sample is None:
            skipped.append(f"{entry.scene}: every target frame is a context frame")
            continue
        batch = collate_scenes([sample])
        out = score_scene(model, batch, suite, seed=stable_seed("scenegen", entry.scene), steps=steps,
                          guidance=guidance, render_kwargs=render_kwargs or {})
        generated.append(out["generated"])
        real.append(out["real"])
        if len(examples) < config.grid_scenes:
            predictions = out["predictions"]
            examples.append(ReportExample(
                scene=entry.scene, context=batch.context.images[0, :1], prediction=predictions["scenegen"][0],
                target=batch.target.images[0],
                baselines={k: v[0] for k, v in predictions.items() if k != "scenegen"}))
    if not generated:
        raise ValueError(f"no scene of the evaluation index could be scored ({len(skipped)} skipped: "
                         + "; ".join(skipped[:3]) + ")")
    meta = dict(metadata or {})
    meta.update({
        "protocol": "single-image scene generation: condition on context frame 0, anchors = all context "
                    "cameras, render the held-out target frames",
        "scenes_requested": len(entries), "scenes_scored": len(generated), "scenes_skipped": skipped,
        "steps": steps, "guidance": guidance,
        "token_statistics": {"generated": token_statistics(generated), "real": token_statistics(real)},
    })
    written = write_eval_report(out_dir, suite.compute(), metadata=meta, examples=examples)
    data = json.loads(written["json"].read_text())
    return EvalReport(Path(out_dir), data, format_markdown(data), scored_scenes=len(generated))
