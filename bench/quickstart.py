"""Run `scenetok quickstart` and record its numbers as JSON (bench/results/quickstart.json).

    python bench/quickstart.py [--minutes M] [--out runs/bench-quickstart]

Records wall time, steps, stop reason and PSNR/SSIM of the model and of the baselines on held-out
rooms, and the model's PSNR gain over "copy the nearest context view" (the quickstart's bar: +2 dB).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import time
from pathlib import Path

import torch

from scenetok.quickstart import run_quickstart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=None, help="total budget (default: the recipe's)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-quickstart"))
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "quickstart.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.out.exists():
        shutil.rmtree(args.out)  # a benchmark always starts from scratch
    started = time.time()
    summary = run_quickstart(out_dir=args.out, minutes=args.minutes, progress=False)
    numbers = json.loads((args.out / "quickstart.json").read_text())
    numbers.update({
        "wall_seconds": round(time.time() - started, 1),
        "machine": {"cpu_count": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__, "cuda": torch.cuda.is_available()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    })
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(numbers, indent=2))
    # Keep what a person looks at next to the numbers: the comparison grid and the video.
    for source in (args.out / "eval" / "eval_grid.png", args.out / "render" / "render.mp4",
                   args.out / "render" / "render.gif", args.out / "loss.png"):
        if source.exists():
            shutil.copy2(source, args.results.parent / f"quickstart_{source.name}")
    print(summary)
    print(f"\nwrote {args.results}")


if __name__ == "__main__":
    main()
