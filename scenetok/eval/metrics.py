"""Image metrics of the evaluation protocol: PSNR, SSIM, LPIPS (VGG) and FID.

Implementations follow the cited code (pixelSplat / SceneTok ``metrics.py``):

* PSNR: both images clamped to ``[0, 1]``, MSE per image over ``(C, H, W)``, ``-10 log10``, mean
  over images. A perfect frame would give ``+inf`` and make every mean infinite, so the MSE is
  floored at ``10 ** (-max_db / 10)`` (``max_db = 100`` by default). Perfect frames do happen in
  practice: evaluation indices with contiguous target ranges include the context frames.
* SSIM: torchmetrics ``structural_similarity_index_measure``, Gaussian window 11, sigma 1.5,
  ``data_range = 1``, per image (the cited code uses skimage with the same window).
* LPIPS: the ``lpips`` package, **VGG** backbone by default, inputs in ``[0, 1]`` with
  ``normalize=True``, fp32. The backbone needs ImageNet weights that cannot be downloaded
  offline: they are read from a local file (an explicit path, or torchvision's cache in
  ``$TORCH_HOME/hub/checkpoints``). Without them the metric is *unavailable* (it returns ``None``
  and says why); it is never silently computed with a random backbone. Tests may pass
  ``allow_random_backbone=True``; results are then labelled ``random backbone (test only)``.
* FID: torchmetrics ``FrechetInceptionDistance(feature=2048)`` on uint8 frames (rounded), over
  all frames of all scenes; the Inception weights come from a local file
  (``feature_extractor_weights_path``) and torch-fidelity must be installed, else unavailable.

All functions take images ``(..., 3, H, W)`` in ``[0, 1]`` and return one value per image
(leading dimensions flattened), without modifying their inputs.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

#: torchvision's file names for the backbones lpips uses (what ``tv.vgg16(pretrained=True)`` caches).
LPIPS_BACKBONE_FILES = {
    "vgg": "vgg16-397923af.pth",
    "alex": "alexnet-owt-7be5be79.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
#: torch-fidelity's Inception file name (what torchmetrics' FID would download).
FID_INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
RANDOM_BACKBONE_LABEL = "random backbone (test only)"


def _as_images(images: Tensor, name: str) -> Tensor:
    if images.dim() < 4 or images.shape[-3] != 3:
        raise ValueError(f"{name} must be (..., 3, H, W), got {tuple(images.shape)}")
    return images.reshape(-1, *images.shape[-3:])


def _check_pair(prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ")
    return _as_images(prediction, "prediction"), _as_images(target, "target")


@torch.no_grad()
def psnr(prediction: Tensor, target: Tensor, *, max_db: float | None = 100.0) -> Tensor:
    """Per-image PSNR in dB, ``(N,)`` for inputs ``(..., 3, H, W)`` in ``[0, 1]``.

    Args:
        max_db: cap (MSE floor) so identical images give ``max_db`` instead of ``inf``;
            ``None`` returns ``inf`` for them.
    """
    prediction, target = _check_pair(prediction, target)
    difference = prediction.float().clamp(0, 1) - target.float().clamp(0, 1)
    mse = difference.square().mean(dim=(1, 2, 3))
    if max_db is not None:
        mse = mse.clamp_min(10.0 ** (-max_db / 10.0))
    return -10.0 * torch.log10(mse)


@torch.no_grad()
def ssim(prediction: Tensor, target: Tensor) -> Tensor:
    """Per-image SSIM, ``(N,)`` (Gaussian window 11, sigma 1.5, data range 1)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    prediction, target = _check_pair(prediction, target)
    return structural_similarity_index_measure(
        prediction.float().clamp(0, 1),
        target.float().clamp(0, 1),
        gaussian_kernel=True,
        sigma=1.5,
        kernel_size=11,
        data_range=1.0,
        reduction="none",
    )


def _torch_hub_checkpoint(filename: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _load_weights_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


class LPIPSMetric:
    """LPIPS distance with a backbone read from local weights, or an explicit *unavailable* state.

    Args:
        net: ``"vgg"`` (the paper's choice; AlexNet gives lower, non-comparable values),
            ``"alex"`` or ``"squeeze"``.
        backbone_weights: torchvision state dict of the backbone (``.pth`` loaded with
            ``weights_only=True``, or ``.safetensors``). ``None`` looks for torchvision's cached
            file ``$TORCH_HOME/hub/checkpoints/<LPIPS_BACKBONE_FILES[net]>``.
        allow_random_backbone: tests only: when no weights are found, use a random backbone
            (with the real LPIPS heads) and label every result :data:`RANDOM_BACKBONE_LABEL`.
        device: where the network runs.
        batch_size: images per forward pass (bounds memory on long trajectories).

    Attributes:
        available: whether :meth:`__call__` returns values.
        unavailable_reason: why not, else ``None``.
        backbone: ``"<net>: <weights file>"`` or ``"<net>: random backbone (test only)"``.
    """

    def __init__(
        self,
        net: str = "vgg",
        *,
        backbone_weights: str | os.PathLike[str] | None = None,
        allow_random_backbone: bool = False,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
    ) -> None:
        if net not in LPIPS_BACKBONE_FILES:
            raise ValueError(f"net must be one of {sorted(LPIPS_BACKBONE_FILES)}, got {net!r}")
        self.net = net
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.unavailable_reason: str | None = None
        self.backbone: str | None = None
        self.model: nn.Module | None = None
        self.random_backbone = False

        if importlib.util.find_spec("lpips") is None:
            self.unavailable_reason = "the `lpips` package is not installed"
            return
        weights_path = (
            Path(backbone_weights) if backbone_weights else _torch_hub_checkpoint(LPIPS_BACKBONE_FILES[net])
        )
        if not weights_path.is_file():
            reason = (
                f"no ImageNet weights for the LPIPS {net} backbone at {weights_path} "
                f"(put torchvision's {LPIPS_BACKBONE_FILES[net]} there or set eval.lpips_weights=PATH)"
            )
            if not allow_random_backbone:
                self.unavailable_reason = reason
                logger.warning("LPIPS unavailable: %s", reason)
                return
            logger.warning("LPIPS uses a RANDOM %s backbone (test only): %s", net, reason)
            self.random_backbone = True

        import lpips

        # pnet_rand=True: build the backbone without torchvision's download; the real weights are
        # loaded below from the local file. pretrained=True: the LPIPS heads ship with the wheel.
        model = lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False)
        if self.random_backbone:
            self.backbone = f"{net}: {RANDOM_BACKBONE_LABEL}"
        else:
            try:
                self._load_backbone(model, weights_path)
            except (OSError, RuntimeError, ValueError, KeyError) as error:
                self.unavailable_reason = f"could not load LPIPS {net} backbone from {weights_path}: {error}"
                logger.warning("LPIPS unavailable: %s", self.unavailable_reason)
                return
            self.backbone = f"{net}: {weights_path}"
        self.model = model.eval().requires_grad_(False).to(self.device)

    @staticmethod
    def _load_backbone(model: nn.Module, weights_path: Path) -> None:
        """Copy torchvision ``features.<i>.*`` weights into lpips' ``slice<k>.<i>.*`` modules."""
        torchvision_state = _load_weights_file(weights_path)
        backbone_state = {}
        for name in model.net.state_dict():
            match = re.fullmatch(r"slice\d+\.(\d+)\.(.+)", name)
            if match is None:
                raise KeyError(f"unexpected lpips backbone parameter {name}")
            source = f"features.{match.group(1)}.{match.group(2)}"
            if source not in torchvision_state:
                raise KeyError(f"{source} missing from {weights_path}")
            backbone_state[name] = torchvision_state[source]
        model.net.load_state_dict(backbone_state, strict=True)

    @property
    def available(self) -> bool:
        return self.model is not None

    @torch.no_grad()
    def __call__(self, prediction: Tensor, target: Tensor) -> Tensor | None:
        """Per-image LPIPS ``(N,)`` (lower is better), or ``None`` when unavailable."""
        if self.model is None:
            return None
        prediction, target = _check_pair(prediction, target)
        values = []
        for start in range(0, prediction.shape[0], self.batch_size):
            a = prediction[start : start + self.batch_size].to(self.device, torch.float32).clamp(0, 1)
            b = target[start : start + self.batch_size].to(self.device, torch.float32).clamp(0, 1)
            values.append(self.model(a, b, normalize=True).flatten().cpu())
        return torch.cat(values)


def to_uint8(images: Tensor) -> Tensor:
    """``[0, 1]`` float images -> rounded uint8 (same shape)."""
    return (images.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)


class FIDMetric:
    """Frechet Inception Distance between predicted and ground-truth frames (accumulating).

    Args:
        inception_weights_path: torch-fidelity's Inception weights file; ``None`` looks for
            ``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``.
        feature_extractor: tests / custom studies only: a module mapping uint8 ``(N, 3, H, W)``
            to features ``(N, D)``; replaces Inception and labels the result as custom.
        device: where features are computed.

    Attributes:
        available, unavailable_reason, backbone: as in :class:`LPIPSMetric`.
    """

    def __init__(
        self,
        inception_weights_path: str | os.PathLike[str] | None = None,
        *,
        feature_extractor: nn.Module | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.unavailable_reason: str | None = None
        self.backbone: str | None = None
        self.metric: Any = None
        from torchmetrics.image.fid import FrechetInceptionDistance

        if feature_extractor is not None:
            self.metric = FrechetInceptionDistance(feature=feature_extractor).to(self.device)
            self.backbone = f"custom feature extractor {type(feature_extractor).__name__} (not Inception)"
            return
        weights = (
            Path(inception_weights_path)
            if inception_weights_path
            else _torch_hub_checkpoint(FID_INCEPTION_FILE)
        )
        if importlib.util.find_spec("torch_fidelity") is None:
            self.unavailable_reason = "FID needs torch-fidelity (pip install torch-fidelity)"
        elif not weights.is_file():
            self.unavailable_reason = f"no Inception weights at {weights} (pass inception_weights_path)"
        if self.unavailable_reason:
            logger.warning("FID unavailable: %s", self.unavailable_reason)
            return
        self.metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights)).to(
            self.device
        )
        self.backbone = f"inception-v3 (2048): {weights}"

    @property
    def available(self) -> bool:
        return self.metric is not None

    @torch.no_grad()
    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Add frames ``(..., 3, H, W)`` in ``[0, 1]``: predictions form one distribution, targets another."""
        if self.metric is None:
            return
        prediction, target = _check_pair(prediction, target)
        self.metric.update(to_uint8(prediction).to(self.device), real=False)
        self.metric.update(to_uint8(target).to(self.device), real=True)

    def compute(self) -> float | None:
        """FID over everything added, or ``None`` if unavailable or fewer than 2 frames per side."""
        if self.metric is None or int(self.metric.fake_features_num_samples) < 2:
            return None
        return float(self.metric.compute())


class MetricSuite:
    """Accumulates PSNR / SSIM / LPIPS per frame and FID per method over an evaluation run.

    Args:
        lpips: an :class:`LPIPSMetric` (possibly unavailable), or ``None`` to skip LPIPS.
        fid_factory: builds one :class:`FIDMetric` per method (e.g. ``lambda: FIDMetric(path)``),
            or ``None`` to skip FID.
        psnr_max_db: see :func:`psnr`.

    ``compute()`` returns::

        {"methods": {method: {"mean": {"psnr", "ssim", "lpips", "num_frames", "num_scenes"},
                              "mean_over_scenes": {"psnr", "ssim", "lpips"},
                              "fid": float | None,
                              "per_scene": {scene: {"psnr", "ssim", "lpips", "num_frames"}}}},
         "metrics": {"psnr": {...}, "ssim": {...}, "lpips": {"available", "reason", "backbone"},
                     "fid": {...}}}

    ``mean`` averages over all frames (the cited code's convention); ``mean_over_scenes``
    averages per-scene means. Unavailable metrics are ``None`` with the reason under ``metrics``.
    """

    PER_FRAME = ("psnr", "ssim", "lpips")

    def __init__(
        self,
        *,
        lpips: LPIPSMetric | None = None,
        fid_factory: Callable[[], FIDMetric] | None = None,
        psnr_max_db: float | None = 100.0,
    ) -> None:
        self.lpips = lpips
        self.fid_factory = fid_factory
        self.psnr_max_db = psnr_max_db
        # method -> scene -> metric -> list of per-frame tensors
        self._values: dict[str, dict[str, dict[str, list[Tensor]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list))
        )
        self._fid: dict[str, FIDMetric] = {}
        self._fid_reason: str | None = None if fid_factory else "not requested"
        self._fid_backbone: str | None = None

    def update(self, method: str, scenes: str | Sequence[str], prediction: Tensor, target: Tensor) -> None:
        """Add frames of one or more scenes.

        Args:
            method: ``"model"`` or a baseline name.
            scenes: one scene key with ``prediction`` ``(V, 3, H, W)``, or ``B`` keys with
                ``(B, V, 3, H, W)``.
            prediction, target: images in ``[0, 1]``, same shape.
        """
        if isinstance(scenes, str):
            scenes, prediction, target = [scenes], prediction.unsqueeze(0), target.unsqueeze(0)
        if prediction.dim() != 5 or prediction.shape[0] != len(scenes):
            raise ValueError(
                f"expected prediction (B={len(scenes)}, V, 3, H, W) for {len(scenes)} scenes, "
                f"got {tuple(prediction.shape)}"
            )
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ")
        frames = prediction.shape[1]
        values = {
            "psnr": psnr(prediction, target, max_db=self.psnr_max_db),
            "ssim": ssim(prediction, target),
        }
        lpips_values = self.lpips(prediction, target) if self.lpips is not None else None
        if lpips_values is not None:
            values["lpips"] = lpips_values
        for metric, flat in values.items():
            for index, scene in enumerate(scenes):
                self._values[method][scene][metric].append(
                    flat[index * frames : (index + 1) * frames].detach().cpu().double()
                )

        if self.fid_factory is not None:
            if method not in self._fid:
                self._fid[method] = self.fid_factory()
            fid = self._fid[method]
            self._fid_reason, self._fid_backbone = fid.unavailable_reason, fid.backbone
            fid.update(prediction, target)

    def compute(self) -> dict[str, Any]:
        """Means per scene, over all frames and over scenes, per method (see class docstring)."""
        lpips_ok = self.lpips is not None and self.lpips.available
        metrics_info = {
            "psnr": {"available": True, "reason": None, "max_db": self.psnr_max_db},
            "ssim": {"available": True, "reason": None, "window": 11, "sigma": 1.5},
            "lpips": {
                "available": lpips_ok,
                "reason": None
                if lpips_ok
                else (self.lpips.unavailable_reason if self.lpips else "not requested"),
                "backbone": self.lpips.backbone if self.lpips else None,
            },
            "fid": {
                "available": self._fid_reason is None and self.fid_factory is not None,
                "reason": self._fid_reason,
                "backbone": self._fid_backbone,
            },
        }
        methods: dict[str, Any] = {}
        for method, scenes in self._values.items():
            per_scene: dict[str, dict[str, Any]] = {}
            all_frames: dict[str, list[Tensor]] = defaultdict(list)
            for scene, metric_values in scenes.items():
                entry: dict[str, Any] = {}
                for metric in self.PER_FRAME:
                    chunks = metric_values.get(metric)
                    if chunks:
                        joined = torch.cat(chunks)
                        entry[metric] = float(joined.mean())
                        all_frames[metric].append(joined)
                    else:
                        entry[metric] = None
                entry["num_frames"] = sum(len(c) for c in metric_values["psnr"])
                per_scene[scene] = entry
            mean = {
                m: float(torch.cat(all_frames[m]).mean()) if all_frames[m] else None for m in self.PER_FRAME
            }
            mean["num_frames"] = sum(e["num_frames"] for e in per_scene.values())
            mean["num_scenes"] = len(per_scene)
            over_scenes = {
                m: (math.fsum(e[m] for e in per_scene.values()) / len(per_scene)) if all_frames[m] else None
                for m in self.PER_FRAME
            }
            fid = self._fid.get(method)
            methods[method] = {
                "mean": mean,
                "mean_over_scenes": over_scenes,
                "fid": fid.compute() if fid is not None else None,
                "per_scene": per_scene,
            }
        return {"methods": methods, "metrics": metrics_info}
