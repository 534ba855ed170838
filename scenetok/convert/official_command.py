"""The ``scenetok import-official`` command (imports nothing heavy until it runs).

::

    scenetok import-official checkpoints/va-wan_dl3dv.ckpt --out runs/official-dl3dv-wan
    scenetok import-official my.ckpt --out runs/x --config re10k dataset.root=data/re10k
    scenetok import-official scenegen_shift4_re10k.ckpt --out runs/sg4 scenegen.scenetok_run=runs/re10k-scene
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

CONFIG_NAMES = ("re10k", "dl3dv_videodc", "dl3dv_wan", "scenegen_shift1", "scenegen_shift4", "scenegen_shift12")


def cmd_import_official(args: argparse.Namespace) -> int:
    from scenetok.convert.official import OfficialImportError, import_official  # lazy: imports torch

    try:
        result = import_official(args.checkpoint, args.out, config=args.config, overrides=args.overrides)
    except OfficialImportError as error:
        if args.debug:
            raise
        print(f"scenetok: error: {error}", file=sys.stderr)
        return 2
    config, account = result.config, result.account
    print(f"configuration: {config.name} (official {config.experiment}, step {result.step})")
    print(f"keys: {len(account.mapped)} mapped, {len(account.dropped)} dropped on purpose, "
          f"{len(account.scenetok_only)} scenetok-only (see {result.run_dir / 'import.json'})")
    if config.compat:
        print(f"upstream-compatibility switches set: {' '.join(config.compat)}")
    print(f"renders: {config.renders}")
    print(f"wrote {result.checkpoint}")
    print(f"next: scenetok eval {result.run_dir} dataset.root=...   |   "
          f"scenetok render {result.run_dir} dataset.root=...")
    return 0


def add_command(subparsers: Any) -> None:
    """Register ``import-official`` on the ``scenetok`` sub-parser action."""
    p = subparsers.add_parser(
        "import-official", help="import a released official SceneTok checkpoint as a scenetok run",
        description="Read a released official SceneTok Lightning checkpoint (tensors only, "
        "torch.load weights_only=True), detect its configuration, map every key explicitly and write "
        "a scenetok run directory (safetensors + resolved recipe with the upstream-compatibility "
        "switches that checkpoint needs) that eval and render load like any run.",
    )
    p.add_argument("checkpoint", type=Path, help="official .ckpt (or a plain state dict / .safetensors)")
    p.add_argument("--out", type=Path, required=True, help="new run directory to write")
    p.add_argument("--config", choices=CONFIG_NAMES, default=None,
                   help="released configuration (default: detected from the key shapes)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="recipe overrides stored with the run, e.g. dataset.root=data/re10k")
    p.set_defaults(func=cmd_import_official)
