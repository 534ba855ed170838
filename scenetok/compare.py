"""``scenetok compare``: one table and two plots from several evaluated runs.

Reads only data, so runs whose components are no longer installed still compare: each run's
resolved ``recipe.yaml``, ``eval/eval.json``, ``metrics.jsonl`` and, for runs made by
``scenetok ablate``, its ``variant.json`` (label, seed, parameters, base recipe) and
``status.json`` (outcome, wall time). Runs of the same variant (or, for plain runs, the same
recipe up to the seed) are one row with mean ± std over seeds. Writes ``results.csv``,
``results.json``, ``results.md``, ``metrics.png`` (each metric per variant with error bars, the
baselines as lines) and ``loss.png`` (training loss of every run, overlaid).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import statistics
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

#: Metric -> True if higher is better.
METRICS = {"psnr": True, "ssim": True, "lpips": False}
BASELINES = ("nearest_context", "mean_context")
BASELINE_NAMES = {"nearest_context": "copy the nearest context view", "mean_context": "mean context image"}


def format_value(value: Any) -> str:
    """A recipe value as one would write it in YAML (``0.001``, ``[1, 2]``, ``ddpm``)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (empty mappings stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def comparable(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved recipe without what never distinguishes two arms (seed, provenance)."""
    return {k: v for k, v in resolved.items() if k not in ("provenance", "seed", "description")}


def recipe_changes(base: Mapping[str, Any], other: Mapping[str, Any]) -> tuple[dict[str, list[Any]], str]:
    """What ``other`` changes relative to ``base`` (two resolved recipes).

    Returns ``(changes, summary)``: ``changes`` maps dotted keys to ``[base, other]``; a section
    whose component ``name`` differs is one entry ``section.name`` plus its keys that both
    components have with different values (keys of only one schema follow from the swap).
    ``summary`` is the same in one line, ``"(base)"`` if nothing differs.
    """
    base, other = comparable(base), comparable(other)
    changes: dict[str, list[Any]] = {}
    parts: list[str] = []
    for section in list(dict.fromkeys([*base, *other])):
        old, new = base.get(section), other.get(section)
        if old == new:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            flat_old, flat_new = flatten(old), flatten(new)
            swapped = "name" in old and old.get("name") != new.get("name")
            keys = [k for k in dict.fromkeys([*flat_old, *flat_new])
                    if flat_old.get(k) != flat_new.get(k) and (not swapped or (k in flat_old and k in flat_new))]
            if swapped:
                keys = ["name"] + [k for k in keys if k != "name"]
            section_parts = []
            for key in keys:
                changes[f"{section}.{key}"] = [flat_old.get(key), flat_new.get(key)]
                section_parts.append(f"{format_value(flat_old.get(key))} -> {format_value(flat_new.get(key))}"
                                     if swapped and key == "name"
                                     else f"{key}: {format_value(flat_old.get(key))} -> {format_value(flat_new.get(key))}")
            if swapped:
                head, rest = section_parts[0], section_parts[1:]
                parts.append(f"{section}: {head}" + (f" ({', '.join(rest)})" if rest else ""))
            else:
                parts.extend(f"{section}.{p}" for p in section_parts)
        else:
            changes[section] = [old, new]
            parts.append(f"{section}: {format_value(old)} -> {format_value(new)}")
    return changes, "; ".join(parts) or "(base)"


class CompareError(ValueError):
    """Bad input to ``scenetok compare`` (a folder that is not a run)."""


@dataclass
class RunData:
    """What one run directory says about itself (data only, nothing imported)."""

    run_dir: Path
    recipe: dict[str, Any]
    label: str
    seed: int
    state: str
    error: str | None = None
    steps: int | None = None
    wall_seconds: float | None = None
    parameters: int | None = None
    base_recipe: dict[str, Any] | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    baselines: dict[str, dict[str, float | None]] = field(default_factory=dict)
    ablation: str | None = None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _loss_records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by an interruption
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
            records.append(record)
    return records


def read_run(run_dir: str | Path) -> RunData:
    """Read one run directory; raises :class:`CompareError` if it holds no recipe at all."""
    run_dir = Path(run_dir)
    recipe_path = run_dir / "recipe.yaml"
    if not recipe_path.exists():
        recipe_path = run_dir / "variant.yaml"  # planned by `scenetok ablate`, never trained
    if not recipe_path.exists():
        raise CompareError(f"{run_dir}: not a run directory (no recipe.yaml)")
    try:
        recipe = yaml.safe_load(recipe_path.read_text()) or {}
    except yaml.YAMLError as error:
        raise CompareError(f"{recipe_path}: not valid YAML: {str(error).splitlines()[0]}") from None
    info = _read_json(run_dir / "variant.json") or {}
    status = _read_json(run_dir / "status.json") or {}
    report = _read_json(run_dir / "eval" / "eval.json")
    records = _loss_records(run_dir)
    seed = int(info.get("seed", recipe.get("seed", 0)) or 0)
    default_label = run_dir.parent.name if run_dir.name.startswith("seed_") else run_dir.name
    data = RunData(run_dir=run_dir, recipe=recipe, label=str(info.get("variant", default_label)), seed=seed,
                   state=status.get("state", "done" if report else "not evaluated"), error=status.get("error"),
                   parameters=info.get("parameters"), base_recipe=info.get("base_recipe"),
                   ablation=info.get("ablation"))
    if status.get("train_seconds") is not None:
        data.wall_seconds = float(status.get("train_seconds", 0)) + float(status.get("eval_seconds") or 0)
    elif records:
        data.wall_seconds = float(records[-1].get("time", 0.0))  # training only, this session
    if report:
        methods = report.get("methods", {})
        data.steps = report.get("metadata", {}).get("step")
        data.metrics = {m: methods.get("model", {}).get("mean", {}).get(m) for m in METRICS}
        data.baselines = {b: {m: methods[b].get("mean", {}).get(m) for m in METRICS}
                          for b in BASELINES if b in methods}
        if "model" not in methods:
            data.state, data.error = "not evaluated", "eval.json has no model results"
    elif data.state == "done":
        data.state, data.error = "not evaluated", "no eval/eval.json"
    if data.steps is None and records:
        data.steps = int(records[-1]["step"])
    return data


def expand_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories from arguments: a run directory, or an ablation folder (all its runs)."""
    runs: list[Path] = []
    for path in map(Path, paths):
        manifest = _read_json(path / "ablation.json")
        if manifest and isinstance(manifest.get("runs"), list):
            runs.extend(path / name for name in manifest["runs"])
        elif path.is_dir():
            runs.append(path)
        else:
            raise CompareError(f"{path}: not a run directory or an ablation folder")
    return runs


def _stats(values: list[float]) -> dict[str, Any]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"mean": None, "std": None, "n": 0, "values": []}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values), "values": values}


@dataclass
class Comparison:
    out_dir: Path
    data: dict[str, Any]
    markdown: str
    files: dict[str, Path]


def build_table(runs: list[RunData]) -> dict[str, Any]:
    """Group runs into rows (one per variant), average metrics over seeds, mark the best."""
    groups: dict[str, list[RunData]] = {}
    plain_keys: dict[str, str] = {}
    for run in runs:
        if run.ablation is None:
            # Plain runs: the same recipe up to the seed is one variant, named by its first run.
            key = json.dumps(comparable(run.recipe), sort_keys=True, default=str)
            run.label = plain_keys.setdefault(key, run.label)
        groups.setdefault(run.label, []).append(run)
    base = next((r.base_recipe for r in runs if r.base_recipe), None) or runs[0].recipe
    base_note = "the ablation's base recipe" if any(r.base_recipe for r in runs) else \
        f"the recipe of the first run ({runs[0].run_dir})"
    rows = []
    for label, members in groups.items():
        done = [r for r in members if r.state == "done" and r.metrics.get("psnr") is not None]
        changes, summary = recipe_changes(base, members[0].recipe)
        row = {
            "variant": label, "changes": summary, "changed_keys": changes,
            "parameters": members[0].parameters,
            "steps": _common([r.steps for r in members]),
            "wall_minutes": _stats([r.wall_seconds / 60 for r in done if r.wall_seconds is not None])["mean"],
            "seeds": sorted(r.seed for r in done),
            "runs": [str(r.run_dir) for r in members],
            "metrics": {m: _stats([r.metrics.get(m) for r in done]) for m in METRICS},
            "failed": [{"run": str(r.run_dir), "state": r.state, "error": r.error} for r in members
                       if r not in done],
            "best": [],
        }
        rows.append(row)
    for metric, higher in METRICS.items():
        scored = [r for r in rows if r["metrics"][metric]["mean"] is not None]
        if len(scored) > 1:
            best = (max if higher else min)(scored, key=lambda r: r["metrics"][metric]["mean"])
            best["best"].append(metric)
    baselines: dict[str, dict[str, Any]] = {}
    differ = False
    for name in BASELINES:
        values = {m: [r.baselines[name][m] for r in runs if name in r.baselines] for m in METRICS}
        if values["psnr"]:
            baselines[name] = {m: _stats(v) for m, v in values.items()}
            differ = differ or baselines[name]["psnr"]["std"] > 1e-6
    return {"base": base_note, "base_recipe": base, "rows": rows, "baselines": baselines,
            "baselines_differ": differ}


def _common(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return present[0] if all(v == present[0] for v in present) else f"{min(present)}-{max(present)}"


def _fmt(stats: dict[str, Any], digits: int) -> str:
    if stats["mean"] is None:
        return "n/a"
    if stats["n"] > 1:
        return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"
    return f"{stats['mean']:.{digits}f}"


DIGITS = {"psnr": 2, "ssim": 3, "lpips": 3}


def format_markdown(table: dict[str, Any]) -> str:
    """``results.md``: one row per variant, the best per metric in bold, the baselines once."""
    metrics = [m for m in METRICS if any(r["metrics"][m]["mean"] is not None for r in table["rows"])] or ["psnr"]
    head = ["variant", "vs base", "params", "steps", "wall (min)", "seeds"] + [
        f"{m.upper()} {'↑' if METRICS[m] else '↓'}" for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table["rows"]:
        cells = [row["variant"], row["changes"],
                 f"{row['parameters']:,}" if row["parameters"] is not None else "?",
                 str(row["steps"]) if row["steps"] is not None else "?",
                 f"{row['wall_minutes']:.1f}" if row["wall_minutes"] is not None else "?",
                 str(len(row["seeds"]))]
        for metric in metrics:
            text = _fmt(row["metrics"][metric], DIGITS[metric])
            cells.append(f"**{text}**" if metric in row["best"] else text)
        lines.append("| " + " | ".join(cells) + " |")
    for name, stats in table["baselines"].items():
        cells = [f"baseline: {BASELINE_NAMES[name]}", "", "", "", "", ""]
        cells += [_fmt({**stats[m], "n": 1}, DIGITS[m]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"\nmean ± std over seeds; **bold** = best per metric; 'vs base' = what differs from {table['base']}."]
    missing = [m for m in METRICS if m not in metrics]
    if missing:
        notes.append(f"{', '.join(m.upper() for m in missing)}: unavailable in every run (see eval.json).")
    if table["baselines_differ"]:
        notes.append("the baselines differ between runs (different evaluation data); shown: their mean.")
    for row in table["rows"]:
        for failure in row["failed"]:
            notes.append(f"{failure['state']}: {row['variant']} ({failure['run']}): {failure['error']}")
    return "\n".join(lines) + "\n" + "\n".join(notes) + "\n"


def write_csv(table: dict[str, Any], path: Path) -> None:
    columns = ["kind", "variant", "changes", "parameters", "steps", "wall_minutes", "seeds"]
    for metric in METRICS:
        columns += [f"{metric}_mean", f"{metric}_std", f"{metric}_n"]
    columns += ["best", "failed"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in table["rows"]:
            out = {"kind": "variant", "variant": row["variant"], "changes": row["changes"],
                   "parameters": row["parameters"], "steps": row["steps"], "wall_minutes": row["wall_minutes"],
                   "seeds": " ".join(map(str, row["seeds"])), "best": " ".join(row["best"]),
                   "failed": len(row["failed"])}
            for metric in METRICS:
                stats = row["metrics"][metric]
                out.update({f"{metric}_mean": stats["mean"], f"{metric}_std": stats["std"], f"{metric}_n": stats["n"]})
            writer.writerow(out)
        for name, stats in table["baselines"].items():
            out = {"kind": "baseline", "variant": name}
            for metric in METRICS:
                out.update({f"{metric}_mean": stats[metric]["mean"], f"{metric}_std": stats[metric]["std"],
                            f"{metric}_n": stats[metric]["n"]})
            writer.writerow(out)


def plot_metrics(table: dict[str, Any], path: Path) -> Path | None:
    """One panel per available metric: mean per variant with ±std error bars, baselines dashed."""
    from matplotlib.figure import Figure  # lazy: matplotlib is only needed for the plots

    metrics = [m for m in METRICS if any(r["metrics"][m]["mean"] is not None for r in table["rows"])]
    if not metrics:
        return None
    rows = table["rows"]
    figure = Figure(figsize=(max(4.0, 1.2 * len(rows) + 1.5) * len(metrics), 3.6), dpi=110)
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        x = list(range(len(rows)))
        means = [r["metrics"][metric]["mean"] for r in rows]
        errors = [r["metrics"][metric]["std"] or 0.0 for r in rows]
        colors = ["tab:orange" if metric in r["best"] else "tab:blue" for r in rows]
        ax.bar(x, [m if m is not None else 0.0 for m in means], yerr=errors, color=colors, capsize=4, alpha=0.85)
        for name, style in zip(table["baselines"], ("--", ":")):
            value = table["baselines"][name][metric]["mean"]
            if value is not None:
                ax.axhline(value, color="gray", linestyle=style, label=BASELINE_NAMES[name])
        present = [m for m in means if m is not None]
        if metric == "psnr" and present:
            low = min(present + [b[metric]["mean"] for b in table["baselines"].values() if b[metric]["mean"]])
            ax.set_ylim(bottom=max(0.0, low - 2.0))
        ax.set_xticks(x)
        ax.set_xticklabels([r["variant"] for r in rows], rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{metric.upper()} ({'higher' if METRICS[metric] else 'lower'} is better)")
        if table["baselines"]:
            ax.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_losses(runs: list[RunData], path: Path) -> Path | None:
    """Training loss of every run against steps; one colour per variant (seeds share it)."""
    from matplotlib.figure import Figure  # lazy: matplotlib is only needed for the plots

    curves = [(run, _loss_records(run.run_dir)) for run in runs]
    curves = [(run, [(r["step"], r["loss"]) for r in records if isinstance(r.get("loss"), (int, float))])
              for run, records in curves]
    curves = [(run, points) for run, points in curves if points]
    if not curves:
        return None
    figure = Figure(figsize=(7, 4), dpi=110)
    ax = figure.subplots()
    labels = list(dict.fromkeys(run.label for run, _ in curves))
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    shown: set[str] = set()
    for run, points in curves:
        steps, losses = zip(*points)
        window = max(1, len(losses) // 20)  # a running mean: raw losses of small batches are noisy
        smooth = [statistics.fmean(losses[max(0, i - window + 1): i + 1]) for i in range(len(losses))]
        ax.plot(steps, smooth, color=colors[run.label], alpha=0.9, linewidth=1.2,
                label=None if run.label in shown else run.label)
        shown.add(run.label)
    if all(loss > 0 for _, points in curves for _, loss in points):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (running mean)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return path


def compare_runs(paths: list[str | Path], out_dir: str | Path, title: str | None = None) -> Comparison:
    """Read runs (or ablation folders) and write ``results.{csv,json,md}``, ``metrics.png`` and
    ``loss.png`` into ``out_dir``; ``title`` heads ``results.md`` (default: the ablation's name
    and description when an ablation folder is given)."""
    run_dirs = expand_runs(list(paths))
    if not run_dirs:
        raise CompareError("no runs to compare")
    runs = []
    for run_dir in run_dirs:
        if not run_dir.exists():
            continue  # planned by an ablation but not started
        runs.append(read_run(run_dir))
    if not runs:
        raise CompareError(f"none of {', '.join(map(str, run_dirs))} exists")
    table = build_table(runs)
    if title is None:
        manifests = [_read_json(Path(p) / "ablation.json") for p in paths]
        title = "; ".join(f"ablation {m['ablation']}: {m.get('description', '')}".rstrip(": ")
                          for m in manifests if m) or None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown = (f"# {title}\n\n" if title else "") + format_markdown(table)
    files = {"json": out / "results.json", "csv": out / "results.csv", "markdown": out / "results.md"}
    files["json"].write_text(json.dumps(table, indent=2, default=str))
    write_csv(table, files["csv"])
    files["markdown"].write_text(markdown)
    for key, plot in (("metrics_plot", lambda: plot_metrics(table, out / "metrics.png")),
                      ("loss_plot", lambda: plot_losses(runs, out / "loss.png"))):
        try:
            written = plot()
        except Exception as error:  # noqa: BLE001 - a plot must never lose the tables
            log.warning("could not draw %s: %s", key, error)
            written = None
        if written is not None:
            files[key] = written
    return Comparison(out, table, markdown, files)


def cmd_compare(args: argparse.Namespace) -> int:
    out = args.out
    if out is None:
        single = len(args.runs) == 1 and (Path(args.runs[0]) / "ablation.json").exists()
        out = Path(args.runs[0]) if single else Path("comparison")
    try:
        comparison = compare_runs(args.runs, out)
    except CompareError as error:
        print(f"scenetok compare: error: {error}", file=sys.stderr)
        return 2
    print(comparison.markdown)
    print("wrote " + ", ".join(str(p) for p in comparison.files.values()))
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
    """Register ``scenetok compare``."""
    p = sub.add_parser("compare", help="one table + plots from several evaluated runs (or ablation folders)",
                       description="Read each run's recipe.yaml, eval/eval.json and metrics.jsonl (no "
                       "component is imported, so runs of uninstalled plugins compare too) and write "
                       "results.csv/json/md, metrics.png and loss.png.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories or ablation folders")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: the ablation folder if one is given, else ./comparison)")
    p.set_defaults(func=cmd_compare)
