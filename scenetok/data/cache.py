"""Latent cache: precompute the latents of a *frozen* image compressor once, train without it.

Unit of caching -- whole training samples, per epoch
-----------------------------------------------------
A training sample of a :class:`~scenetok.interfaces.SceneDataset` is a pure function of
``(dataset seed, epoch, sample index)`` (the view sampler is seeded by them). The cache therefore
stores, for each cached epoch ``e`` and each index ``i``, exactly the sample ``dataset[i]`` returns after
``dataset.set_epoch(e)``, with every view's ``images`` replaced by the compressor's ``latents``.
:class:`CachedLatentDataset` has the same length, the same ``set_epoch`` and returns, for the same
``(epoch, index)``, the same scene, frame indices and cameras -- so a training run on the cache visits
the same samples in the same order as a run on raw images with the same seed, and its latents are
exactly what the model would have computed (they *are* that computation, stored).

Two caveats, both documented choices:

* Posterior sampling: with ``sample=False`` (default) the posterior mean is cached, which is what the
  model computes for ``model.context_latents: mean`` and for targets. With ``sample=True`` one
  posterior sample per view is drawn (seeded by ``(seed, epoch, index)``) and then frozen -- as the
  official code's precompute does; a raw-image run would draw fresh samples each time.
* Epochs: ``epochs=E`` caches ``E`` epochs of view selections; reading epoch ``e >= E`` reuses epoch
  ``e mod E`` (logged once).

A recipe with a separate ``target_image_compressor`` (the paper's RE10K model: VA-VAE context, Video
DC-AE targets) caches its target views with that compressor (``target_compressor``), always its
deterministic latents, as the model computes them for targets.

On disk (``out_dir``)::

    manifest.json                   compressor (+ target compressor) name + config, dataset class +
                                    config, counts, shapes
    epoch000/shard00000.safetensors samples [0, shard_size) of epoch 0, and so on

A shard holds, per sample ``i`` and part ``context``/``target``: ``{i}.{part}.latents`` (as computed,
``(F, C, h, w)``), ``{i}.{part}.extrinsics`` / ``intrinsics`` (float32, never float16: translations of
large scenes lose precision in half), ``{i}.{part}.indices`` (int64); the scene keys are in the shard's
metadata. Shards are written to a temporary file and renamed, so a shard that exists is complete; a
killed run resumes by skipping them. The manifest records the configuration; resuming with another
compressor/dataset configuration is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from scenetok.interfaces import CorruptSampleError

logger = logging.getLogger(__name__)

FORMAT = "scenetok-latent-cache"
VERSION = 1
MANIFEST = "manifest.json"
PARTS = ("context", "target")
#: View-dict keys stored next to the latents (images are replaced by latents; depths are not kept).
CAMERA_KEYS = ("extrinsics", "intrinsics")


def _config_dict(obj: Any) -> dict[str, Any] | None:
    config = getattr(obj, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        return None
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def _shard_path(root: Path, epoch: int, shard: int) -> Path:
    return root / f"epoch{epoch:03d}" / f"shard{shard:05d}.safetensors"


def _device_of(module: nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _encode(compressor: nn.Module, images: Tensor, device: torch.device, sample: bool, sample_seed: int) -> Tensor:
    """Latents ``(F, C, h, w)`` of one view set ``(V, 3, H, W)``; a posterior sample is drawn from a
    forked RNG seeded by ``sample_seed`` (the caller's global RNG state is left untouched)."""
    with torch.inference_mode(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(sample_seed)
        return compressor.encode(images.unsqueeze(0).to(device), sample=sample)[0]


def _identity(compressor: nn.Module, name: str | None) -> dict[str, Any]:
    return {
        "name": name or type(compressor).__name__,
        "class": f"{type(compressor).__module__}:{type(compressor).__qualname__}",
        "config": _config_dict(compressor),
    }


def cache_latents(
    dataset: Any,
    compressor: nn.Module,
    out_dir: str | Path,
    *,
    shard_size: int = 256,
    epochs: int = 1,
    sample: bool = False,
    seed: int = 0,
    compressor_name: str | None = None,
    target_compressor: nn.Module | None = None,
    target_compressor_name: str | None = None,
    progress: bool = True,
) -> Path:
    """Encode every sample of ``dataset`` with ``compressor`` into safetensors shards under ``out_dir``.

    Args:
        dataset: a map-style dataset of sample dicts (a :class:`~scenetok.interfaces.SceneDataset`);
            ``set_epoch`` is called when it has one.
        compressor: a frozen :class:`~scenetok.interfaces.ImageCompressor` (its device is used).
        out_dir: cache directory (created; an existing cache of the same configuration is resumed).
        shard_size: samples per shard file.
        epochs: epochs of view selections to cache (see the module docstring).
        sample: cache a posterior sample instead of the posterior mean.
        seed: seeds the posterior samples (``sample=True``) per ``(epoch, index)``.
        compressor_name: the registry name recorded in the manifest (default: the class name).
        target_compressor: a separate frozen compressor for the target views (the recipe's
            ``target_image_compressor``); ``None`` encodes them with ``compressor``. Its latents are
            never sampled (the model uses deterministic target latents).
        target_compressor_name: its registry name for the manifest (default: the class name).
        progress: show a tqdm progress bar.

    Returns:
        The path of ``manifest.json``.

    Raises:
        ValueError: ``out_dir`` holds a cache of another configuration, or arguments are invalid.
    """
    if shard_size < 1 or epochs < 1:
        raise ValueError(f"shard_size and epochs must be >= 1, got {shard_size}, {epochs}")
    for module in (compressor, target_compressor):
        if module is not None and (getattr(type(module), "trainable", False)
                                   or any(p.requires_grad for p in module.parameters())):
            raise ValueError(
                f"{type(module).__name__} is trainable: caching its latents would freeze weights that training updates"
            )
    from safetensors.torch import save_file

    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    num_samples = len(dataset)
    num_shards = (num_samples + shard_size - 1) // shard_size
    identity = {
        "format": FORMAT,
        "version": VERSION,
        "compressor": _identity(compressor, compressor_name),
        # Absent (None) for a single compressor; caches written before this key existed read the same.
        "target_compressor": None if target_compressor is None else _identity(target_compressor,
                                                                              target_compressor_name),
        "dataset": {
            "class": f"{type(dataset).__module__}:{type(dataset).__qualname__}",
            "config": _config_dict(dataset),
        },
        "num_samples": num_samples,
        "epochs": epochs,
        "shard_size": shard_size,
        "sample": sample,
        "seed": seed,
    }
    manifest_path = root / MANIFEST
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        differing = sorted(k for k in identity if previous.get(k) != identity[k])
        if differing:
            raise ValueError(
                f"{root} holds a latent cache of another configuration (differs in: {', '.join(differing)}); "
                "use another out_dir or delete it"
            )
    manifest = {**identity, "complete": False, "num_shards": num_shards, "parts": {}}
    _atomic_write_text(manifest_path, json.dumps(manifest, indent=2))

    shapes: dict[str, set[tuple[int, ...]]] = {part: set() for part in PARTS}
    dtypes: dict[str, set[str]] = {part: set() for part in PARTS}
    encoders = {"context": (compressor, _device_of(compressor), sample)}
    encoders["target"] = (encoders["context"] if target_compressor is None
                          else (target_compressor, _device_of(target_compressor), False))
    todo = [(e, s) for e in range(epochs) for s in range(num_shards) if not _shard_path(root, e, s).exists()]
    skipped = epochs * num_shards - len(todo)
    if skipped:
        logger.info("latent cache %s: %d of %d shards already complete, resuming", root, skipped, epochs * num_shards)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(min(shard_size, num_samples - s * shard_size) for _, s in todo),
                   desc="caching latents", unit="sample")
    was_training = {part: module.training for part, (module, _, _) in encoders.items()}
    for module, _, _ in encoders.values():
        module.eval()
    try:
        for epoch, shard in todo:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            tensors: dict[str, Tensor] = {}
            scenes: dict[str, str] = {}
            start, stop = shard * shard_size, min((shard + 1) * shard_size, num_samples)
            for index in range(start, stop):
                item = dataset[index]
                scenes[str(index)] = str(item["scene"])
                for part in PARTS:
                    views = item[part]
                    module, device, part_sample = encoders[part]
                    latents = _encode(module, views["images"], device, part_sample,
                                      zlib.crc32(f"{seed}/{epoch}/{index}/{part}".encode()))
                    tensors[f"{index}.{part}.latents"] = latents.detach().cpu().contiguous()
                    for key in CAMERA_KEYS:
                        tensors[f"{index}.{part}.{key}"] = views[key].to(torch.float32).contiguous()
                    tensors[f"{index}.{part}.indices"] = views["indices"].to(torch.int64).contiguous()
                    shapes[part].add(tuple(latents.shape))
                    dtypes[part].add(str(latents.dtype).replace("torch.", ""))
                if bar is not None:
                    bar.update(1)
            path = _shard_path(root, epoch, shard)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            save_file(tensors, str(tmp), metadata={"scenes": json.dumps(scenes), "epoch": str(epoch),
                                                    "start": str(start), "stop": str(stop)})
            os.replace(tmp, path)  # a shard that exists is complete
    finally:
        for part, (module, _, _) in encoders.items():
            module.train(was_training[part])
        if bar is not None:
            bar.close()

    if not todo:  # fully resumed: recover shapes from the first shard
        shapes, dtypes = _shapes_from_shard(_shard_path(root, 0, 0)) if num_shards else (shapes, dtypes)
    manifest.update(
        complete=True,
        parts={part: {"latent_shapes": sorted(list(s) for s in shapes[part]), "dtype": sorted(dtypes[part])}
               for part in PARTS},
    )
    _atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
    logger.info("latent cache %s: %d samples x %d epochs in %d shards", root, num_samples, epochs, num_shards)
    return manifest_path


def _shapes_from_shard(path: Path) -> tuple[dict[str, set], dict[str, set]]:
    from safetensors import safe_open

    shapes: dict[str, set] = {part: set() for part in PARTS}
    dtypes: dict[str, set] = {part: set() for part in PARTS}
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            _, part, name = key.split(".", 2)
            if name == "latents":
                tensor = handle.get_tensor(key)
                shapes[part].add(tuple(tensor.shape))
                dtypes[part].add(str(tensor.dtype).replace("torch.", ""))
    return shapes, dtypes


class CachedLatentDataset(torch.utils.data.Dataset):
    """Reads a cache written by :func:`cache_latents`: sample dicts with ``latents`` in place of
    ``images`` (``{"scene", "context": {"latents", "extrinsics", "intrinsics", "indices"}, "target": ...}``),
    ready for :func:`scenetok.types.collate_scenes`.

    Args:
        root: the cache directory.
        expect_compressor: if given, the registry name the cache must have been made with; then the
            target views must also have been encoded as ``expect_target_compressor`` says.
        expect_target_compressor: the registry name of the separate target compressor, or ``None``
            when the targets were encoded with ``expect_compressor`` too.

    Raises:
        FileNotFoundError: no manifest. ValueError: an incomplete cache, or another compressor.
    """

    def __init__(self, root: str | Path, expect_compressor: str | None = None,
                 expect_target_compressor: str | None = None) -> None:
        self.root = Path(root)
        manifest_path = self.root / MANIFEST
        if not manifest_path.exists():
            raise FileNotFoundError(f"{self.root} is not a latent cache (no {MANIFEST}); build it with cache_latents")
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
            raise ValueError(f"{manifest_path}: not a {FORMAT} v{VERSION} manifest")
        if not self.manifest.get("complete"):
            raise ValueError(f"{self.root}: the latent cache is incomplete (interrupted?); rerun cache_latents to finish it")
        name = self.manifest["compressor"]["name"]
        if expect_compressor is not None and name != expect_compressor:
            raise ValueError(f"{self.root}: cached with compressor {name!r}, but {expect_compressor!r} is configured")
        target = (self.manifest.get("target_compressor") or {}).get("name")
        if expect_compressor is not None and target != expect_target_compressor:
            def describe(value: str | None) -> str:
                return "the same compressor" if value is None else repr(value)

            raise ValueError(f"{self.root}: target views cached with {describe(target)}, but the recipe's "
                             f"target_image_compressor is {describe(expect_target_compressor)}")
        self.shard_size: int = self.manifest["shard_size"]
        self.epochs: int = self.manifest["epochs"]
        self._epoch = 0
        self._warned_reuse = False
        self._open: tuple[Path, Any] | None = None

    def __len__(self) -> int:
        return int(self.manifest["num_samples"])

    def set_epoch(self, epoch: int) -> None:
        """Select the cached view selections of ``epoch`` (``epoch mod epochs`` beyond the cached ones)."""
        if epoch >= self.epochs and not self._warned_reuse:
            logger.warning("latent cache %s holds %d epoch(s); epoch %d reuses epoch %d", self.root, self.epochs,
                           epoch, epoch % self.epochs)
            self._warned_reuse = True
        self._epoch = int(epoch) % self.epochs

    def _handle(self, path: Path) -> Any:
        # One open shard per process (DataLoader workers each get their own after fork/spawn).
        if self._open is None or self._open[0] != path:
            from safetensors import safe_open

            self._open = (path, safe_open(str(path), framework="pt"))
        return self._open[1]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} cached samples")
        path = _shard_path(self.root, self._epoch, index // self.shard_size)
        if not path.exists():
            raise CorruptSampleError(f"latent cache shard {path} is missing")
        handle = self._handle(path)
        scenes = json.loads(handle.metadata()["scenes"])
        sample: dict[str, Any] = {"scene": scenes[str(index)]}
        for part in PARTS:
            sample[part] = {key: handle.get_tensor(f"{index}.{part}.{key}")
                            for key in ("latents", *CAMERA_KEYS, "indices")}
        return sample

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index in range(len(self)):
            yield self[index]

    def __getstate__(self) -> dict[str, Any]:
        # open safetensors handles do not pickle; workers reopen lazily
        state = dict(self.__dict__)
        state["_open"] = None
        return state
