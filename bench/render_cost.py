"""Render cost per target view must not grow with the number of context views (the scene is
tokens): time `encode` and `render` of one model for 2..16 context views, side by side.

    python bench/render_cost.py [--preset T|S|B|L] [--device cpu|cuda]

Prints a table of milliseconds and the ratio render(V)/render(V=2); writes
bench/results/render_cost.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from scenetok.model import SceneTok
from scenetok.recipe import load_recipe
from scenetok.testing.contracts import random_cameras

RECIPE = Path(__file__).parents[1] / "recipes" / "quickstart.yaml"


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--targets", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "render_cost.json")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. decoder.preset=B")
    args = parser.parse_args()
    recipe = load_recipe(RECIPE, args.overrides)
    model = SceneTok(recipe).to(args.device).eval()
    height, width = model.image_size
    rows = []
    with torch.no_grad():
        targets = random_cameras(1, args.targets, torch.Generator().manual_seed(1)).to(args.device)
        for views in args.views:
            images = torch.rand(1, views, 3, height, width, device=args.device)
            cameras = random_cameras(1, views, torch.Generator().manual_seed(views)).to(args.device)
            from scenetok.types import Views

            context = Views(images=images, cameras=cameras, indices=torch.arange(views)[None])
            tokens = model.encode(context).mode()
            encode_ms = timed(lambda: model.encode(context), args.repeats)
            render_ms = timed(lambda: model.render(tokens, targets, steps=args.steps), args.repeats)
            rows.append({"context_views": views, "encode_ms": round(encode_ms, 2),
                         "render_ms_per_target_view": round(render_ms / args.targets, 2)})
    base = rows[0]["render_ms_per_target_view"]
    print(f"{'views':>5} {'encode ms':>10} {'render ms/view':>15} {'render ratio':>13}")
    for row in rows:
        row["render_ratio_vs_first"] = round(row["render_ms_per_target_view"] / base, 3)
        print(f"{row['context_views']:>5} {row['encode_ms']:>10.1f} {row['render_ms_per_target_view']:>15.1f} "
              f"{row['render_ratio_vs_first']:>13.2f}")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"device": args.device, "steps": args.steps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
