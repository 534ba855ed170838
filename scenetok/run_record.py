"""``RUN/run.json``: how a run folder was made, and ``scenetok runs``: what each run folder holds.

``run.json`` is written by ``scenetok train`` (rank 0) when a session starts and updated when it
ends::

    {"status": "finished", "step": 4000, "updated": "...",
     "sessions": [{"started": "...", "ended": "...", "command": ["scenetok", "train", ...],
                   "recipe": "recipes/quickstart.yaml", "overrides": ["train.steps=4000"],
                   "versions": {"scenetok": "0.2.0", "scenetok-plugin-dl3dv": "0.2.0", "torch": "..."},
                   "git": {"commit": "...", "dirty": false, "root": "..."}, "status": "finished",
                   "step": 4000}]}

Every resume appends a session, so the file tells every command that touched the run. Nothing
here imports torch: ``scenetok runs`` reads run folders as plain files.
"""

from __future__ import annotations

import datetime
import importlib.metadata as metadata
import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RUN_JSON = "run.json"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def installed_versions() -> dict[str, str]:
    """Versions of scenetok, every distribution that provides scenetok components or hooks, and
    torch / Python."""
    versions: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        groups = {ep.group for ep in dist.entry_points}
        if name == "scenetok" or any(group.startswith("scenetok.") for group in groups):
            versions[name] = dist.version
    for name in ("torch",):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    versions["python"] = platform.python_version()
    return dict(sorted(versions.items()))


def git_state(folder: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty", "root"}`` of the git checkout holding ``folder`` (default: the
    scenetok sources, so an editable install records the code it ran), or ``None`` outside git."""
    folder = Path(folder) if folder is not None else Path(__file__).parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        root = git("rev-parse", "--show-toplevel")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty, "root": root}


def read_run_record(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's ``run.json`` (``{}`` when missing or unreadable)."""
    try:
        data = json.loads((Path(run_dir) / RUN_JSON).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(run_dir: Path, data: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / (RUN_JSON + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(run_dir / RUN_JSON)


def start_session(run_dir: str | os.PathLike[str], recipe_source: str, overrides: Iterable[str],
                  step: int, argv: list[str] | None = None) -> None:
    """Append this command to ``run.json`` with status ``running``."""
    run_dir = Path(run_dir)
    data = read_run_record(run_dir)
    session = {
        "started": _now(),
        "command": list(sys.argv if argv is None else argv),
        "cwd": os.getcwd(),
        "recipe": str(recipe_source),
        "overrides": list(overrides),
        "versions": installed_versions(),
        "git": git_state(),
        "start_step": step,
        "status": "running",
    }
    data.setdefault("sessions", []).append(session)
    data.update(status="running", step=step, updated=_now())
    _write(run_dir, data)


def end_session(run_dir: str | os.PathLike[str], status: str, step: int) -> None:
    """Record how the current session ended (``finished``, ``budget``, ``interrupted``,
    ``aborted`` or ``failed: <error>``)."""
    run_dir = Path(run_dir)
    data = read_run_record(run_dir)
    if data.get("sessions"):
        data["sessions"][-1].update(ended=_now(), status=status, step=step)
    data.update(status=status, step=step, updated=_now())
    _write(run_dir, data)


# ----------------------------------------------------------------------------------------------
# scenetok runs
# ----------------------------------------------------------------------------------------------


def _latest_step(run_dir: Path) -> int | None:
    checkpoints = run_dir / "checkpoints"
    steps = []
    for child in checkpoints.glob("step_*") if checkpoints.is_dir() else ():
        if (child / "manifest.json").exists() and child.name[5:].isdigit():
            steps.append(int(child.name[5:]))
    return max(steps) if steps else None


def _best_metric(run_dir: Path) -> tuple[str, float] | None:
    """The model's mean PSNR over every ``eval*/eval.json`` of the run (the best one)."""
    best = None
    for path in sorted(run_dir.glob("eval*/eval.json")):
        try:
            value = json.loads(path.read_text())["methods"]["model"]["mean"]["psnr"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(value, (int, float)) and (best is None or value > best[1]):
            best = (path.parent.name, float(value))
    return best


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in (RUN_JSON, "recipe.yaml", "checkpoints"))


def list_runs(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One row per run folder at ``folder`` itself or up to two levels below it: ``{"run", "step",
    "status", "best", "updated"}`` (``best`` = ``"PSNR 21.3 (eval)"`` or ``""``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    candidates = [folder] + sorted(p for p in folder.glob("*") if p.is_dir()) + \
        sorted(p for p in folder.glob("*/*") if p.is_dir())
    rows = []
    seen: list[Path] = []
    for path in candidates:
        if not is_run_dir(path) or any(parent in seen for parent in path.parents):
            continue
        seen.append(path)
        record = read_run_record(path)
        step = _latest_step(path)
        status = record.get("status") or ("no run.json" if step is not None else "empty")
        if status == "running" and record.get("step") is not None and step is not None:
            status = "running (or killed)"  # a killed run never wrote its end
        best = _best_metric(path)
        rows.append({"run": str(path), "step": step if step is not None else record.get("step"),
                     "status": status, "best": f"PSNR {best[1]:.2f} ({best[0]})" if best else "",
                     "updated": record.get("updated", "")})
    return rows
