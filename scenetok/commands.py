"""Sub-commands for the main jobs: train, eval, render, quickstart, data.

Registered by :mod:`scenetok.core_hooks`. Handlers import their torch-heavy modules when they run
(each such import says so), so that building the CLI parser stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scenetok.data.index import evaluation_view_counts, write_evaluation_index
from scenetok.recipe import COMMAND_LINE, RecipeError, load_recipe, parse_override


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal: redirected into a log file, tqdm writes a line per update
    (the periodic log lines say the same once every ``train.log_every`` steps)."""
    return not args.no_progress and sys.stderr.isatty()


def _split(args: argparse.Namespace, default: str) -> str:
    """The split a data command reads: ``--split``, else a ``dataset.split=`` override, else
    ``default``; both given and different is an error rather than one silently winning."""
    overridden = [value for key, value in map(parse_override, args.overrides) if key == "dataset.split"]
    if args.split is not None and overridden and overridden[-1] != args.split:
        raise RecipeError([f"{COMMAND_LINE}: --split {args.split} conflicts with dataset.split={overridden[-1]}; "
                           "give the split once"])
    return args.split or (str(overridden[-1]) if overridden else default)


def cmd_validate(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides, log_notes=False)
    for note in recipe.notes:  # printed here, not also logged: each note once
        print(f"note: {note}")
    for section, spec in recipe.components.items():
        provider = spec.info.provider if spec.info else "?"
        print(f"  {section:<24} {spec.name:<12} {provider}")
    if args.print:
        import yaml

        print(yaml.safe_dump(recipe.resolved(), sort_keys=False))
    missing = _report_weights(recipe, verbose=args.weights)
    if missing and args.weights:
        print(f"{args.recipe}: recipe OK, but {missing} required weights file(s) are missing", file=sys.stderr)
        return 1
    print(f"{args.recipe}: OK" + (f" (but {missing} weights file(s) missing: training or rendering will fail)"
                                  if missing else ""))
    return 0


def _report_weights(recipe: object, verbose: bool) -> int:
    """Print which pretrained weights the recipe needs (all with ``verbose``, else only the
    missing ones, as warnings); returns how many required ones are missing."""
    from scenetok.weights import recipe_weights  # lazy: imports torch

    missing = 0
    for status in recipe_weights(recipe):
        if status.path is not None:
            if verbose:
                print(f"  weights {status.key:<34} found: {status.path}")
        elif status.required:
            missing += 1
            print(f"warning: weights {status.key} ({status.component}) missing: {status.problem}")
        elif verbose:
            print(f"  weights {status.key:<34} optional, missing: {status.problem}")
    return missing


def cmd_model_summary(args: argparse.Namespace) -> int:
    from scenetok.model import summary  # lazy: imports torch

    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.component("scene_generator") is not None:
        from scenetok.scenegen.jobs import print_summary  # lazy: imports torch

        return print_summary(recipe, args.recipe, as_json=args.json)
    info = summary(recipe)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"recipe: {args.recipe}   image size: {info['image_size']}   sampler: {info['sampler']}")
    for section, row in info["components"].items():
        if row["parameters"] is None:
            latent = row["latent"]
            frozen = row.get("frozen_parameters")
            count = "frozen, not counted" if frozen is None else f"{frozen:,} frozen"
            released = row.get("released_parameters")
            print(f"  {section:<24} {row['name']:<12} {count:>15}  (latents: {latent['channels']} "
                  f"channels, /{latent['spatial_factor']} spatial, /{latent['temporal_factor']} temporal"
                  + ("" if released is None else f"; published weights: {released:,} parameters") + ")")
        else:
            print(f"  {section:<24} {row['name']:<12} {row['parameters']:>15,} parameters")
    print(f"  {'trainable (compressor + renderer)':<37} {info['trainable_parameters']:>15,} parameters")
    tokens, dim = info["scene_tokens"]
    print(f"  representation: {tokens} tokens x {dim} = {info['floats_per_scene']:,} floats per scene")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from scenetok.train.loop import train_recipe  # lazy: imports torch

    result = train_recipe(args.recipe, args.overrides, run_dir=args.run, progress=_progress(args))
    print(f"run directory: {result.run_dir}  (step {result.step}, stopped: {result.reason})")
    if result.signal:  # the checkpoint is written; exit as a process killed by it would (128 + N)
        import signal

        return 128 + int(signal.Signals[result.signal])
    return 0 if result.reason in ("finished", "budget") else 1


def cmd_eval(args: argparse.Namespace) -> int:
    from scenetok.eval.evaluate import evaluate_run  # lazy: imports torch
    from scenetok.scenegen.jobs import evaluate_scenegen_run, is_scenegen_run  # lazy: imports torch

    evaluate = evaluate_scenegen_run if is_scenegen_run(args.run) else evaluate_run
    report = evaluate(args.run, index=args.index, out_dir=args.out, overrides=args.overrides,
                          max_scenes=args.max_scenes, progress=_progress(args))
    print(report.markdown)
    print(f"\nwrote {report.out_dir}")
    if report.scored_scenes == 0:
        # An empty table is a failed evaluation, not a result: say why and fail the command.
        print(f"scenetok: error: no frame was scored. {report.why_nothing_scored()}", file=sys.stderr)
        return 1
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from scenetok.render import render_run  # lazy: imports torch

    if args.tokens is not None:
        from scenetok.scenegen.generate import SceneGenInputError  # lazy: imports torch
        from scenetok.scenegen.jobs import render_tokens_run  # lazy: imports torch

        try:
            out = render_tokens_run(args.run, args.tokens, out_dir=args.out, overrides=args.overrides)
        except SceneGenInputError as error:
            print(f"scenetok: error: {error}", file=sys.stderr)
            return 2
        print(f"wrote {out}")
        return 0
    out = render_run(args.run, out_dir=args.out, scene=args.scene, trajectory=args.trajectory,
                     frames=args.frames, overrides=args.overrides, progress=_progress(args),
                     deterministic=not args.stochastic, size=args.size, upscale=args.upscale)
    print(f"wrote {out}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from scenetok.run_record import list_runs  # lazy: only this command needs it

    rows = list_runs(args.folder)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no run folders under {args.folder}")
        return 0
    width = max(len(row["run"]) for row in rows)
    print(f"{'run':<{width}}  {'step':>7}  {'status':<20}  best")
    for row in rows:
        step = "-" if row["step"] is None else str(row["step"])
        print(f"{row['run']:<{width}}  {step:>7}  {row['status'][:20]:<20}  {row['best']}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from scenetok.quickstart import run_quickstart  # lazy: imports torch

    summary = run_quickstart(out_dir=args.out, minutes=args.minutes, overrides=args.overrides,
                             progress=_progress(args))
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
    dataset = build_dataset(recipe, split=_split(args, recipe["dataset"].config.split))
    path = write_preview(dataset, args.out, index=args.index)
    print(f"wrote {path}")
    return 0


def cmd_data_index(args: argparse.Namespace) -> int:
    from scenetok.data.dataset import build_dataset  # lazy: imports torch

    recipe = load_recipe(args.recipe, args.overrides)
    evaluation = recipe.sections["eval"]
    split = _split(args, evaluation.split)
    dataset = build_dataset(recipe, split=split)
    # The index is what `eval` scores: the evaluation view counts, not the training ones.
    context, target, explanation = evaluation_view_counts(evaluation, recipe["dataset"].config)
    print(f"split {split!r}, {explanation}")
    path = write_evaluation_index(dataset, args.out, context_views=context, target_views=target, seed=args.seed)
    print(f"wrote {path}")
    return 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    from scenetok.data.convert import convert_captures  # lazy: imports torch

    out = convert_captures(args.source, args.out, cameras=args.cameras, stage=args.stage)
    print(f"wrote {out}")
    return 0


def cmd_data_export(args: argparse.Namespace) -> int:
    from scenetok.data.dataset import build_dataset  # lazy: imports torch
    from scenetok.data.export import export_transforms  # lazy: imports torch

    recipe = load_recipe(args.recipe, args.overrides)
    split = _split(args, recipe.sections["eval"].split)
    dataset = build_dataset(recipe, split=split)
    written = export_transforms(dataset, args.out, split, scale=args.scale, offset=args.offset,
                                max_scenes=args.max_scenes, progress=not args.no_progress)
    print(f"wrote {len(written)} scene(s) to {args.out / split} (read them with dataset.name=transforms "
          f"dataset.root={args.out} dataset.split={split})")
    return 0 if written else 1


def cmd_data_cache(args: argparse.Namespace) -> int:
    from scenetok.data.cache import cache_latents  # lazy: imports torch
    from scenetok.data.dataset import build_dataset  # lazy: imports torch

    recipe = load_recipe(args.recipe, args.overrides)
    dataset = build_dataset(recipe, split=_split(args, "train"))
    spec = recipe["image_compressor"]
    compressor = spec.cls(spec.config)
    target = recipe.component("target_image_compressor")
    manifest = cache_latents(dataset, compressor, args.out, epochs=args.epochs, seed=recipe.seed,
                             sample=recipe.sections["model"].context_latents == "sample",
                             compressor_name=spec.name,
                             target_compressor=None if target is None else target.cls(target.config),
                             target_compressor_name=None if target is None else target.name,
                             progress=_progress(args))
    print(f"wrote {manifest}; train on it with train.latent_cache={args.out}")
    return 0


def _bounded(kind: type, low: float, what: str):
    """An argparse ``type`` that rejects values below ``low`` before any work starts."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value != value or value < low:  # NaN or too small
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _bounded(int, 1, "an integer >= 1")
non_negative_int = _bounded(int, 0, "an integer >= 0")
positive_float = _bounded(float, 1e-9, "a number > 0")
non_negative_float = _bounded(float, 0.0, "a number >= 0")


def _recipe(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML file or shipped recipe name (see `scenetok recipes`)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted recipe overrides")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Core's commands; called by :mod:`scenetok.core_hooks` through the ``scenetok_add_commands``
    hook, as a plugin's would be."""
    p = sub.add_parser("validate", help="check a recipe without weights or data",
                       description="Compose the recipe (extends + overrides), build every component "
                       "config, run cross-component checks, and report every problem with file and key.")
    _recipe(p)
    p.add_argument("--print", action="store_true", help="print the resolved recipe")
    p.add_argument("--weights", action="store_true", help="list every pretrained weights file the recipe needs "
                   "and where it was found; exit 1 if a required one is missing (without it, missing ones "
                   "are only warned about)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("model", help="model tools ('summary')",
                       description="Model tools. 'summary' prints parameter counts per component (built "
                       "on the meta device, no memory) and the representation size.")
    model_sub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    q = model_sub.add_parser("summary", help="parameter counts and floats per scene")
    _recipe(q)
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_model_summary)

    p = sub.add_parser("train", help="train a SceneTok (or a SceneGen) from a recipe (resumes if --run exists)",
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
                       "image' baselines. Writes eval.json, eval.md and a PNG grid. On a SceneGen run: "
                       "single-image generation (condition on context frame 0, anchors = the context "
                       "cameras) against 'copy the conditioning image' and the SceneTok reconstruction.")
    p.add_argument("run", type=Path, help="run directory or checkpoint directory")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides (e.g. eval.steps=10)")
    p.add_argument("--index", type=Path, help="evaluation index JSON (default: eval.index or a generated one)")
    p.add_argument("--out", type=Path, help="output directory (default: RUN/eval)")
    p.add_argument("--max-scenes", type=positive_int, default=None, help="evaluate at most this many scenes (>= 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("render", help="render a camera path to PNG frames and an MP4/GIF",
                       description="Encode one scene's context views and render a trajectory "
                       "(spline through the context poses, an orbit, or the dataset's targets).")
    p.add_argument("run", type=Path, help="run directory or checkpoint directory")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    p.add_argument("--scene", default=None, help="scene key or dataset index (default: first test scene)")
    p.add_argument("--trajectory", choices=["spline", "orbit", "targets"], default=None,
                   help="camera path (default: render.trajectory): a spline through the context poses, an orbit "
                   "around the scene centre, or the dataset's target frames")
    p.add_argument("--frames", type=positive_int, default=None, help="number of frames (>= 1)")
    p.add_argument("--out", type=Path, help="output directory (default: RUN/render)")
    p.add_argument("--stochastic", action="store_true", help="sample tokens/noise instead of the deterministic mode")
    view = p.add_mutually_exclusive_group()
    view.add_argument("--size", type=positive_int, nargs=2, metavar=("H", "W"), default=None,
                      help="resize the written frames and video to H x W for viewing (bilinear; the model "
                      "still renders at its training size)")
    view.add_argument("--upscale", type=positive_int, metavar="K", default=None,
                      help="enlarge the written frames and video K times (nearest neighbour: pixels stay sharp)")
    p.add_argument("--tokens", type=Path, default=None,
                   help="render the trajectory saved with generated tokens (`scenetok generate`'s "
                   "tokens.safetensors) instead of encoding a scene; RUN is the SceneGen or SceneTok run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("runs", help="list run folders with their step, best metric and status",
                       description="List the run folders under FOLDER (itself and two levels down): newest "
                       "checkpoint step, status from run.json (finished, budget, interrupted, aborted, failed, "
                       "running) and the best PSNR of its evaluations.")
    p.add_argument("folder", nargs="?", type=Path, default=Path("runs"), help="folder of runs (default: runs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("quickstart", help="train, evaluate and render on procedural rooms (CPU, no downloads)",
                       description="The whole loop on the embedded procedural 'rooms' scenes, sized for a "
                       "2-core CPU: train a small SceneTok for train.steps steps, evaluate it on held-out "
                       "rooms against the baselines, render a video, print a summary.")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of recipes/quickstart.yaml")
    p.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="run directory")
    p.add_argument("--minutes", type=positive_float, default=None,
                   help="train for a wall-clock budget instead of train.steps (total minutes including "
                   "evaluation; the step count then depends on machine load)")
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
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch intra-op threads (default: torch's choice; 1 gives steadier ratios on a shared machine)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("data", help="dataset tools: preview, index, convert, export, cache",
                       description="Dataset tools.")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    q = data_sub.add_parser("preview", help="PNG contact sheet + camera plot of one sample")
    _recipe(q)
    q.add_argument("--out", type=Path, required=True, help="output directory")
    q.add_argument("--split", default=None, help="dataset split (default: dataset.split of the recipe)")
    q.add_argument("--index", type=non_negative_int, default=0, help="sample index (>= 0)")
    q.set_defaults(func=cmd_data_preview)
    q = data_sub.add_parser("index", help="write a deterministic evaluation index JSON")
    _recipe(q)
    q.add_argument("--out", type=Path, required=True, help="output JSON file")
    q.add_argument("--split", default=None, help="dataset split (default: eval.split)")
    q.add_argument("--seed", type=non_negative_int, default=0, help="selection seed (>= 0)")
    q.set_defaults(func=cmd_data_index)
    q = data_sub.add_parser("convert", help="convert images + camera JSON into RE10K-style chunks")
    q.add_argument("source", type=Path, help="folder of scene folders (images + cameras JSON)")
    q.add_argument("--out", type=Path, required=True, help="output dataset root")
    q.add_argument("--cameras", default="cameras.json", help="camera JSON file name inside each scene folder")
    q.add_argument("--stage", default="train", help="stage folder to write (train/test)")
    q.set_defaults(func=cmd_data_convert)
    q = data_sub.add_parser("export", help="write a dataset's scenes as nerfstudio transforms.json folders",
                            description="Write every frame of a dataset's scenes (at the recipe's image size) as "
                                        "nerfstudio transforms.json + PNG folders in OUT/SPLIT/<scene>/, readable "
                                        "by the transforms dataset. --scale/--offset move the world (camera centres "
                                        "become scale * c + offset) to test sensitivity to world scale, e.g. "
                                        "with and without model.scene_scale.")
    _recipe(q)
    q.add_argument("--out", type=Path, required=True, help="output dataset root")
    q.add_argument("--split", default=None, help="dataset split (default: eval.split)")
    q.add_argument("--scale", type=positive_float, default=1.0, help="world scale factor (> 0)")
    q.add_argument("--offset", type=float, nargs=3, default=[0.0, 0.0, 0.0], metavar=("X", "Y", "Z"),
                   help="world origin shift, added after scaling")
    q.add_argument("--max-scenes", type=positive_int, default=None, help="export at most this many scenes")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_data_export)
    q = data_sub.add_parser("cache", help="precompute latents of the frozen image compressor(s)")
    _recipe(q)
    q.add_argument("--out", type=Path, required=True, help="cache directory (resumable)")
    q.add_argument("--split", default=None, help="dataset split (default: train)")
    q.add_argument("--epochs", type=positive_int, default=1, help="epochs of view selections to cache (>= 1)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_data_cache)
