"""Checkpoints: atomic layout, corruption fallback, exact RNG / optimizer / scheduler resume, EMA."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch
from torch import nn

from scenetok.checkpoint import (
    CheckpointError,
    capture_rng_state,
    flatten_state,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    unflatten_state,
)
from scenetok.train.ema import EMA, EMAConfig
from scenetok.train.schedules import LRScheduleConfig, build_lr_scheduler


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, steps: int) -> list[float]:
    """Steps whose data comes from the global RNGs, so resume must restore those too."""
    losses = []
    for _ in range(steps):
        noise_scale = random.random() + float(np.random.rand())
        inputs = torch.randn(4, 8) * noise_scale
        loss = model(inputs).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


def make_training(seed: int = 0):
    model = tiny_model(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = build_lr_scheduler(
        optimizer, LRScheduleConfig(warmup_steps=3, decay="multistep", milestones=[2], gamma=0.5)
    )
    return model, optimizer, scheduler


def test_resume_is_bit_exact(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    model, optimizer, scheduler = make_training()
    train_steps(model, optimizer, scheduler, 4)
    save_checkpoint(
        tmp_path,
        4,
        {"model": model.state_dict()},
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": capture_rng_state(),
        },
        {"recipe_version": 1, "train": {"lr": 1e-2}},
    )
    expected_losses = train_steps(model, optimizer, scheduler, 5)
    expected_weights = {k: v.clone() for k, v in model.state_dict().items()}

    # a fresh process-like start: different init, different RNG state
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    resumed_model, resumed_optimizer, resumed_scheduler = make_training(seed=7)
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint.step == 4
    assert checkpoint.recipe == {"recipe_version": 1, "train": {"lr": 1e-2}}
    resumed_model.load_state_dict(checkpoint.tensors["model"])
    resumed_optimizer.load_state_dict(checkpoint.state["optimizer"])
    resumed_scheduler.load_state_dict(checkpoint.state["scheduler"])
    restore_rng_state(checkpoint.state["rng"])

    assert train_steps(resumed_model, resumed_optimizer, resumed_scheduler, 5) == expected_losses
    for name, value in resumed_model.state_dict().items():
        assert torch.equal(value, expected_weights[name]), name
    assert resumed_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_rng_restore_reproduces_draws():
    state = capture_rng_state()
    skeleton, tensors = flatten_state(state)
    json.dumps(skeleton)  # must be pure JSON
    first = (random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist())
    random.random(), torch.rand(5)  # move on
    restore_rng_state(unflatten_state(json.loads(json.dumps(skeleton)), tensors))
    second = (random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist())
    assert first == second


def test_flatten_round_trip_preserves_types():
    state = {
        "ints_as_keys": {0: torch.arange(3), 1: {"step": torch.tensor(2.0)}},
        "tuple": (0.9, 0.999),
        "array": np.arange(4, dtype=np.uint32),
        "scalars": [1, 2.5, True, None, "x", float("inf"), np.float32(0.5), np.int64(7)],
        "__tensor__": "a user key that looks like a tag",
    }
    skeleton, tensors = flatten_state(state)
    restored = unflatten_state(json.loads(json.dumps(skeleton, allow_nan=False)), tensors)
    assert set(restored["ints_as_keys"]) == {0, 1}
    assert torch.equal(restored["ints_as_keys"][0], torch.arange(3))
    assert restored["tuple"] == (0.9, 0.999)
    assert restored["array"].dtype == np.uint32 and restored["array"].tolist() == [0, 1, 2, 3]
    assert restored["scalars"] == [1, 2.5, True, None, "x", float("inf"), 0.5, 7]
    assert restored["__tensor__"] == "a user key that looks like a tag"
    with pytest.raises(TypeError, match=r"state\.bad"):
        flatten_state({"bad": object()})


def test_layout_latest_pointer_and_pruning(tmp_path):
    model = tiny_model()
    for step in (1, 2, 3, 4):
        final = save_checkpoint(
            tmp_path, step, {"model": model.state_dict()}, {"step": step}, {}, keep_last=2
        )
    assert final.name == "step_000004"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000003", "step_000004"]
    checkpoints_dir = tmp_path / "checkpoints"
    assert (checkpoints_dir / "latest").read_text().strip() == "step_000004"
    assert sorted(p.name for p in final.iterdir()) == [
        "manifest.json",
        "model.safetensors",
        "recipe.json",
        "state.json",
        "state.safetensors",
    ]
    assert not [p for p in checkpoints_dir.iterdir() if p.name.startswith(".")]
    assert load_checkpoint(checkpoints_dir / "latest").step == 4
    # re-saving an existing step replaces it
    save_checkpoint(tmp_path, 4, {"model": model.state_dict()}, {"step": "again"}, {}, keep_last=2)
    assert load_checkpoint(final).state == {"step": "again"}


def test_truncated_newest_falls_back_with_warning(tmp_path, caplog):
    model = tiny_model()
    save_checkpoint(tmp_path, 10, {"model": model.state_dict()}, {"step": 10}, {})
    with torch.no_grad():
        model[0].weight.add_(1.0)
    newest = save_checkpoint(tmp_path, 20, {"model": model.state_dict()}, {"step": 20}, {})
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])  # a copy cut short

    with caplog.at_level(logging.WARNING, logger="scenetok.checkpoint"):
        checkpoint = load_checkpoint(tmp_path)
    assert checkpoint.step == 10 and checkpoint.state == {"step": 10}
    assert "model.safetensors" in caplog.text and "step_000020" in caplog.text
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(newest)


def test_saving_after_a_fallback_retires_the_damaged_newer_checkpoint(tmp_path, caplog):
    model = tiny_model()
    save_checkpoint(tmp_path, 10, {"model": model.state_dict()}, {}, {}, keep_last=2)
    damaged = save_checkpoint(tmp_path, 20, {"model": model.state_dict()}, {}, {}, keep_last=2)
    (damaged / "state.json").write_text("")
    assert load_checkpoint(tmp_path).step == 10
    # the run continues from step 10; step 20 must neither shadow nor prune the new checkpoints
    with caplog.at_level(logging.WARNING, logger="scenetok.checkpoint"):
        save_checkpoint(tmp_path, 11, {"model": model.state_dict()}, {"resumed": True}, {}, keep_last=2)
    assert "step_000020" in caplog.text
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000010", "step_000011"]
    assert load_checkpoint(tmp_path).state == {"resumed": True}
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_000011"
    assert len(list((tmp_path / "checkpoints").glob("stale-step_000020-*"))) == 1


def test_corrupt_bytes_detected_by_hash(tmp_path):
    model = tiny_model()
    save_checkpoint(tmp_path, 1, {"model": model.state_dict()}, {}, {})
    newest = save_checkpoint(tmp_path, 2, {"model": model.state_dict()}, {}, {})
    data = bytearray((newest / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    (newest / "model.safetensors").write_bytes(bytes(data))
    assert load_checkpoint(tmp_path).step == 1
    (list_checkpoints(tmp_path)[0] / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="every checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nothing_here")


def test_shared_and_noncontiguous_tensors(tmp_path):
    base = torch.randn(4, 6)
    tensors = {
        "weight": base,
        "tied": base,  # same storage, as tied embeddings
        "transposed": base.t(),  # non-contiguous view
        "slice": base[1:3],  # view into part of the storage
        "empty_a": torch.empty(0),
        "empty_b": torch.empty(0, 3),
    }
    before = base.clone()
    path = save_checkpoint(tmp_path, 0, {"model": tensors}, {}, {})
    assert torch.equal(base, before)  # inputs untouched
    loaded = load_checkpoint(path).tensors["model"]
    for name, value in tensors.items():
        assert torch.equal(loaded[name], value), name


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path, 0, {"state": {}}, {}, {})
    with pytest.raises(ValueError, match="keep_last"):
        save_checkpoint(tmp_path, 0, {"model": {}}, {}, {}, keep_last=0)
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(tmp_path, -1, {"model": {}}, {}, {})


def test_ema_update_swap_and_state(tmp_path):
    model = tiny_model()
    ema = EMA(model, EMAConfig(decay=0.5))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(2.0)
    ema.update(model)
    for name, value in ema.state_dict().items():
        torch.testing.assert_close(value, start[name] + 1.0)  # 0.5 * old + 0.5 * (old + 2)

    trained = {k: v.clone() for k, v in model.state_dict().items()}
    with ema.average_parameters(model):
        for name, value in model.state_dict().items():
            torch.testing.assert_close(value, start[name] + 1.0)
    for name, value in model.state_dict().items():
        assert torch.equal(value, trained[name])

    # swap restores even when evaluation raises
    with pytest.raises(RuntimeError):
        with ema.average_parameters(model):
            raise RuntimeError("eval failed")
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())

    # checkpoint round trip, including the update counter used by warm-up
    path = save_checkpoint(tmp_path, 1, {"ema": ema.state_dict()}, {"ema_num_updates": ema.num_updates}, {})
    checkpoint = load_checkpoint(path)
    restored = EMA(tiny_model(seed=3), EMAConfig(decay=0.5))
    restored.load_state_dict(checkpoint.tensors["ema"], num_updates=checkpoint.state["ema_num_updates"])
    assert restored.num_updates == 1
    assert all(torch.equal(v, ema.state_dict()[k]) for k, v in restored.state_dict().items())
    with pytest.raises(KeyError, match="unwrapped"):
        ema.update(nn.Linear(2, 2))


def test_ema_warmup_and_start_step():
    model = tiny_model()
    ema = EMA(model, EMAConfig(decay=0.999, warmup=True, start_step=2))
    decays = []
    for _ in range(4):
        decays.append(ema.current_decay())
        ema.update(model)
    assert decays == pytest.approx([0.0, 0.0, 1.0 / 10.0, 2.0 / 11.0])
    with pytest.raises(ValueError, match="decay"):
        EMAConfig(decay=1.0)
