"""``scenetok ablate``: run an ablation study (a base recipe + variants x seeds) as one command.

An ablation file is YAML and data only::

    ablation: sampler-swap                 # its name; an output folder holds one ablation
    description: rectified flow vs DDPM on the CPU rooms model
    base: ../quickstart.yaml               # relative to this file
    budget: {train.steps: 300, eval.max_scenes: 16}   # shared by every variant, never overridden
    seeds: 2                               # a count (seeds 0..K-1) or a list [0, 7]
    max_variants: 32                       # optional cap on the number of variants
    grid:                                  # the cartesian product of dotted keys ...
      sampler.name: [flow, ddpm]
    variants:                              # ... or labelled override sets (not both)
      flow: {}
      ddpm: {sampler.name: ddpm}

Every variant x seed is composed (base < budget < variant overrides < ``seed``) and validated
*before* anything runs; every problem is reported at once, each naming the file, the variant and
the key. Each run is an ordinary ``scenetok train`` + ``scenetok eval`` in its own run directory
(``OUT/<variant>/seed_<k>``) from a recipe file written there (``variant.yaml``), so a run can
also be launched by ``torchrun`` (``--launcher``). Runs are resumable: finished runs are skipped,
interrupted ones resume from their last checkpoint, a failed run is recorded in its
``status.json`` and the others continue. At the end :mod:`scenetok.compare` writes the tables
and plots into ``OUT``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import itertools
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scenetok.compare import flatten, format_value, comparable, compare_runs, recipe_changes
from scenetok.recipe import ABLATIONS_FOLDER, Recipe, RecipeError, compose, set_values, validate

log = logging.getLogger(__name__)

#: Variants an ablation may expand to unless its file states ``max_variants``.
DEFAULT_MAX_VARIANTS = 32
#: Keys of an ablation file.
ABLATION_KEYS = ("ablation", "description", "base", "budget", "seeds", "max_variants", "grid", "variants")
#: Written into the output folder: which ablation it holds.
MANIFEST = "ablation.json"
#: Written into each run directory.
VARIANT_RECIPE = "variant.yaml"
VARIANT_INFO = "variant.json"
STATUS = "status.json"
LOG = "ablate.log"
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]*$")


class AblationError(RecipeError):
    """Bad ablation input; ``errors`` holds one line per problem (file, variant and key)."""

    def __init__(self, errors: list[str]):
        super().__init__(errors)


# ----------------------------------------------------------------------------------------------
# The plan: every variant x seed, validated
# ----------------------------------------------------------------------------------------------


@dataclass
class Variant:
    """One arm of the ablation.

    Attributes:
        label: its name (also its folder under the output directory).
        overrides: the dotted keys it sets on top of the base recipe and the budget.
        changes: what differs from the base recipe, dotted key -> ``[base value, variant value]``
            (keys of a swapped component's node are summarised by the swap).
        summary: ``changes`` in one line, for tables.
        notes: the swap notes of its recipe (what was kept and dropped).
        parameters: trainable parameters (token compressor + decoder), ``None`` if not counted.
    """

    label: str
    overrides: dict[str, Any]
    changes: dict[str, list[Any]] = field(default_factory=dict)
    summary: str = ""
    notes: list[str] = field(default_factory=list)
    parameters: int | None = None


@dataclass
class PlannedRun:
    """One variant trained with one seed.

    Attributes:
        variant: the variant's label.
        seed: the recipe seed.
        run_dir: its run directory.
        recipe: the validated recipe.
        resolved: ``recipe.resolved()``, the content of ``variant.yaml``.
    """

    variant: str
    seed: int
    run_dir: Path
    recipe: Recipe
    resolved: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.variant}/seed_{self.seed}"

    @property
    def steps(self) -> int:
        return int(self.resolved["train"]["steps"])


@dataclass
class Ablation:
    """A validated ablation: its variants and every run."""

    name: str
    file: Path
    description: str
    base: Path
    budget: dict[str, Any]
    seeds: list[int]
    base_recipe: dict[str, Any]
    variants: list[Variant]
    runs: list[PlannedRun]


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise AblationError([f"{path}: ablation file not found"]) from None
    except yaml.YAMLError as error:
        raise AblationError([f"{path}: not valid YAML: {str(error).splitlines()[0]}"]) from None
    if not isinstance(data, dict):
        raise AblationError([f"{path}: an ablation file must be a mapping at the top level"])
    return data


def _dotted_mapping(value: Any, where: str, errors: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errors.append(f"{where}: must be a mapping of dotted keys (section.key: value), got {value!r}")
        return {}
    out = {}
    for key, sub in value.items():
        if not isinstance(key, str) or "." not in key or any(not p for p in key.split(".")):
            errors.append(f"{where}: key {key!r} must be dotted, like decoder.depth or sampler.name")
            continue
        out[key] = sub
    return out


def _short(key: str, keys: Iterable[str]) -> str:
    """``sampler.name`` -> ``sampler``; ``token_compressor.num_tokens`` -> ``num_tokens`` unless
    two grid keys share that last part."""
    parts = key.split(".")
    if parts[-1] == "name":
        return ".".join(parts[:-1])
    last = parts[-1]
    return last if sum(1 for k in keys if k.split(".")[-1] == last) == 1 else key


def expand_variants(data: Mapping[str, Any], file: Path, errors: list[str], max_variants: int) -> list[Variant]:
    """The variants of an ablation file: a grid's cartesian product or the labelled list."""
    grid, listed = data.get("grid"), data.get("variants")
    if grid is not None and listed is not None:
        errors.append(f"{file}: grid/variants: give either a grid or a list of variants, not both")
        return []
    if grid is None and listed is None:
        errors.append(f"{file}: grid/variants: missing; give `grid: {{key: [values]}}` or "
                      "`variants: {label: {key: value}}`")
        return []
    variants: list[Variant] = []
    if grid is not None:
        axes = _dotted_mapping(grid, f"{file}: grid", errors)
        for key, values in axes.items():
            if not isinstance(values, list):
                errors.append(f"{file}: grid.{key}: must be a list of values, got {values!r}")
                return []
        count = 1
        for values in axes.values():
            count *= len(values)
        if not axes or count == 0:
            empty = [k for k, v in axes.items() if not v]
            errors.append(f"{file}: grid: expands to 0 variants" + (f" ({', '.join(empty)}: empty list)" if empty else ""))
            return []
        if count > max_variants:
            errors.append(f"{file}: grid: expands to {count} variants, more than max_variants={max_variants}")
            return []
        keys = list(axes)
        for combination in itertools.product(*axes.values()):
            label = ",".join(f"{_short(k, keys)}={format_value(v)}" for k, v in zip(keys, combination))
            variants.append(Variant(label=re.sub(r"[^A-Za-z0-9._=,+-]", "_", label),
                                    overrides=dict(zip(keys, combination))))
    else:
        if not isinstance(listed, Mapping):
            errors.append(f"{file}: variants: must map labels to override sets, e.g. "
                          "`variants: {ddpm: {sampler.name: ddpm}}`")
            return []
        if not listed:
            errors.append(f"{file}: variants: expands to 0 variants")
            return []
        if len(listed) > max_variants:
            errors.append(f"{file}: variants: {len(listed)} variants, more than max_variants={max_variants}")
            return []
        for label, overrides in listed.items():
            if not isinstance(label, str) or not _LABEL.match(label):
                errors.append(f"{file}: variants.{label}: a label must be letters, digits and ._=,+- "
                              "(it names the variant's folder)")
                continue
            variants.append(Variant(label=label, overrides=_dotted_mapping(
                overrides, f"{file}: variant {label!r}", errors)))
    return variants


def _seeds(value: Any, file: Path, errors: list[str]) -> list[int]:
    if value is None:
        return [0]
    if isinstance(value, bool):
        errors.append(f"{file}: seeds: must be a count or a list of integers, got {value!r}")
        return []
    if isinstance(value, int):
        if value < 1:
            errors.append(f"{file}: seeds: must be >= 1, got {value}")
            return []
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value):
            errors.append(f"{file}: seeds: repeated seed in {value}")
            return []
        return list(value)
    errors.append(f"{file}: seeds: must be a count or a non-empty list of integers, got {value!r}")
    return []


def _compose_run(base: Path, budget: Mapping[str, Any], overrides: Mapping[str, Any], seed: int | None,
                 file: Path, label: str | None) -> Recipe:
    composed = compose(base)
    set_values(composed, budget.items(), origin=f"{file} (budget)")
    if label is not None:
        set_values(composed, overrides.items(), origin=f"{file} (variant {label})")
    if seed is not None:
        set_values(composed, [("seed", seed)], origin=f"{file} (seeds)")
    return validate(composed, log_notes=False)


def find_ablation(path_or_name: str | Path) -> Path:
    """An ablation file: ``path_or_name`` itself when it exists, else a shipped one by name
    (``sampler`` or ``ablations/sampler`` = ``scenetok/recipes/ablations/sampler.yaml``)."""
    path = Path(path_or_name)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        return path
    shipped = Path(__file__).resolve().parent / "recipes" / ABLATIONS_FOLDER
    name = str(path_or_name).removeprefix(f"{ABLATIONS_FOLDER}/")
    candidate = shipped / f"{name}.yaml"
    if candidate.exists():
        return candidate
    names = sorted(p.stem for p in shipped.glob("*.yaml") if "ablation:" in p.read_text())
    raise AblationError([f"{path_or_name}: neither a file nor a shipped ablation; shipped: {', '.join(names)}"])


def load_ablation(path: str | Path, out_dir: str | Path, seeds: int | None = None,
                  count_parameters: bool = True) -> Ablation:
    """Read an ablation file (or a shipped one by name) and validate every variant x seed; raises
    :class:`AblationError` with *every* problem (file, variant and key in each line) before
    anything is run or written."""
    file = find_ablation(path)
    data = _read_file(file)
    errors: list[str] = []
    for key in data:
        if key not in ABLATION_KEYS:
            errors.append(f"{file}: {key}: unknown key; an ablation file has {', '.join(ABLATION_KEYS)}")
    name = data.get("ablation")
    if not isinstance(name, str) or not _LABEL.match(name):
        errors.append(f"{file}: ablation: required, a name of letters, digits and ._- (got {name!r})")
        name = str(name)
    base_value = data.get("base")
    base = None
    if not isinstance(base_value, str):
        errors.append(f"{file}: base: required, the path of the base recipe (relative to this file)")
    else:
        base = Path(os.path.normpath(file.parent / base_value))
        if not base.exists():
            errors.append(f"{file}: base: {base_value!r} not found (looked for {base})")
            base = None
    max_variants = data.get("max_variants", DEFAULT_MAX_VARIANTS)
    if not isinstance(max_variants, int) or isinstance(max_variants, bool) or max_variants < 1:
        errors.append(f"{file}: max_variants: must be an integer >= 1, got {max_variants!r}")
        max_variants = DEFAULT_MAX_VARIANTS
    budget = _dotted_mapping(data.get("budget"), f"{file}: budget", errors)
    seed_list = list(range(seeds)) if seeds is not None else _seeds(data.get("seeds"), file, errors)
    if seeds is not None and seeds < 1:
        errors.append(f"--seeds: must be >= 1, got {seeds}")
    variants = expand_variants(data, file, errors, max_variants)
    labels = [v.label for v in variants]
    for label in sorted({lab for lab in labels if labels.count(lab) > 1}):
        errors.append(f"{file}: variant {label!r}: label used twice")
    for variant in variants:
        for key in variant.overrides:
            if key in budget:
                errors.append(f"{file}: variant {variant.label!r}: {key}: set by the shared budget; "
                              "every variant trains and is evaluated with the same budget")
            if key in ("seed", "train.minutes"):
                errors.append(f"{file}: variant {variant.label!r}: {key}: not a variant setting "
                              "(seeds come from `seeds`, the budget from `budget`)")
    if errors or base is None:
        raise AblationError(errors)

    out = Path(out_dir)
    try:
        base_recipe = _compose_run(base, budget, {}, None, file, None)
    except RecipeError as error:
        raise AblationError([f"{file}: base: {e}".replace(f"{file} (budget): ", "budget: ")
                             for e in error.errors]) from None
    base_resolved = base_recipe.resolved()
    if base_resolved["train"]["minutes"]:
        errors.append(f"{file}: budget: train.minutes: a wall-clock budget gives arms different step counts; "
                      "set train.steps (and train.minutes: 0)")
    runs: list[PlannedRun] = []
    seen: dict[str, str] = {}
    for variant in variants:
        try:
            recipe = _compose_run(base, budget, variant.overrides, seed_list[0], file, variant.label)
        except RecipeError as error:
            for e in error.errors:
                # Keys the ablation file set name it once, up front; keys of the base recipe keep their file.
                e = e.replace(f"{file} (variant {variant.label}): ", "").replace(f"{file} (budget): ", "budget: ")
                errors.append(f"{file}: variant {variant.label!r}: {e}")
            continue
        resolved = recipe.resolved()
        key = json.dumps(comparable(resolved), sort_keys=True, default=str)
        if key in seen:
            errors.append(f"{file}: variant {variant.label!r}: resolves to the same recipe as variant "
                          f"{seen[key]!r} (overrides: {variant.overrides})")
            continue
        seen[key] = variant.label
        variant.changes, variant.summary = recipe_changes(base_resolved, resolved)
        variant.notes = list(recipe.notes)
        if count_parameters:
            variant.parameters = _parameters(recipe)
        for seed in seed_list:
            if seed != seed_list[0]:
                recipe = _compose_run(base, budget, variant.overrides, seed, file, variant.label)
                resolved = recipe.resolved()
            runs.append(PlannedRun(variant.label, seed, out / variant.label / f"seed_{seed}", recipe, resolved))
    if errors:
        raise AblationError(errors)
    return Ablation(name=name, file=file, description=str(data.get("description", "")), base=base,
                    budget=budget, seeds=seed_list, base_recipe=base_resolved, variants=variants, runs=runs)


def _parameters(recipe: Recipe) -> int | None:
    """Trainable parameters (built on the meta device: no memory, no weights read)."""
    from scenetok.model import summary  # lazy: imports torch

    try:
        return int(summary(recipe)["trainable_parameters"])
    except Exception as error:  # noqa: BLE001 - a count is informative; the run reports real errors
        log.warning("could not count the parameters of %s: %s", recipe.source, error)
        return None


# ----------------------------------------------------------------------------------------------
# The output folder
# ----------------------------------------------------------------------------------------------


def check_out_dir(ablation: Ablation, out_dir: Path) -> None:
    """Refuse an output folder that holds something else: another ablation, files that are not
    an ablation's, or a run trained with a different recipe. Reads only."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise AblationError([f"{out_dir}: exists and is not a folder"])
    manifest = out_dir / MANIFEST
    if not manifest.exists():
        if any(out_dir.iterdir()):
            raise AblationError([f"{out_dir}: holds files that are not from `scenetok ablate` ({MANIFEST} "
                                 f"missing); choose another --out for ablation {ablation.name!r} ({ablation.file})"])
        return
    try:
        stored = json.loads(manifest.read_text())
    except (OSError, ValueError) as error:
        raise AblationError([f"{manifest}: unreadable ({error}); choose another --out"]) from None
    if stored.get("ablation") != ablation.name:
        raise AblationError([f"{out_dir}: holds runs of ablation {stored.get('ablation')!r}, not "
                             f"{ablation.name!r} ({ablation.file}); choose another --out"])
    from scenetok.train.loop import RESUMABLE_CHANGES  # lazy: imports torch; what a resumed run may change

    errors = []
    for run in ablation.runs:
        path = run.run_dir / VARIANT_RECIPE
        if not path.exists():
            continue
        old = flatten(comparable(yaml.safe_load(path.read_text()) or {}))
        new = flatten(comparable(run.resolved))
        for key in dict.fromkeys([*old, *new]):
            section, _, sub = key.partition(".")
            if old.get(key) != new.get(key) and not (section == "train" and sub in RESUMABLE_CHANGES):
                errors.append(f"{ablation.file}: variant {run.variant!r}: {key}: {out_dir / run.name} was run "
                              f"with {old.get(key)!r}, the ablation now gives {new.get(key)!r}; "
                              "choose another --out")
                break
    if errors:
        raise AblationError(errors)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def read_status(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / STATUS
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {}


def is_finished(run: PlannedRun) -> bool:
    """Trained to the planned step and evaluated (``status.json`` and ``eval/eval.json`` agree)."""
    status = read_status(run.run_dir)
    eval_json = run.run_dir / "eval" / "eval.json"
    if status.get("state") != "done" or not eval_json.exists():
        return False
    try:
        step = json.loads(eval_json.read_text())["metadata"]["step"]
    except (ValueError, KeyError):
        return False
    return step == run.steps


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------


class RunFailed(RuntimeError):
    """A run's train or eval did not complete."""


class SubprocessRunner:
    """Each run as ``scenetok train`` then ``scenetok eval`` in child processes (output in the run's
    ``ablate.log``). ``launcher`` prefixes the train command, e.g. ``torchrun --nproc_per_node 8``
    (the module is then started with ``-m scenetok.cli``)."""

    def __init__(self, launcher: str | None = None, threads: int | None = None):
        self.launcher = shlex.split(launcher) if launcher else [sys.executable]
        self.threads = threads

    def _run(self, command: list[str], run: PlannedRun, what: str) -> None:
        env = dict(os.environ)
        if self.threads and "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = str(self.threads)  # N runs at once share the cores
        log_path = run.run_dir / LOG
        with log_path.open("a") as out:
            out.write(f"$ {shlex.join(command)}\n")
            out.flush()
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
            try:
                code = process.wait()
            except KeyboardInterrupt:
                # Ctrl-C reached the child too: let it finish its step and write its checkpoint.
                try:
                    process.wait(timeout=300)
                except subprocess.TimeoutExpired:
                    process.kill()
                raise
        if code != 0:
            lines = [line for line in log_path.read_text().splitlines() if line.strip()]
            raise RunFailed(f"{what} exited with status {code}: {lines[-1] if lines else ''} (log: {log_path})")

    def commands(self, run: PlannedRun) -> list[list[str]]:
        recipe = str(run.run_dir / VARIANT_RECIPE)
        return [
            [*self.launcher, "-m", "scenetok.cli", "train", recipe, "--run-dir", str(run.run_dir), "--no-progress"],
            [sys.executable, "-m", "scenetok.cli", "eval", str(run.run_dir), "--no-progress"],
        ]

    def train(self, run: PlannedRun) -> None:
        self._run(self.commands(run)[0], run, "train")

    def evaluate(self, run: PlannedRun) -> None:
        self._run(self.commands(run)[1], run, "eval")


class InProcessRunner:
    """Each run in this process (notebooks, tests): same steps, no process start-up."""

    def train(self, run: PlannedRun) -> None:
        from scenetok.train.loop import train_recipe  # lazy: imports torch

        result = train_recipe(run.run_dir / VARIANT_RECIPE, run_dir=run.run_dir, progress=False)
        if result.reason not in ("finished", "budget", "interrupted"):
            raise RunFailed(f"train stopped: {result.reason}")

    def evaluate(self, run: PlannedRun) -> None:
        from scenetok.eval.evaluate import evaluate_run  # lazy: imports torch

        evaluate_run(run.run_dir, progress=False)


def _steps_reached(run: PlannedRun) -> int | None:
    eval_json = run.run_dir / "eval" / "eval.json"
    try:
        return int(json.loads(eval_json.read_text())["metadata"]["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def execute(run: PlannedRun, runner: Any, variant: Variant, ablation: Ablation,
            stop: threading.Event | None = None) -> dict[str, Any]:
    """Train (resuming from the last checkpoint) and evaluate one run; record the outcome in its
    ``status.json``. Never raises for a failed run; after ``stop`` is set it does not evaluate."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    if not (run.run_dir / VARIANT_RECIPE).exists() or yaml.safe_load(
            (run.run_dir / VARIANT_RECIPE).read_text()) != run.resolved:
        (run.run_dir / VARIANT_RECIPE).write_text(yaml.safe_dump(run.resolved, sort_keys=False))
    _write_json(run.run_dir / VARIANT_INFO, {
        "ablation": ablation.name, "file": str(ablation.file), "variant": variant.label, "seed": run.seed,
        "overrides": variant.overrides, "changes": variant.changes, "summary": variant.summary,
        "parameters": variant.parameters, "notes": variant.notes, "base_recipe": ablation.base_recipe,
    })
    status = read_status(run.run_dir)
    status.update({"state": "running", "attempts": int(status.get("attempts", 0)) + 1, "error": None})
    _write_json(run.run_dir / STATUS, status)
    try:
        started = time.monotonic()
        runner.train(run)
        status["train_seconds"] = round(float(status.get("train_seconds", 0.0)) + time.monotonic() - started, 2)
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt
        started = time.monotonic()
        runner.evaluate(run)
        status["eval_seconds"] = round(time.monotonic() - started, 2)
        step = _steps_reached(run)
        if step != run.steps:
            status.update(state="interrupted", error=f"stopped at step {step} of {run.steps}; run again to resume")
        else:
            status.update(state="done", steps=step)
    except KeyboardInterrupt:
        status.update(state="interrupted", error="interrupted; run again to resume from the last checkpoint")
        _write_json(run.run_dir / STATUS, status)
        raise
    except Exception as error:  # noqa: BLE001 - one failed run must not stop the others
        log.error("%s failed: %s", run.name, error)
        status.update(state="failed", error=f"{type(error).__name__}: {error}".splitlines()[0])
    _write_json(run.run_dir / STATUS, status)
    return status


@dataclass
class AblationResult:
    out_dir: Path
    statuses: dict[str, dict[str, Any]]  # run name -> status
    skipped: list[str]
    comparison: Any = None

    @property
    def failed(self) -> list[str]:
        return [name for name, status in self.statuses.items() if status.get("state") != "done"]


def run_ablation(ablation: Ablation, out_dir: str | Path, jobs: int = 1, runner: Any = None,
                 on_status: Callable[[PlannedRun, dict[str, Any]], None] | None = None) -> AblationResult:
    """Run every unfinished run of ``ablation`` (``jobs`` at a time), then compare them."""
    out = Path(out_dir)
    check_out_dir(ablation, out)
    runner = runner or SubprocessRunner(threads=max(1, (os.cpu_count() or 1) // max(1, jobs)) if jobs > 1 else None)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / MANIFEST, {
        "ablation": ablation.name, "file": str(ablation.file), "description": ablation.description,
        "base": str(ablation.base), "budget": ablation.budget, "seeds": ablation.seeds,
        "base_recipe": ablation.base_recipe,
        "variants": [dataclasses.asdict(v) for v in ablation.variants],
        "runs": [run.name for run in ablation.runs],
    })
    variants = {v.label: v for v in ablation.variants}
    statuses: dict[str, dict[str, Any]] = {}
    skipped = []
    todo = []
    for run in ablation.runs:
        if is_finished(run):
            skipped.append(run.name)
            statuses[run.name] = read_status(run.run_dir)
        else:
            todo.append(run)
    if skipped:
        log.info("skipping %d finished run(s): %s", len(skipped), ", ".join(skipped))
    lock = threading.Lock()
    stop = threading.Event()  # set by Ctrl-C: start nothing new, evaluate nothing half-trained

    def one(run: PlannedRun) -> None:
        if stop.is_set():
            return
        log.info("running %s (%d steps) in %s", run.name, run.steps, run.run_dir)
        try:
            status = execute(run, runner, variants[run.variant], ablation, stop)
        except KeyboardInterrupt:
            stop.set()
            raise
        with lock:
            statuses[run.name] = status
            if on_status:
                on_status(run, status)

    try:
        if jobs <= 1:
            for run in todo:
                one(run)
        else:
            with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(one, run) for run in todo]
                try:
                    for future in futures:
                        future.result()
                except KeyboardInterrupt:
                    stop.set()
                    raise
    except KeyboardInterrupt:
        log.warning("interrupted: run the same command again to resume")
        raise
    title = f"ablation {ablation.name}" + (f": {ablation.description}" if ablation.description else "")
    comparison = compare_runs([run.run_dir for run in ablation.runs], out, title=title)
    return AblationResult(out, statuses, skipped, comparison)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def format_plan(ablation: Ablation, runner: SubprocessRunner | None = None) -> str:
    """The ``--dry-run`` text: each variant, what it changes, its notes, parameters and runs."""
    budget = ", ".join(f"{k}={format_value(v)}" for k, v in ablation.budget.items()) or "the base recipe's"
    lines = [
        f"ablation {ablation.name!r} ({ablation.file}): {len(ablation.variants)} variants x "
        f"{len(ablation.seeds)} seed(s) = {len(ablation.runs)} runs",
        f"  base: {ablation.base}   budget: {budget}   train.steps: {ablation.base_recipe['train']['steps']}",
    ]
    width = max(len(v.label) for v in ablation.variants)
    for variant in ablation.variants:
        params = f"{variant.parameters:,}" if variant.parameters is not None else "?"
        lines.append(f"  {variant.label:<{width}}  {params:>12} trainable params  {variant.summary}")
        for note in variant.notes:
            lines.append(f"  {'':<{width}}  note: {note}")
    lines.append("runs:")
    for run in ablation.runs:
        state = "finished, skipped" if is_finished(run) else (read_status(run.run_dir).get("state") or "new")
        lines.append(f"  {run.run_dir}  ({state})")
        if runner is not None:
            for command in runner.commands(run):
                lines.append(f"      $ {shlex.join(command)}")
    return "\n".join(lines)


def cmd_ablate(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        print(f"scenetok ablate: error: --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    try:
        ablation = load_ablation(args.file, args.out, seeds=args.seeds)
        check_out_dir(ablation, args.out)
    except AblationError as error:
        for line in error.errors:
            print(f"scenetok ablate: error: {line}", file=sys.stderr)
        return 2
    runner = SubprocessRunner(args.launcher, threads=max(1, (os.cpu_count() or 1) // args.jobs)
                              if args.jobs > 1 else None)
    if args.dry_run:
        print(format_plan(ablation, runner))
        return 0
    started = time.monotonic()
    result = run_ablation(ablation, args.out, jobs=args.jobs, runner=runner)
    minutes = (time.monotonic() - started) / 60
    print(result.comparison.markdown if result.comparison else "")
    print(f"\n{len(ablation.runs)} runs ({len(result.skipped)} already finished) in {minutes:.1f} min; "
          f"results in {args.out}")
    for name in result.failed:
        status = result.statuses[name]
        print(f"  {status.get('state')}: {name}: {status.get('error')}", file=sys.stderr)
    return 1 if result.failed else 0


def add_command(sub: argparse._SubParsersAction) -> None:
    """Register ``scenetok ablate``."""
    p = sub.add_parser("ablate", help="run an ablation study: base recipe + variants x seeds, then compare",
                       description="Validate every variant of an ablation file, train and evaluate each "
                       "variant x seed in OUT/<variant>/seed_<k> (resumable; a failed run is recorded and "
                       "the others continue), then write results.csv/json/md and plots into OUT.")
    p.add_argument("file", help="ablation YAML (base recipe + grid or variants, seeds, budget), or the "
                   "name of a shipped one: sampler, tokens, compressor (recipes/ablations/)")
    p.add_argument("--out", type=Path, required=True, help="output folder (one ablation per folder)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (child processes)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per variant (0..K-1), instead of the file's")
    p.add_argument("--dry-run", action="store_true", help="print the resolved variants, what each changes, "
                   "parameter counts and the commands; run nothing, write nothing")
    p.add_argument("--launcher", default=None, help="prefix of each train command instead of this Python, "
                   "e.g. 'torchrun --nproc_per_node 8' (started as `-m scenetok.cli train ...`)")
    p.set_defaults(func=cmd_ablate)
