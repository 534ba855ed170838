"""Issue 18: property-based fuzzing of everything scenetok reads from disk.

Malformed recipes, setting overrides, index files, RE10K chunks, transforms.json scenes and
checkpoint directories are generated with ``hypothesis`` and fed to the real readers and to the
CLI. Each example must: execute no code from the data (a canary function reachable through YAML
tags and pickles must never run), finish within a time limit (an alarm interrupts a hang), let
no traceback escape the CLI (exit code 0 or 2, one ``scenetok: error:`` line), and lose nothing
already on disk. Example counts are small and derandomised so the suite is deterministic and
runs in well under a minute.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from scenetok.cli import main
from scenetok.components.datasets.re10k import RE10KDataset
from scenetok.components.datasets.transforms import TransformsDataset
from scenetok.data.index import read_evaluation_index
from scenetok.interfaces import CorruptSampleError
from scenetok.sections import CORE_SECTIONS
from tests.test_datasets import encode, rendered_scene, write_chunks
from tests.test_robust_data import png_bomb
from tests.test_robust_recipe import BILLION_LAUGHS

TINY = Path(__file__).parent / "recipes" / "tiny.yaml"

# No shrinking: a failure is reported with the example as generated (shrinking a run of the
# trainer could take minutes).
FUZZ = settings(max_examples=int(os.environ.get("SCENETOK_FUZZ_EXAMPLES", "12")), deadline=None, derandomize=True, database=None,
                phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

CANARY: list[Any] = []


def _canary(*args: Any) -> None:
    """Reachable from YAML (``!!python/object/apply``) and pickles; must never run."""
    CANARY.append(args)


class Exploit:
    def __reduce__(self):
        return (_canary, ("pickled code ran",))


class Hang(BaseException):
    """Raised by the alarm; a BaseException so no ``except Exception`` in the code swallows it."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(capsys: pytest.CaptureFixture, argv: list[str], seconds: float = 20) -> int:
    import logging

    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        with time_limit(seconds):
            code = main(argv)
    finally:  # main's logging.basicConfig handler writes to this test's captured stderr only
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code in (0, 1, 2), (code, err)
    if code == 2:
        assert "scenetok: error:" in err or "usage:" in err
    assert not CANARY
    return code


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**12), 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) |
                      st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)

# ---- recipes ---------------------------------------------------------------------------------------

HOSTILE_RECIPES = [
    BILLION_LAUGHS,
    "a: &a [*a]\n",
    "decoder: &d {name: dit, sub: *d}\n",
    "extends: /dev/zero\n",
    "extends: /\n",
    "extends: [1, 2]\n",
    "extends: " + "../" * 40 + "etc/hostname\n",
    f"extends: {TINY}\ndecoder: !!python/object/apply:tests.test_fuzz._canary [yaml]\n",
    "!!python/object/apply:tests.test_fuzz._canary [top]\n",
    "a: !!python/name:tests.test_fuzz._canary\n",
    f"extends: {TINY}\ndecoder: {{name: dit, _target_: tests.test_fuzz._canary}}\n",
    "a: " + "[" * 5000 + "]" * 5000 + "\n",
    "\x00\xff\xfe binary",
    f"extends: {TINY}\ndecoder: {{depth: 1000000000}}\n",
    f"extends: {TINY}\ntrain: {{lr: .nan, steps: -5, keep_checkpoints: 0}}\n",
]
SECTIONS = ["image_compressor", "token_compressor", "decoder", "sampler", "dataset", "model", "train", "eval",
            "render", "extends", "seed", "recipe_version", "junk"]
recipe_dicts = st.dictionaries(st.sampled_from(SECTIONS), st.one_of(
    values, st.fixed_dictionaries({"name": st.sampled_from(["dit", "flow", "rooms", "pixel", "perceiver", "x"])},
                                  optional={"depth": values, "preset": values, "provider": values})), max_size=6)


@FUZZ
@given(text=st.one_of(st.sampled_from(HOSTILE_RECIPES), recipe_dicts.map(lambda d: yaml.safe_dump(d)),
                      recipe_dicts.map(lambda d: f"extends: {TINY}\n" + yaml.safe_dump(d)), st.text(max_size=300)))
def test_fuzz_recipes(tmp_path: Path, capsys: pytest.CaptureFixture, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, errors="surrogateescape") if isinstance(text, str) else path.write_bytes(text)
    run_cli(capsys, ["validate", str(path)])


def _override_keys() -> list[str]:
    import dataclasses

    from scenetok.recipe import load_recipe

    recipe = load_recipe(TINY)
    keys = [f"{section}.{f.name}" for section, cls in CORE_SECTIONS.items() for f in dataclasses.fields(cls)]
    for section, spec in recipe.components.items():
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(spec.config)]
    return sorted(keys)


OVERRIDE_KEYS = _override_keys()


@FUZZ
@given(key=st.sampled_from(OVERRIDE_KEYS), value=st.one_of(
    st.integers(-(10**12), 10**12), st.sampled_from([0, -1, 1, 2**31, 2**62]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10), st.lists(scalars, max_size=3)))
def test_fuzz_setting_overrides(capsys: pytest.CaptureFixture, key: str, value: Any) -> None:
    run_cli(capsys, ["validate", str(TINY), f"{key}={json.dumps(value)}"])


# ---- index files ---------------------------------------------------------------------------------

@FUZZ
@given(content=st.one_of(values.map(json.dumps), st.binary(max_size=200),
                         st.dictionaries(st.text(max_size=6), st.one_of(values, st.fixed_dictionaries(
                             {"context": values, "target": values})), max_size=4).map(json.dumps)))
def test_fuzz_index_files(tmp_path: Path, content: str | bytes) -> None:
    data = content.encode() if isinstance(content, str) else content
    (tmp_path / "eval.json").write_bytes(data)
    with time_limit(5):
        try:
            entries = read_evaluation_index(tmp_path / "eval.json")
        except ValueError as error:
            assert "eval.json" in str(error)
        else:
            assert all(e.context and e.target for e in entries)
    stage = tmp_path / "re10k" / "test"
    if not stage.exists():
        write_chunks(tmp_path / "re10k", scenes=1, frames=3)
    (stage / "index.json").write_bytes(data)
    with time_limit(10):
        try:
            dataset = RE10KDataset(RE10KDataset.Config(root=str(tmp_path / "re10k"), split="test", image_size=[8, 8],
                                                       context_views=1, target_views=1))
        except ValueError as error:
            assert "index.json" in str(error)
            return
        for item in range(len(dataset)):
            with contextlib.suppress(CorruptSampleError):
                assert isinstance(dataset[item]["scene"], str)


# ---- chunks ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_record() -> dict[str, Any]:
    images, cameras, _ = rendered_scene(0, size=(8, 8), frames=3)
    from scenetok.geometry.conventions import cameras_to_re10k_rows

    return {"key": "scene00", "url": "", "timestamps": torch.arange(3), "cameras": cameras_to_re10k_rows(cameras),
            "images": [torch.frombuffer(bytearray(encode(i)), dtype=torch.uint8) for i in images]}


tensors = st.builds(
    lambda dtype, shape, fill: torch.full(shape, fill).to(dtype) if fill is not None else torch.zeros(shape, dtype=dtype),
    st.sampled_from([torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool]),
    st.sampled_from([(3, 18), (3, 17), (0, 18), (3,), (2, 18), (3, 18, 1)]),
    st.sampled_from([None, 0.0, 1.0, float("nan"), float("inf"), 1e30]))
frames = st.one_of(st.just("good"), tensors, st.integers(), st.text(max_size=5), st.none(),
                   st.binary(max_size=30).map(lambda b: torch.frombuffer(bytearray(b or b"\0"), dtype=torch.uint8)),
                   st.just("bomb"), st.just("exploit"))


@FUZZ
@example(kind="records", key="scene00", cameras="good", images="good", extra=[], cut=0, junk=b"")
@given(kind=st.sampled_from(["records", "records", "records", "bytes", "truncated"]),
       key=st.one_of(st.just("scene00"), scalars), cameras=st.one_of(st.just("good"), tensors, scalars),
       images=st.one_of(st.just("good"), st.lists(frames, max_size=4), scalars),
       extra=st.lists(st.one_of(values, st.just("exploit")), max_size=2), cut=st.integers(0, 4000),
       junk=st.binary(max_size=100))
def test_fuzz_chunks(tmp_path: Path, good_record: dict[str, Any], kind: str, key: Any, cameras: Any,
                     images: Any, extra: list[Any], cut: int, junk: bytes) -> None:
    stage = tmp_path / "test"
    stage.mkdir(exist_ok=True)
    record = dict(good_record, key=key)
    record["cameras"] = good_record["cameras"] if isinstance(cameras, str) else cameras
    bomb = torch.frombuffer(bytearray(png_bomb()), dtype=torch.uint8)
    if isinstance(images, list):
        record["images"] = [good_record["images"][0] if f == "good" else bomb if f == "bomb" else
                            Exploit() if f == "exploit" else f for f in images]
    elif not isinstance(images, str):
        record["images"] = images
    content = [record, *[Exploit() if e == "exploit" else e for e in extra]]
    buffer = io.BytesIO()
    torch.save(content, buffer)
    data = buffer.getvalue()
    if kind == "bytes":
        data = junk
    elif kind == "truncated":
        data = data[: cut % max(len(data), 1)]
    (stage / "000000.torch").write_bytes(data)
    (stage / "index.json").write_text(json.dumps({"scene00": "000000.torch", "other": "000000.torch"}))
    with time_limit(10):
        dataset = RE10KDataset(RE10KDataset.Config(root=str(tmp_path), split="test", image_size=[8, 8],
                                                   context_views=1, target_views=1, context_sampling="uniform",
                                                   report_path=str(tmp_path / "report.jsonl")))
        loaded = 0
        for item in range(len(dataset)):
            try:
                sample = dataset[item]
            except CorruptSampleError:
                continue
            loaded += 1
            assert torch.isfinite(sample["context"]["extrinsics"]).all()
    if (kind, key, cameras, images, extra) == ("records", "scene00", "good", "good", []):
        assert loaded == 2  # the unmodified chunk loads: the harness itself is sound
    assert not CANARY
    for line in (tmp_path / "report.jsonl").read_text().splitlines() if (tmp_path / "report.jsonl").exists() else []:
        assert json.loads(line)["file"].endswith("000000.torch")


# ---- transforms.json ----------------------------------------------------------------------------------

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10**9), st.sampled_from([0, -1]),
                    st.text(max_size=4), st.none())
matrices = st.one_of(st.just("good"), st.sampled_from(["zeros", "nan", "3x4", "2x2", "text"]),
                     st.lists(st.lists(numbers, max_size=4), max_size=4))


@FUZZ
@given(meta=st.fixed_dictionaries({}, optional={"w": numbers, "h": numbers, "fl_x": numbers, "fl_y": numbers,
                                                  "cx": numbers, "cy": numbers}),
       paths=st.lists(st.sampled_from(["images/frame_00001.png", "images/frame_00002.png", "images/frame_00003.png",
                                       "../../../../etc/hostname", "", "images/missing.png", "/etc/hostname"]),
                      max_size=4),
       matrix=matrices, drop_frames=st.booleans(), junk=st.one_of(st.none(), st.binary(max_size=50)))
def test_fuzz_transforms(tmp_path: Path, meta: dict[str, Any], paths: list[str], matrix: Any, drop_frames: bool,
                         junk: bytes | None) -> None:
    from PIL import Image

    scene = tmp_path / "root" / "test" / "scene0"
    (scene / "images").mkdir(parents=True, exist_ok=True)
    images, _, _ = rendered_scene(0, size=(8, 8), frames=3)
    for i in range(3):
        Image.fromarray(images[i].numpy()).save(scene / "images" / f"frame_{i + 1:05d}.png")
    good = torch.eye(4).tolist()
    fixed = {"good": good, "zeros": [[0.0] * 4] * 4, "nan": [[float("nan")] * 4] * 4,
             "3x4": good[:3], "2x2": [[1, 0], [0, 1]], "text": "matrix"}
    frames_json = [{"file_path": p, "transform_matrix": fixed.get(matrix, matrix) if isinstance(matrix, str) else matrix}
                   for p in paths]
    content = {"w": 8, "h": 8, "fl_x": 8.0, **meta}
    if not drop_frames:
        content["frames"] = frames_json
    text = json.dumps(content).encode() if junk is None else junk
    (scene / "transforms.json").write_bytes(text)
    with time_limit(10):
        dataset = TransformsDataset(TransformsDataset.Config(root=str(tmp_path / "root"), split="test",
                                                             image_size=[8, 8], context_views=1, target_views=1,
                                                             context_sampling="uniform"))
        for item in range(len(dataset)):
            try:
                sample = dataset[item]
            except CorruptSampleError:
                continue
            assert (sample["context"]["intrinsics"][:, 0, 0] > 0).all()


# ---- checkpoint directories -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scenetok.train.loop import train_recipe

    run = tmp_path_factory.mktemp("fuzz-run") / "run"
    train_recipe(TINY, ["train.steps=2", "train.checkpoint_every=1"], run_dir=run, progress=False)
    return run


CHECKPOINT_FILES = ["manifest.json", "state.json", "recipe.json", "model.safetensors", "state.safetensors"]
mutations = st.lists(st.tuples(
    st.sampled_from(["step_000001", "step_000002"]), st.sampled_from(CHECKPOINT_FILES),
    st.sampled_from(["truncate", "flip", "json", "json_consistent", "delete", "directory"]),
    st.integers(0, 10**6), values), min_size=1, max_size=3)


def _contents(run: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in (run / "checkpoints").rglob("*")
            if p.is_file() and p.name != "latest"}


@settings(FUZZ, max_examples=max(1, FUZZ.max_examples // 2))
@given(changes=mutations, latest=st.one_of(st.none(), st.text(max_size=30), st.just("../../../etc")),
       stored_recipe=st.one_of(st.none(), st.sampled_from(HOSTILE_RECIPES[:4])))
def test_fuzz_checkpoint_directories(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                     changes: list[tuple], latest: str | None, stored_recipe: str | None) -> None:
    run = tmp_path / "run"
    if run.exists():
        shutil.rmtree(run)
    shutil.copytree(trained_run, run)
    for step, name, operation, position, value in changes:
        path = run / "checkpoints" / step / name
        if path.is_dir():
            shutil.rmtree(path)
        data = path.read_bytes() if path.is_file() else b""
        if operation == "truncate":
            path.write_bytes(data[: position % max(len(data), 1)])
        elif operation == "flip" and data:
            index = position % len(data)
            path.write_bytes(data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1:])
        elif operation.startswith("json"):
            path.write_text(json.dumps(value))
            if operation == "json_consistent" and name != "manifest.json":
                manifest_path = run / "checkpoints" / step / "manifest.json"
                with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError, OSError):
                    manifest = json.loads(manifest_path.read_text())
                    manifest["files"][name] = {"bytes": path.stat().st_size,
                                               "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
                    manifest_path.write_text(json.dumps(manifest))
        elif operation == "delete":
            path.unlink(missing_ok=True)
        elif operation == "directory":
            path.unlink(missing_ok=True)
            path.mkdir(exist_ok=True)
    if latest is not None:
        (run / "checkpoints" / "latest").write_text(latest)
    if stored_recipe is not None:
        (run / "recipe.yaml").write_text(stored_recipe)
    before = _contents(run)
    run_cli(capsys, ["train", str(TINY), "--run", str(run), "--no-progress", "train.steps=2",
                     "train.checkpoint_every=1"], seconds=60)
    assert before <= _contents(run)  # nothing that was on disk is lost (damaged ones are renamed stale-*)
