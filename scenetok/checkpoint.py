"""Atomic, code-free checkpoints that resume a run exactly.

On-disk layout (one directory per checkpoint, nothing pickled)::

    <run_dir>/checkpoints/
        step_000123/
            model.safetensors      one safetensors file per tensor group ("model", "ema", ...)
            ema.safetensors
            state.json             non-tensor state; tensors replaced by {"__tensor__": key}
            state.safetensors      the tensors referenced from state.json (optimizer moments, RNG, ...)
            recipe.json            the resolved recipe of the run
            manifest.json          format version, step, groups, and size + sha256 of every file above
        latest                     text file naming the newest complete checkpoint directory

Writing goes to a hidden temporary directory that is fsynced and then renamed into place, so a
run killed at any moment leaves either the previous checkpoint set or the new one, never a
half-written ``step_*`` directory. ``latest`` is replaced atomically after the rename. If a
checkpoint is damaged anyway (disk full, a copy cut short), :func:`load_checkpoint` on a run
directory notices it through the manifest and falls back to the previous one with a warning that
names the file.

Only the process that owns the run directory (rank 0 under DDP) may call :func:`save_checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CHECKPOINTS_DIRNAME = "checkpoints"
LATEST_POINTER = "latest"
MANIFEST = "manifest.json"
STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"
RECIPE_JSON = "recipe.json"
#: Group name reserved for the tensors found inside ``state``.
_RESERVED_GROUPS = frozenset({"state"})
_STEP_DIR = re.compile(r"^step_(\d+)$")
_GROUP_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupt (the message names the file)."""


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        step: the optimisation step the checkpoint was taken after.
        tensors: tensor groups as saved, e.g. ``{"model": state_dict, "ema": state_dict}``.
        state: the non-weight state as saved (optimizer state dict, RNG states, ...), with every
            tensor, tuple, non-string dict key and numpy array restored to its original type.
        recipe: the resolved recipe stored with the checkpoint.
        path: the checkpoint directory.
    """

    step: int
    tensors: dict[str, dict[str, Tensor]]
    state: dict[str, Any]
    recipe: dict[str, Any]
    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Nested state <-> (JSON, flat tensors)
# --------------------------------------------------------------------------------------
# JSON cannot hold tensors, tuples, integer dict keys (optimizer state is keyed by parameter index)
# or numpy arrays, and a resume is only bit-exact if all of them come back unchanged. Each such
# value is replaced by a small tagged object; tensors move to a flat dict saved with safetensors.

_TENSOR_TAG = "__tensor__"
_NDARRAY_TAG = "__ndarray__"
_TUPLE_TAG = "__tuple__"
_ITEMS_TAG = "__items__"
_FLOAT_TAG = "__float__"
_TAGS = (_TENSOR_TAG, _NDARRAY_TAG, _TUPLE_TAG, _ITEMS_TAG, _FLOAT_TAG)


def flatten_state(state: Any) -> tuple[Any, dict[str, Tensor]]:
    """Split a nested structure into a JSON-serialisable skeleton and a flat tensor dict.

    Supports dicts (any hashable JSON-scalar keys), lists, tuples, str/int/float/bool/None,
    torch tensors (any device; saved from CPU), numpy arrays and numpy scalars. Works for
    ``optimizer.state_dict()``, ``lr_scheduler.state_dict()`` and :func:`capture_rng_state`.

    Returns:
        ``(skeleton, tensors)``; :func:`unflatten_state` inverts it exactly.

    Raises:
        TypeError: for any other type, naming where in the structure it was found.
    """
    tensors: dict[str, Tensor] = {}

    def encode(value: Any, where: str) -> Any:
        if isinstance(value, Tensor):
            key = f"t{len(tensors):06d}"
            tensors[key] = value.detach()
            return {_TENSOR_TAG: key}
        if isinstance(value, np.ndarray):
            key = f"t{len(tensors):06d}"
            # copy: from_numpy would share (and keep alive) the caller's buffer
            tensors[key] = torch.from_numpy(np.ascontiguousarray(value).copy())
            return {_NDARRAY_TAG: key}
        if isinstance(value, (bool, str)) or value is None:
            return value
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating)):
            value = float(value)
            # JSON has no inf/nan; keep them exactly through a tagged string
            return value if math.isfinite(value) else {_FLOAT_TAG: repr(value)}
        if isinstance(value, tuple):
            return {_TUPLE_TAG: [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, Mapping):
            if all(isinstance(k, str) for k in value) and not any(k in _TAGS for k in value):
                return {k: encode(v, f"{where}.{k}") for k, v in value.items()}
            for k in value:
                if not isinstance(k, (str, int, float, bool)) and k is not None:
                    raise TypeError(
                        f"state{where}: dict key {k!r} of type {type(k).__name__} is not supported"
                    )
            return {_ITEMS_TAG: [[encode(k, where), encode(v, f"{where}[{k!r}]")] for k, v in value.items()]}
        raise TypeError(
            f"state{where}: values of type {type(value).__name__} cannot be checkpointed "
            "(use tensors, numpy arrays, numbers, strings, lists, tuples and dicts)"
        )

    return encode(state, ""), tensors


def unflatten_state(skeleton: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""

    def decode(value: Any) -> Any:
        if isinstance(value, list):
            return [decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((tag, payload),) = value.items()
            if tag == _TENSOR_TAG:
                return tensors[payload]
            if tag == _NDARRAY_TAG:
                return tensors[payload].numpy().copy()
            if tag == _TUPLE_TAG:
                return tuple(decode(v) for v in payload)
            if tag == _ITEMS_TAG:
                return {decode(k): decode(v) for k, v in payload}
            if tag == _FLOAT_TAG:
                return float(payload)
        return {k: decode(v) for k, v in value.items()}

    return decode(skeleton)


# --------------------------------------------------------------------------------------
# RNG state
# --------------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """The state of every global random generator: python ``random``, numpy, torch CPU and CUDA.

    The result goes into ``save_checkpoint(state={"rng": ...})``; :func:`restore_rng_state`
    makes the next random numbers identical to the ones the saving process would have drawn.
    Per-rank differences under DDP are the caller's business (capture on each rank if needed).
    """
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": name,
            "keys": np.asarray(keys),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        # get_rng_state_all initialises CUDA; only touch it when CUDA is usable anyway
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured (after a checkpoint round trip too)."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["bit_generator"],
            np.asarray(numpy_state["keys"], dtype=np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].to(device="cpu", dtype=torch.uint8))
    cuda_states = list(state.get("cuda", []))
    if cuda_states:
        if not torch.cuda.is_available():
            logger.warning("checkpoint holds CUDA RNG states but CUDA is unavailable; not restored")
        else:
            count = torch.cuda.device_count()
            if count != len(cuda_states):
                logger.warning(
                    "checkpoint holds %d CUDA RNG states, this machine has %d devices; restoring %d",
                    len(cuda_states),
                    count,
                    min(count, len(cuda_states)),
                )
            for device, rng in enumerate(cuda_states[:count]):
                torch.cuda.set_rng_state(rng.to(device="cpu", dtype=torch.uint8), device)


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    # Directory fsync makes the rename itself durable; not supported on every platform.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _safetensors_ready(group: str, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous tensors with no two sharing memory (safetensors refuses shared storage).

    Tied weights come back as two equal tensors, which ``load_state_dict`` handles. Only tensors
    that need it are copied, so saving a large model does not double its memory.
    """
    ready: dict[str, Tensor] = {}
    seen_storages: set[tuple[str, int]] = set()
    for name, tensor in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor group {group!r}: key {name!r} is not a string")
        if not isinstance(tensor, Tensor):
            raise TypeError(f"tensor group {group!r}: {name!r} is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach()
        storage = tensor.untyped_storage()
        storage_id = (str(tensor.device), storage.data_ptr())
        whole_storage = tensor.is_contiguous() and tensor.numel() * tensor.element_size() == storage.nbytes()
        if storage.nbytes() > 0 and (storage_id in seen_storages or not whole_storage):
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        elif storage.nbytes() > 0:
            seen_storages.add(storage_id)
        ready[name] = tensor.to("cpu")
    return ready


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_mode() -> int:
    """The mode a plain ``open(..., "w")`` would give a new file under the current umask."""
    return 0o666 & ~_umask()


def _save_tensors(tensors: Mapping[str, Tensor], path: Path) -> None:
    """``safetensors.save_file`` whose write failures (a full disk) are :class:`CheckpointError`
    naming the file, not a bare ``SafetensorError``."""
    try:
        save_file(tensors, str(path))
    except (SafetensorError, OSError) as error:
        free = shutil.disk_usage(path.parent).free
        raise CheckpointError(f"{path}: could not be written ({error}); {free / 2**20:.0f} MiB free on that "
                              "disk. The previous checkpoints are untouched.") from error


def _step_dirname(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete-looking checkpoint directories of a run (or of a ``checkpoints/`` dir), oldest first.

    Ordered by the step number, not by name or time; hidden temporary directories are ignored.
    """
    root = Path(run_dir)
    if (root / CHECKPOINTS_DIRNAME).is_dir():
        root = root / CHECKPOINTS_DIRNAME
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    step: int,
    tensors: Mapping[str, Mapping[str, Tensor]],
    state: Mapping[str, Any] | None = None,
    recipe: Mapping[str, Any] | None = None,
    *,
    keep_last: int | None = 3,
) -> Path:
    """Write ``<run_dir>/checkpoints/step_<step>/`` atomically, update ``latest``, prune old ones.

    Args:
        run_dir: the run directory (``checkpoints/`` is created inside it).
        step: optimisation step, ``>= 0``. Saving the same step again replaces that checkpoint.
        tensors: tensor groups, ``{"model": model.state_dict(), "ema": ema.state_dict()}``; each
            group becomes ``<group>.safetensors``. Tensors may live on any device, be
            non-contiguous or share memory (tied weights).
        state: everything else needed to resume: ``optimizer.state_dict()``,
            ``scheduler.state_dict()``, :func:`capture_rng_state`, counters... Any mix of
            tensors and JSON-like values (see :func:`flatten_state`).
        recipe: the resolved recipe (plain dict, JSON-serialisable).
        keep_last: keep only this many newest checkpoints (``None`` keeps all).

    Returns:
        The final checkpoint directory.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
    for group in tensors:
        if group in _RESERVED_GROUPS or not _GROUP_NAME.match(group):
            raise ValueError(
                f"tensor group name {group!r} is reserved or not a plain file name ([A-Za-z0-9_.-])"
            )

    checkpoints_dir = Path(run_dir) / CHECKPOINTS_DIRNAME
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final_dir = checkpoints_dir / _step_dirname(step)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".tmp-{final_dir.name}-", dir=checkpoints_dir))
    mode = _default_mode()
    try:
        os.chmod(tmp_dir, mode | 0o111 & ~_umask())  # mkdtemp makes 0700; a checkpoint is shared like any file
        files: dict[str, dict[str, Any]] = {}

        def record(name: str) -> None:
            path = tmp_dir / name
            os.chmod(path, mode)
            _fsync_file(path)
            files[name] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}

        for group, group_tensors in tensors.items():
            _save_tensors(_safetensors_ready(group, group_tensors), tmp_dir / f"{group}.safetensors")
            record(f"{group}.safetensors")

        skeleton, state_tensors = flatten_state(dict(state or {}))
        _save_tensors(_safetensors_ready("state", state_tensors), tmp_dir / STATE_TENSORS)
        record(STATE_TENSORS)
        (tmp_dir / STATE_JSON).write_text(json.dumps(skeleton, allow_nan=False))
        record(STATE_JSON)
        (tmp_dir / RECIPE_JSON).write_text(
            json.dumps(dict(recipe or {}), indent=2, sort_keys=False, default=str)
        )
        record(RECIPE_JSON)

        manifest = {
            "format_version": FORMAT_VERSION,
            "step": int(step),
            "groups": list(tensors),
            "created_unix": time.time(),
            "files": files,
        }
        (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
        os.chmod(tmp_dir / MANIFEST, mode)
        _fsync_file(tmp_dir / MANIFEST)
        _fsync_dir(tmp_dir)

        if final_dir.exists() and not _looks_complete(final_dir):
            # A damaged checkpoint of the same step (the run fell back past it): kept for
            # inspection like the newer ones of an abandoned timeline, never deleted.
            stale = checkpoints_dir / f"stale-{final_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            logger.warning("%s is damaged; renamed to %s before writing step %d again", final_dir, stale.name, step)
            os.replace(final_dir, stale)
        if final_dir.exists():
            # Re-saving a step (e.g. after a resume): move the old one aside first because a
            # directory cannot be renamed over a non-empty one.
            trash = Path(tempfile.mkdtemp(prefix=f".old-{final_dir.name}-", dir=checkpoints_dir))
            os.replace(final_dir, trash / final_dir.name)
            os.replace(tmp_dir, final_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp_dir, final_dir)
        _fsync_dir(checkpoints_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise

    _retire_newer_checkpoints(checkpoints_dir, step)
    _write_latest_pointer(checkpoints_dir)
    if keep_last is not None:
        _prune(checkpoints_dir, keep_last)
    logger.info("saved checkpoint %s", final_dir)
    return final_dir


def _looks_complete(checkpoint_dir: Path) -> bool:
    """Whether a checkpoint directory loads (manifest, sizes, hashes, every file parses). Only
    asked when a step is written a second time, which happens after a run fell back past a
    checkpoint that did not load: such a one is kept as ``stale-*`` evidence, never deleted."""
    try:
        _load_dir(checkpoint_dir, "cpu", verify_hashes=True)
    except (CheckpointError, OSError):
        return False
    return True


def _retire_newer_checkpoints(checkpoints_dir: Path, step: int) -> None:
    """Rename checkpoints with a higher step than the one just written to ``stale-step_*``.

    They belong to an abandoned timeline: the run resumed from an earlier checkpoint (because the
    newer one was damaged, or on purpose). Left in place they would be taken for the newest
    checkpoint by the next resume and by pruning; renamed, they are ignored but not deleted.
    """
    for newer in list_checkpoints(checkpoints_dir):
        if int(_STEP_DIR.match(newer.name).group(1)) > step:
            stale = checkpoints_dir / f"stale-{newer.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            logger.warning(
                "%s is newer than the checkpoint just written (step %d); renamed to %s",
                newer,
                step,
                stale.name,
            )
            os.replace(newer, stale)


def _write_latest_pointer(checkpoints_dir: Path) -> None:
    newest = list_checkpoints(checkpoints_dir)[-1]
    tmp = checkpoints_dir / f".{LATEST_POINTER}.tmp"
    with open(tmp, "w") as handle:
        handle.write(newest.name + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, checkpoints_dir / LATEST_POINTER)
    _fsync_dir(checkpoints_dir)


def _prune(checkpoints_dir: Path, keep_last: int) -> None:
    for old in list_checkpoints(checkpoints_dir)[:-keep_last]:
        logger.info("removing old checkpoint %s (keep_last=%d)", old, keep_last)
        shutil.rmtree(old, ignore_errors=True)
    # leftovers of writers that were killed mid-save
    for leftover in checkpoints_dir.glob(".tmp-step_*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def _verify(checkpoint_dir: Path, manifest: Mapping[str, Any], verify_hashes: bool) -> None:
    for name, expected in manifest["files"].items():
        if not isinstance(name, str) or not _GROUP_NAME.match(name) or name.startswith("."):
            raise CheckpointError(f"{checkpoint_dir / MANIFEST}: file name {name!r} is not a plain file name")
        if not isinstance(expected, dict) or not isinstance(expected.get("bytes"), int) \
                or not isinstance(expected.get("sha256"), str):
            raise CheckpointError(f"{checkpoint_dir / MANIFEST}: entry of {name} needs 'bytes' and 'sha256'")
        path = checkpoint_dir / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (listed in {MANIFEST})")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise CheckpointError(f"{path}: {size} bytes, manifest says {expected['bytes']} (truncated?)")
        if verify_hashes and _sha256(path) != expected["sha256"]:
            raise CheckpointError(f"{path}: sha256 mismatch with {MANIFEST} (corrupt)")


def _load_dir(checkpoint_dir: Path, map_location: str | torch.device, verify_hashes: bool) -> Checkpoint:
    manifest_path = checkpoint_dir / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        step = int(manifest["step"])
        groups = list(manifest["groups"])
    except FileNotFoundError as error:
        raise CheckpointError(f"{manifest_path}: missing; not a complete checkpoint") from error
    except (ValueError, KeyError, TypeError, RecursionError, OSError) as error:
        raise CheckpointError(f"{manifest_path}: unreadable manifest ({type(error).__name__}: {str(error)[:300]})") from error
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{manifest_path}: format_version {manifest.get('format_version')!r}, "
            f"this code reads {FORMAT_VERSION}"
        )
    if not isinstance(files, dict):
        raise CheckpointError(f"{manifest_path}: 'files' is not a mapping")
    bad_groups = [g for g in groups if not isinstance(g, str) or not _GROUP_NAME.match(g) or g.startswith(".")]
    if bad_groups:
        raise CheckpointError(f"{manifest_path}: group {bad_groups[0]!r} is not a plain file name")
    _verify(checkpoint_dir, manifest, verify_hashes)

    device = str(map_location)
    tensors: dict[str, dict[str, Tensor]] = {}
    current = checkpoint_dir
    try:
        for group in groups:
            current = checkpoint_dir / f"{group}.safetensors"
            tensors[group] = load_file(str(current), device=device)
        current = checkpoint_dir / STATE_TENSORS
        state_tensors = load_file(str(current), device=device)
        current = checkpoint_dir / STATE_JSON
        state = unflatten_state(json.loads(current.read_text()), state_tensors)
        current = checkpoint_dir / RECIPE_JSON
        recipe = json.loads(current.read_text())
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise CheckpointError(f"{current}: unreadable ({type(error).__name__}: {str(error)[:300]})") from error
    return Checkpoint(
        step=step, tensors=tensors, state=state, recipe=recipe, path=checkpoint_dir, manifest=manifest
    )


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    verify_hashes: bool = True,
) -> Checkpoint:
    """Load a checkpoint directory, a ``latest`` pointer file, or the newest valid one of a run.

    Args:
        path: a ``step_*`` checkpoint directory (loaded or :class:`CheckpointError`), the
            ``checkpoints/latest`` pointer file, or a run directory / ``checkpoints`` directory.
            For the last two, checkpoints are tried newest step first; a damaged one is skipped
            with a warning naming the offending file and the previous one is loaded.
        map_location: device the tensors are loaded to.
        verify_hashes: check each file's sha256 against the manifest (sizes are always checked).

    Raises:
        CheckpointError: the checkpoint (or every checkpoint of the run) is damaged.
        FileNotFoundError: nothing resembling a checkpoint at ``path``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such run or checkpoint folder: {path}")
    if path.is_file() and path.name == LATEST_POINTER:
        path = path.parent / path.read_text().strip()
    if (path / MANIFEST).exists() or _STEP_DIR.match(path.name):
        return _load_dir(path, map_location, verify_hashes)

    candidates = list_checkpoints(path)
    if not candidates:
        raise FileNotFoundError(f"no checkpoints under {path}")
    errors: list[str] = []
    for candidate in reversed(candidates):
        try:
            checkpoint = _load_dir(candidate, map_location, verify_hashes)
        except CheckpointError as error:
            logger.warning("skipping damaged checkpoint: %s; trying the previous one", error)
            errors.append(str(error))
            continue
        if errors:
            logger.warning(
                "resuming from %s (step %d) instead of the newest checkpoint", candidate, checkpoint.step
            )
        return checkpoint
    raise CheckpointError(f"every checkpoint under {path} is damaged: " + "; ".join(errors))
