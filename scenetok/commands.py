"""Sub-commands for the main jobs: train, eval, render, quickstart, data.

Handlers import their (torch-heavy) modules lazily so that ``scenetok --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_train(args: argparse.Namespace) -> int:
    from scenetok.train.loop import train_recipe

    result = train_recipe(args.recipe, args.overrides, run_dir=args.run, progress=not args.no_progress)
    print(f"run directory: {result.run_dir}  (step {result.step}, stopped: {result.reason})")
    return 0 if result.reason in ("finished", "budget", "interrupted") else 1


def cmd_eval(args: argparse.Namespace) -> int:
    from scenetok.eval.evaluate import evaluate_run

    report = evaluate_run(args.run, index=args.index, out_dir=args.out, overrides=args.overrides,
                          max_scenes=args.max_scenes, progress=not args.no_progress)
    print(report.markdown)
    print(f"\nwrote {report.out_dir}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from scenetok.render import render_run

    out = render_run(args.run, out_dir=args.out, scene=args.scene, trajectory=args.trajectory,
                     frames=args.frames, overrides=args.overrides, progress=not args.no_progress,
                     deterministic=not args.stochastic)
    print(f"wrote {out}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from scenetok.quickstart import run_quickstart

    summary = run_quickstart(out_dir=args.out, minutes=args.minutes, overrides=args.overrides,
                             progress=not args.no_progress)
    print(summary)
    return 0


def cmd_data_preview(args: argparse.Namespace) -> int:
    from scenetok.data.preview import write_preview
    from scenetok.datasets import build_dataset
    from scenetok.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    dataset = build_dataset(recipe, split=args.split)
    path = write_preview(dataset, args.out, index=args.index)
    print(f"wrote {path}")
    return 0


def cmd_data_index(args: argparse.Namespace) -> int:
    from scenetok.data.index import write_evaluation_index
    from scenetok.datasets import build_dataset
    from scenetok.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    dataset = build_dataset(recipe, split=args.split)
    config = recipe["dataset"].config
    path = write_evaluation_index(dataset, args.out, context_views=config.context_views,
                                  target_views=config.target_views, seed=args.seed)
    print(f"wrote {path}")
    return 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    from scenetok.data.convert import convert_captures

    out = convert_captures(args.source, args.out, cameras=args.cameras, stage=args.stage)
    print(f"wrote {out}")
    return 0


def cmd_data_cache(args: argparse.Namespace) -> int:
    from scenetok.data.cache import cache_latents
    from scenetok.datasets import build_dataset
    from scenetok.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.component("target_image_compressor") is not None:
        print("scenetok: error: the cache holds one compressor's latents; this recipe has a separate "
              "target_image_compressor", file=sys.stderr)
        return 2
    dataset = build_dataset(recipe, split=args.split)
    spec = recipe["image_compressor"]
    compressor = spec.cls(spec.config)
    manifest = cache_latents(dataset, compressor, args.out, epochs=args.epochs, seed=recipe.seed,
                             sample=recipe.sections["model"].context_latents == "sample",
                             compressor_name=spec.name, progress=not args.no_progress)
    print(f"wrote {manifest}; train on it with train.latent_cache={args.out}")
    return 0


def _recipe(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted recipe overrides")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a SceneTok from a recipe (resumes if --run exists)",
                       description="Train with the core loop: AdamW, warm-up + decay, clipping, bf16 "
                       "autocast where supported, EMA, NaN/huge-gradient skipping, atomic checkpoints. "
                       "Re-running the same command on the same --run resumes exactly. Works under "
                       "`torchrun --nproc_per_node N` (DDP).")
    _recipe(p)
    p.add_argument("--run", "--run-dir", dest="run", type=Path, required=True,
                   help="run directory (created or resumed); under torchrun spell it --run-dir, because "
                   "torchrun's own parser takes --run for its --run-path")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="PSNR/SSIM/LPIPS of a run on held-out scenes, with baselines",
                       description="Render the targets of an evaluation index and report PSNR, SSIM and "
                       "LPIPS per scene and averaged, next to the 'nearest context view' and 'mean context "
                       "image' baselines. Writes eval.json, eval.md and a PNG grid.")
    p.add_argument("run", type=Path, help="run directory or checkpoint directory")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides (e.g. eval.steps=10)")
    p.add_argument("--index", type=Path, help="evaluation index JSON (default: eval.index or a generated one)")
    p.add_argument("--out", type=Path, help="output directory (default: RUN/eval)")
    p.add_argument("--max-scenes", type=int, default=None, help="evaluate at most this many scenes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("render", help="render a camera path to PNG frames and an MP4/GIF",
                       description="Encode one scene's context views and render a trajectory "
                       "(spline through the context poses, an orbit, or the dataset's targets).")
    p.add_argument("run", type=Path, help="run directory or checkpoint directory")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    p.add_argument("--scene", default=None, help="scene key or dataset index (default: first test scene)")
    p.add_argument("--trajectory", choices=["spline", "orbit", "targets"], default=None)
    p.add_argument("--frames", type=int, default=None, help="number of frames")
    p.add_argument("--out", type=Path, help="output directory (default: RUN/render)")
    p.add_argument("--stochastic", action="store_true", help="sample tokens/noise instead of the deterministic mode")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("quickstart", help="train, evaluate and render on procedural rooms (CPU, no downloads)",
                       description="The whole loop on the embedded procedural 'rooms' scenes, sized for a "
                       "2-core CPU: train a small SceneTok within the time budget, evaluate it on held-out "
                       "rooms against the baselines, render a video, print a summary.")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of recipes/quickstart.yaml")
    p.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="run directory")
    p.add_argument("--minutes", type=float, default=None,
                   help="total budget in minutes including evaluation (default from the recipe)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("data", help="dataset tools: preview, index, convert, cache",
                       description="Dataset tools.")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    q = data_sub.add_parser("preview", help="PNG contact sheet + camera plot of one sample")
    _recipe(q)
    q.add_argument("--out", type=Path, required=True, help="output directory")
    q.add_argument("--split", default="train", help="dataset split")
    q.add_argument("--index", type=int, default=0, help="sample index")
    q.set_defaults(func=cmd_data_preview)
    q = data_sub.add_parser("index", help="write a deterministic evaluation index JSON")
    _recipe(q)
    q.add_argument("--out", type=Path, required=True, help="output JSON file")
    q.add_argument("--split", default="test", help="dataset split")
    q.add_argument("--seed", type=int, default=0, help="selection seed")
    q.set_defaults(func=cmd_data_index)
    q = data_sub.add_parser("convert", help="convert images + camera JSON into RE10K-style chunks")
    q.add_argument("source", type=Path, help="folder of scene folders (images + cameras JSON)")
    q.add_argument("--out", type=Path, required=True, help="output dataset root")
    q.add_argument("--cameras", default="cameras.json", help="camera JSON file name inside each scene folder")
    q.add_argument("--stage", default="train", help="stage folder to write (train/test)")
    q.set_defaults(func=cmd_data_convert)
    q = data_sub.add_parser("cache", help="precompute latents of a frozen image compressor")
    _recipe(q)
    q.add_argument("--out", type=Path, required=True, help="cache directory (resumable)")
    q.add_argument("--split", default="train", help="dataset split")
    q.add_argument("--epochs", type=int, default=1, help="epochs of view selections to cache")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_data_cache)
