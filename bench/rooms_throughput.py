"""Throughput of the procedural ``rooms`` dataset: samples (scenes) per second with 16 views.

Training must never be data-bound on CPU; this prints scenes/s (and rendered views/s) at 64x64 and
128x128 for one process and writes ``bench/results/rooms_throughput.json``.

    python bench/rooms_throughput.py [--samples 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from scenetok.components.datasets.rooms import RoomsDataset


def measure(size: int, samples: int, shadows: bool) -> dict[str, float]:
    dataset = RoomsDataset(RoomsDataset.Config(image_size=size, context_views=8, target_views=8,
                                               window_max=32, shadows=shadows))
    dataset[0]  # warm-up (allocator, first scene description)
    start = time.perf_counter()
    for item in range(1, samples + 1):
        sample = dataset[item]
    elapsed = time.perf_counter() - start
    views = sample["context"]["images"].shape[0] + len(set(sample["target"]["indices"].tolist()) -
                                                        set(sample["context"]["indices"].tolist()))
    return {"image_size": size, "views_per_sample": 16, "shadows": shadows, "samples": samples,
            "seconds": round(elapsed, 3), "scenes_per_second": round(samples / elapsed, 2),
            "rendered_views_in_last_sample": views}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (one DataLoader worker)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "rooms_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for size in (64, 128):
        for shadows in (True, False):
            result = measure(size, args.samples, shadows)
            results.append(result)
            print(f"rooms {size}x{size}, 16 views, shadows={shadows}: {result['scenes_per_second']:.2f} scenes/s "
                  f"({result['scenes_per_second'] * 16:.0f} views/s) on {args.threads} thread(s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "rooms_throughput", "threads": args.threads,
                                    "torch": torch.__version__, "machine": platform.machine(),
                                    "results": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
