"""Sub-commands for the main jobs: train, eval, render, quickstart, data.

Registered by :mod:`scenetok.core_hooks`. Handlers import their torch-heavy modules when they run
(each such import says so), so that building the CLI parser stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scenetok.data.index import write_evaluation_index
from scenetok.recipe import load_recipe


def cmd_validate(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    for note in recipe.notes:
        print(f"note: {note}")
    for section, spec in recipe.components.items():
        provider = spec.info.provider if spec.info else "?"
        print(f"  {section:<24} {spec.name:<12} {provider}")
    if args.print:
        import yaml

        print(yaml.safe_dump(recipe.resolved(), sort_keys=False))
    print(f"{args.recipe}: OK")
    return 0


def cmd_model_summary(args: argparse.Namespace) -> int:
    from scenetok.model import summary  # lazy: imports torch

    recipe = load_recipe(args.recipe, args.overrides)
    info = summary(recipe)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"recipe: {args.recipe}   image size: {info['image_size']}   sampler: {info['sampler']}")
    for section, row in info["components"].items():
        if row["parameters"] is None:
            latent = row["latent"]
            print(f"  {section:<24} {row['name']:<12} {'frozen, not counted':>15}  (latents: {latent['channels']} "
                  f"channels, /{latent['spatial_factor']} spatial, /{latent['temporal_factor']} temporal)")
        else:
            print(f"  {section:<24} {row['name']:<12} {row['parameters']:>15,} parameters")
    print(f"  {'trainable (compressor + renderer)':<37} {info['trainable_parameters']:>15,} parameters")
    tokens, dim = info["scene_tokens"]
    print(f"  representation: {tokens} tokens x {dim} = {info['floats_per_scene']:,} floats per scene")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from scenetok.train.loop import train_recipe  # lazy: imports torch

    result = train_recipe(args.recipe, args.overrides, run_dir=args.run, progress=not args.no_progress)
    print(f"run directory: {result.run_dir}  (step {result.step}, stopped: {result.reason})")
    return 0 if result.reason in ("finished", "budget", "interrupted") else 1


def cmd_eval(args: argparse.Namespace) -> int:
    from scenetok.eval.evaluate import evaluate_run  # lazy: imports torch

    report = evaluate_run(args.run, index=args.index, out_dir=args.out, overrides=args.overrides,
                          max_scenes=args.max_scenes, progress=not args.no_progress)
    print(report.markdown)
    print(f"\nwrote {report.out_dir}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from scenetok.render import render_run  # lazy: imports torch

    out = render_run(args.run, out_dir=args.out, scene=args.scene, trajectory=args.trajectory,
                     frames=args.frames, overrides=args.overrides, progress=not args.no_progress,
                     deterministic=not args.stochastic)
    print(f"wrote {out}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from scenetok.quickstart import run_quickstart  # lazy: imports torch

    summary = run_quickstart(out_dir=args.out, minutes=args.minutes, overrides=args.overrides,
                             progress=not args.no_progress)
    print(summary)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from scenetok.bench import BenchError, run_bench  # lazy: imports torch

    try:
        report = run_bench(suite=args.suite, out=args.out, quick=args.quick, run=args.run,
                           sections=args.sections, threads=args.threads)
    except BenchError as error:
        print(f"scenetok: error: {error}", file=sys.stderr)
        return 2
    for path in report["files"]:
        print(f"wrote {path}")
    return 0


def cmd_data_preview(args: argparse.Namespace) -> int:
    from scenetok.data.preview import write_preview  # lazy: draws with matplotlib
    from scenetok.data.dataset import build_dataset  # lazy: imports torch

    recipe = load_recipe(args.recipe, args.overrides)
    dataset = build_dataset(recipe, split=args.split)
    path = write_preview(dataset, args.out, index=args.index)
    print(f"wrote {path}")
    return 0


def cmd_data_index(args: argparse.Namespace) -> int:
    from scenetok.data.dataset import build_dataset  # lazy: imports torch

    recipe = load_recipe(args.recipe, args.overrides)
    dataset = build_dataset(recipe, split=args.split)
    config = recipe["dataset"].config
    path = write_evaluation_index(dataset, args.out, context_views=config.context_views,
                                  target_views=config.target_views, seed=args.seed)
    print(f"wrote {path}")
    return 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    from scenetok.data.convert import convert_captures  # lazy: imports torch

    out = convert_captures(args.source, args.out, cameras=args.cameras, stage=args.stage)
    print(f"wrote {out}")
    return 0


def cmd_data_cache(args: argparse.Namespace) -> int:
    from scenetok.data.cache import cache_latents  # lazy: imports torch
    from scenetok.data.dataset import build_dataset  # lazy: imports torch

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
    """Core's commands; called by :mod:`scenetok.core_hooks` through the ``scenetok_add_commands``
    hook, as a plugin's would be."""
    p = sub.add_parser("validate", help="check a recipe without weights or data",
                       description="Compose the recipe (extends + overrides), build every component "
                       "config, run cross-component checks, and report every problem with file and key.")
    _recipe(p)
    p.add_argument("--print", action="store_true", help="print the resolved recipe")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("model", help="model tools ('summary')",
                       description="Model tools. 'summary' prints parameter counts per component (built "
                       "on the meta device, no memory) and the representation size.")
    model_sub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    q = model_sub.add_parser("summary", help="parameter counts and floats per scene")
    _recipe(q)
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_model_summary)

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

    p = sub.add_parser("bench", help="benchmark suite: context scaling, throughput/MFU, sampling, memory",
                       description="Measure context scaling, training throughput (steps/s, FLOPs, MFU, "
                       "step breakdown), the training-step speed changes before/after, PSNR/SSIM vs "
                       "sampling steps and solver (with --run) and peak memory, side by side in one run; writes bench_SUITE.json "
                       "and bench_SUITE.md with machine info and date.")
    p.add_argument("--suite", choices=["cpu", "gpu"], default="cpu",
                   help="cpu: quickstart and S/B models at 32 px; gpu: L presets at 256x256 in bf16 (needs CUDA)")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="output directory")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a seconds-long check of the whole suite")
    p.add_argument("--run", type=Path, default=None,
                   help="trained run for the sampling section (skipped without one)")
    p.add_argument("--sections", nargs="+", default=None, metavar="SECTION",
                   choices=["matmul_peak", "context_scaling", "training", "changes", "sampling", "memory"],
                   help="measure only these sections (default: all)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice; 1 gives steadier ratios on a shared machine)")
    p.set_defaults(func=cmd_bench)

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
