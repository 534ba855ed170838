"""Time the Video DC-AE (``video_dcae``) at its released size with random weights; record JSON
(bench/results/video_dcae_cost.json).

    python bench/video_dcae_cost.py [--frames 8] [--size 256] [--device cpu] [--threads N]

One encode of ``frames`` frames and one decode of the resulting latents (``frames / 4`` latent
frames; at least 8 frames, as one latent frame decodes to a single frame), after one warm-up pass of
a 4-frame encode on CUDA only. Random weights cost the same as the released ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch

from scenetok.components.image_compressors.video_dcae import VideoDCAE


def _timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "video_dcae_cost.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.frames < 8 or args.frames % 4:
        parser.error("--frames must be a multiple of 4, at least 8")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)

    compressor = VideoDCAE(VideoDCAE.Config(random_init=True)).to(device, dtype)
    images = torch.rand(1, args.frames, 3, args.size, args.size, device=device)
    with torch.inference_mode():
        if device.type == "cuda":
            compressor.encode(images[:, :4])
        latents, encode_s = _timed(lambda: compressor.encode(images), device)
        frames, decode_s = _timed(lambda: compressor.decode(latents), device)
    numbers = {
        "parameters": sum(p.numel() for p in compressor.parameters()),
        "frames": args.frames, "size": args.size, "device": str(device), "dtype": args.dtype,
        "latents": list(latents.shape), "decoded": list(frames.shape),
        "encode_s": round(encode_s, 2), "decode_s": round(decode_s, 2),
        "encode_s_per_frame": round(encode_s / args.frames, 3),
        "decode_s_per_frame": round(decode_s / args.frames, 3),
        "machine": {"threads": torch.get_num_threads(), "platform": platform.platform(),
                    "processor": platform.processor(), "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(numbers, indent=2) + "\n")
    print(json.dumps(numbers, indent=2))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
