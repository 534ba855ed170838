"""``scenetok quickstart``: the whole loop on the embedded procedural rooms, sized for a CPU.

1. train a small SceneTok on procedural ``rooms`` scenes for a fixed number of steps
   (``train.steps``: the same model on any machine, however busy; ``--minutes`` trades that for
   a wall-clock budget),
2. evaluate it on held-out rooms (never seen in training; targets are not context frames)
   against the "nearest context view" and "mean context image" baselines,
3. render a video along a spline through one held-out scene's context cameras,
4. print where everything is, the steps and wall time, and a table model vs baselines.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path

from scenetok.eval.evaluate import evaluate_run
from scenetok.recipe import load_recipe
from scenetok.render import render_run
from scenetok.train.loop import Trainer, fit_recorded

log = logging.getLogger(__name__)

#: Minutes of the total budget kept for evaluation and rendering (measured: ~0.2 min on 2 cores).
EVAL_RESERVE_MINUTES = 1.0


def run_quickstart(out_dir: str | Path = "runs/quickstart", minutes: float | None = None,
                   overrides: Iterable[str] = (), progress: bool = True) -> str:
    """Train, evaluate and render; returns the printed summary (also written to ``summary.md``)."""
    started = time.monotonic()
    out = Path(out_dir)
    overrides = list(overrides)
    recipe = load_recipe("quickstart", overrides)  # the shipped recipe, found by name
    train = recipe.sections["train"]
    if minutes is not None:
        # An explicit wall-clock budget: the step count (and so the result) depends on the machine.
        train_minutes = max(0.5, minutes - EVAL_RESERVE_MINUTES)
        recipe.sections["train"] = train = dataclasses.replace(train, steps=0, minutes=train_minutes)
        budget = f"{train_minutes:.1f} min of training (steps depend on machine load)"
    else:
        budget = f"{train.steps} steps" + (f" (capped at {train.minutes:g} min)" if train.minutes > 0 else "")
    log.info("quickstart: %s -> %s", budget, out)

    trainer = Trainer(recipe, out, progress=progress)
    if trainer.resume():
        log.info("quickstart: continuing the run in %s", out)
    result = fit_recorded(trainer, overrides)  # also records the session in run.json
    trained_at = time.monotonic()

    report = evaluate_run(out, out_dir=out / "eval", progress=progress)
    evaluated_at = time.monotonic()
    render_dir = render_run(out, out_dir=out / "render", progress=False)
    finished = time.monotonic()

    methods = report.data["methods"]
    model_psnr = methods["model"]["mean"]["psnr"]
    nearest_psnr = methods["nearest_context"]["mean"]["psnr"]
    video = next((p for p in (render_dir / "render.mp4", render_dir / "render.gif") if p.exists()), None)
    numbers = {
        "steps": result.step,
        "budget": {"steps": train.steps, "minutes": train.minutes},
        "stop_reason": result.reason,
        "train_minutes": round((trained_at - started) / 60, 2),
        "eval_minutes": round((evaluated_at - trained_at) / 60, 2),
        "render_minutes": round((finished - evaluated_at) / 60, 2),
        "total_minutes": round((finished - started) / 60, 2),
        "psnr": {m: methods[m]["mean"]["psnr"] for m in methods},
        "ssim": {m: methods[m]["mean"]["ssim"] for m in methods},
        "lpips": {m: methods[m]["mean"]["lpips"] for m in methods},
        "psnr_gain_over_nearest_db": round(model_psnr - nearest_psnr, 3),
        "scenes": methods["model"]["mean"].get("num_scenes"),
        "frames": methods["model"]["mean"].get("num_frames"),
    }
    (out / "quickstart.json").write_text(json.dumps(numbers, indent=2))
    summary = "\n".join([
        f"scenetok quickstart: {result.step} training steps (budget: {budget}; stopped: {result.reason}), "
        f"wall time: train {numbers['train_minutes']} min, eval {numbers['eval_minutes']} min, "
        f"total {numbers['total_minutes']} min",
        "",
        report.markdown.strip(),
        "",
        f"model vs nearest context view: {numbers['psnr_gain_over_nearest_db']:+.2f} dB PSNR on held-out rooms",
        f"run directory : {out}",
        f"  recipe      : {out / 'recipe.yaml'}",
        f"  loss curve  : {out / 'loss.png'}",
        f"  metrics     : {out / 'eval' / 'eval.json'}  (grid: {out / 'eval' / 'eval_grid.png'})",
        f"  video       : {video}",
    ])
    (out / "summary.md").write_text(summary + "\n")
    return summary
