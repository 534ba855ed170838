"""Video DC-AE (``video_dcae``): the key map against the released file's key list, parity with Open-Sora's
reference network at tiny width, tiling, the paper's temporal grouping, and the weight-file errors.

The fixtures in ``tests/fixtures/video_dcae/`` were produced by ``make_fixtures.py`` there from
Open-Sora's own network (commit recorded in each file): neither the reference code nor the real weights
are needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from scenetok.components.image_compressors._video_dcae_net import LinearAttention, VideoDCAENet, reference_names
from scenetok.components.image_compressors.video_dcae import (
    RELEASED_PARAMETERS,
    RELEASED_TENSORS,
    Architecture,
    VideoDCAE,
)
from scenetok.testing.contracts import ImageCompressorContract
from scenetok.weights import WEIGHTS_DIR_ENV, CheckpointConversionError, MissingWeightsError

FIXTURES = Path(__file__).parent / "fixtures" / "video_dcae"
WEIGHTS = FIXTURES / "tiny_weights.safetensors"
TINY = dict(VideoDCAE.presets["tiny"], random_init=True)
#: Open-Sora commit the fixtures were made from.
REFERENCE_COMMIT = "7ad6a96a135feb81f755c84fb391818718f6beb2"


def fixture_architecture() -> dict:
    with safe_open(str(WEIGHTS), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["commit"] == REFERENCE_COMMIT
    return json.loads(metadata["architecture"])


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


class TestVideoDCAEContract(ImageCompressorContract):
    component_class = VideoDCAE

    def make_config(self):
        return VideoDCAE.Config(**TINY)

    def frames(self, spec):
        return 2 * spec.temporal_factor  # one latent frame would decode to a single frame


# ----------------------------------------------------------------------------------------------
# key map and sizes at the released configuration
# ----------------------------------------------------------------------------------------------


def test_key_map_matches_the_released_key_list_and_shapes():
    released = json.loads((FIXTURES / "reference_keys.json").read_text())
    assert released["commit"] == REFERENCE_COMMIT and released["config"] == "dc-ae-f32t4c128"
    with torch.device("meta"):
        net = VideoDCAENet(Architecture())
    names = reference_names(net)
    ours = net.state_dict()
    assert sorted(names.values()) == sorted(released["keys"])  # every released tensor, each once
    wrong = {n: (tuple(ours[n].shape), tuple(released["keys"][r])) for n, r in names.items()
             if tuple(ours[n].shape) != tuple(released["keys"][r])}
    assert not wrong
    assert len(names) == released["tensors"] == RELEASED_TENSORS == 339
    assert sum(p.numel() for p in net.parameters()) == released["parameters"] == RELEASED_PARAMETERS
    assert VideoDCAE.parameter_count(VideoDCAE.Config()) == RELEASED_PARAMETERS  # ~459.5 M (FORMATS §6.1)
    # Spot checks against names quoted in FORMATS §6.1.
    assert names["encoder.conv_in.weight"] == "encoder.project_in.conv.weight"
    assert names["encoder.levels.0.blocks.0.conv1.weight"] == "encoder.stages.0.op_list.0.main.conv1.conv.weight"
    assert names["decoder.conv_out.bias"] == "decoder.project_out.op_list.2.conv.bias"


def test_paper_recipe_validates_and_summarises_without_weights(capsys, monkeypatch):
    from scenetok.cli import main

    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    assert main(["validate", "re10k/scenetok"]) == 0
    assert "target_image_compressor  video_dcae" in capsys.readouterr().out
    assert main(["model", "summary", "re10k/scenetok"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "target_image_compressor" in x)
    assert "459,462,147 frozen" in line and "published weights: 459,462,147 parameters" in line
    assert main(["model", "summary", "re10k/scenetok", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["components"]["target_image_compressor"]
    assert row["frozen_parameters"] == row["released_parameters"] == RELEASED_PARAMETERS
    assert row["parameters"] is None  # frozen: not in the trainable count
    assert row["latent"]["channels"] == 128 and row["latent"]["temporal_factor"] == 4


def test_latent_spec_needs_no_weights():
    spec = VideoDCAE.latent_spec(VideoDCAE.Config())
    assert (spec.channels, spec.spatial_factor, spec.temporal_factor) == (128, 32, 4)
    assert spec.latent_frames(32) == 8  # the RE10K renderer's 8 latent frames for 32 target frames
    with torch.device("meta"):  # builds without a weights file on the meta device (validation path)
        VideoDCAE(VideoDCAE.Config())


# ----------------------------------------------------------------------------------------------
# parity with the reference network (tiny width, same random weights)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded() -> VideoDCAE:
    return VideoDCAE(VideoDCAE.Config(checkpoint=str(WEIGHTS), **fixture_architecture()))


@pytest.mark.parametrize(("source", "target", "part"), [
    ("video", "encoded_video", "encoder"),              # 8 frames -> 2 latent frames
    ("image", "encoded_image", "encoder"),              # 1 frame -> 1 latent frame
    ("latent", "decoded_latent", "decoder"),            # 2 latent frames -> 8 frames
    ("latent_image", "decoded_latent_image", "decoder"),
])
def test_network_matches_the_reference(loaded, source, target, part):
    io = load_file(str(FIXTURES / "tiny_io.safetensors"))
    with torch.no_grad():
        actual = getattr(loaded.net, part)(io[source])
    assert actual.shape == io[target].shape
    assert relative_error(actual, io[target]) < 1e-5
    torch.testing.assert_close(actual, io[target], rtol=1e-5, atol=1e-5 * io[target].abs().max().item())


def test_component_scales_and_reorders_like_the_official_code(loaded):
    io = load_file(str(FIXTURES / "tiny_io.safetensors"))
    images = ((io["video"] + 1) / 2).transpose(1, 2)  # (1, 8, 3, 64, 32) in [0, 1]
    latents = loaded.encode(images)
    expected = io["encoded_video"].transpose(1, 2) * 0.493
    assert latents.shape == (1, 2, 8, 2, 1)
    assert relative_error(latents, expected) < 1e-5
    decoded = loaded.decode(io["latent"].transpose(1, 2) * 0.493)
    expected_frames = (io["decoded_latent"].transpose(1, 2) * 0.5 + 0.5).clamp(0, 1)
    torch.testing.assert_close(decoded, expected_frames, rtol=0, atol=1e-5)
    # Batched calls equal one-by-one calls.
    pair = torch.cat([images, images.flip(-1)])
    torch.testing.assert_close(loaded.encode(pair)[1], loaded.encode(images.flip(-1))[0], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# tiling
# ----------------------------------------------------------------------------------------------


def make_local(net: VideoDCAENet) -> None:
    """Make every conv a 1x1x1 (centre tap only) and switch attention off: the network then maps each
    32x32-pixel x 4-frame cell to its latent cell and back independently, with all its other parts
    (norms, gates, shortcuts, resampling) still active -- so tiling must reproduce it exactly."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv3d) and max(module.kernel_size) > 1:
                k = module.kernel_size[0] // 2
                centre = module.weight[:, :, k, k, k].clone()
                module.weight.zero_()
                module.weight[:, :, k, k, k] = centre
            if isinstance(module, LinearAttention):
                module.qkv.weight.zero_()


def count_calls(module: nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_tiled_encode_and_decode_equal_untiled_output():
    tiled = VideoDCAE(VideoDCAE.Config(**TINY, tile_size=64, tile_frames=8, tile_overlap=0.5))
    make_local(tiled.net)
    whole = VideoDCAE(VideoDCAE.Config(**TINY, tile_size=0, tile_frames=0))
    whole.net.load_state_dict(tiled.net.state_dict())
    images = torch.rand(1, 12, 3, 96, 96)  # 3 x 3 latent cells, 3 latent frames

    encoder_calls, decoder_calls = count_calls(tiled.net.encoder), count_calls(tiled.net.decoder)
    latents = whole.encode(images)
    tiled_latents = tiled.encode(images)
    # 2-cell tiles sharing 1 cell: 2 tiles down x 2 across, one clip
    assert encoder_calls[0] == 4
    torch.testing.assert_close(tiled_latents, latents, rtol=1e-5, atol=1e-6)
    frames = whole.decode(latents)
    tiled_frames = tiled.decode(latents)
    assert decoder_calls[0] == 2 * 4  # 2 temporal tiles (2 latent frames each) x 4 spatial tiles
    torch.testing.assert_close(tiled_frames, frames, rtol=1e-5, atol=1e-6)


def test_untiled_when_the_input_fits_one_tile():
    a = VideoDCAE(VideoDCAE.Config(**TINY))  # 256 px / 32 frames tiles: nothing to tile here
    b = VideoDCAE(VideoDCAE.Config(**TINY, tile_size=0, tile_frames=0))
    b.net.load_state_dict(a.net.state_dict())
    images = torch.rand(1, 8, 3, 64, 32)
    assert torch.equal(a.encode(images), b.encode(images))
    latents = a.encode(images)
    assert torch.equal(a.decode(latents), b.decode(latents))


# ----------------------------------------------------------------------------------------------
# temporal grouping (SCENETOK §7.4: 16-frame clips, frames trimmed to a multiple of 4)
# ----------------------------------------------------------------------------------------------


def test_frames_are_encoded_in_independent_16_frame_groups():
    grouped = VideoDCAE(VideoDCAE.Config(**TINY))
    assert grouped.config.chunk_frames == 16
    images = torch.rand(1, 32, 3, 32, 32)
    latents = grouped.encode(images)
    assert latents.shape[1] == 8
    torch.testing.assert_close(latents[:, :4], grouped.encode(images[:, :16]), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(latents[:, 4:], grouped.encode(images[:, 16:]), rtol=1e-6, atol=1e-6)
    changed = images.clone()
    changed[:, 16:] = torch.rand_like(changed[:, 16:])
    assert torch.equal(grouped.encode(changed)[:, :4], latents[:, :4])
    # Without grouping the encoder sees all 32 frames (convolutions and attention span the clips).
    whole = VideoDCAE(VideoDCAE.Config(**TINY, chunk_frames=0))
    whole.net.load_state_dict(grouped.net.state_dict())
    assert (whole.encode(changed)[:, :4] - whole.encode(images)[:, :4]).abs().max() > 1e-4


@pytest.mark.parametrize("k", [2, 5])
def test_4k_frames_give_k_latent_frames_and_4k_plus_1_is_refused(k):
    compressor = VideoDCAE(VideoDCAE.Config(**TINY))
    spec = compressor.spec
    assert compressor.encode(torch.rand(1, 4 * k, 3, 32, 32)).shape[1] == spec.latent_frames(4 * k) == k
    assert spec.frame_groups(4 * k)[1] == [4, 5, 6, 7]  # latent j covers frames 4j .. 4j+3
    with pytest.raises(ValueError, match=rf"{4 * k + 1} frames.*4k frames.*1 would go"):
        compressor.encode(torch.rand(1, 4 * k + 1, 3, 32, 32))


def test_bad_sizes_and_configs_are_refused():
    compressor = VideoDCAE(VideoDCAE.Config(**TINY))
    with pytest.raises(ValueError, match="48x32 pixels are not multiples of 32"):
        compressor.encode(torch.rand(1, 4, 3, 48, 32))
    with pytest.raises(ValueError, match="single latent frame decodes to one frame"):
        compressor.decode(torch.randn(1, 1, 8, 1, 1))
    with pytest.raises(ValueError, match=r"decode expects latents \(B, F, 8, h, w\)"):
        compressor.decode(torch.randn(1, 2, 4, 1, 1))
    for bad, message in [
        ({"chunk_frames": 6}, "chunk_frames must be 0 or a multiple of 4"),
        ({"tile_size": 100}, "tile_size must be 0 or a multiple of 32"),
        ({"tile_frames": 4}, "tile_frames must be 0 or a multiple of 4 covering at least 2"),
        ({"tile_overlap": 0.75}, r"tile_overlap must be in \[0, 0.5\]"),
        ({"latent_channels": 12}, "latent_channels=12 must divide widths"),
        ({"attention_levels": [0]}, "widths.0.=8 is not a multiple of head_dim=32"),
        ({"checkpoint": "x.safetensors"}, "either a checkpoint path or random_init"),
    ]:
        with pytest.raises(ValueError, match=message):
            VideoDCAE.Config(**{**TINY, **bad})


# ----------------------------------------------------------------------------------------------
# weight files
# ----------------------------------------------------------------------------------------------


def test_missing_weights_name_the_file_the_source_and_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path))
    with pytest.raises(MissingWeightsError) as error:
        VideoDCAE(VideoDCAE.Config())
    message = str(error.value)
    assert str(tmp_path / "F32T4C128_AE.safetensors") in message
    assert "huggingface.co/hpcai-tech/Open-Sora-v2-Video-DC-AE" in message and "$SCENETOK_WEIGHTS_DIR" in message
    monkeypatch.delenv(WEIGHTS_DIR_ENV)
    with pytest.raises(MissingWeightsError, match="currently unset"):
        VideoDCAE(VideoDCAE.Config())


def test_weights_are_found_in_the_weights_dir(monkeypatch, tmp_path):
    (tmp_path / "F32T4C128_AE.safetensors").write_bytes(WEIGHTS.read_bytes())
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path))
    loaded = VideoDCAE(VideoDCAE.Config(**fixture_architecture()))
    expected = {k: v.float() for k, v in load_file(str(WEIGHTS)).items()}
    for name, ref in reference_names(loaded.net).items():
        assert torch.equal(loaded.net.state_dict()[name], expected[ref]), name
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.net.training


def test_wrong_files_are_refused_with_the_keys_named(tmp_path):
    arch = fixture_architecture()
    state = load_file(str(WEIGHTS))

    not_safetensors = tmp_path / "F32T4C128_AE.pt"
    not_safetensors.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(ValueError, match=r"F32T4C128_AE.pt is not a .safetensors file"):
        VideoDCAE(VideoDCAE.Config(checkpoint=str(not_safetensors), **arch))

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="garbage.safetensors is not a readable safetensors file"):
        VideoDCAE(VideoDCAE.Config(checkpoint=str(garbage), **arch))

    edited = dict(state)
    del edited["decoder.project_out.op_list.2.conv.bias"]
    edited["encoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "edited.safetensors"
    save_file(edited, str(path))
    with pytest.raises(CheckpointConversionError,
                       match=r"1 missing: decoder.project_out.op_list.2.conv.bias; 1 unexpected: encoder.extra.weight"):
        VideoDCAE(VideoDCAE.Config(checkpoint=str(path), **arch))

    with pytest.raises(CheckpointConversionError, match=r"with another shape: .*architecture fields"):
        VideoDCAE(VideoDCAE.Config(checkpoint=str(WEIGHTS), **{**arch, "latent_channels": 16}))

    image_dcae = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({"encoder.down_blocks.0.0.conv1.weight": torch.zeros(1), "encoder.conv_in.weight": torch.zeros(1)},
              str(image_dcae))
    with pytest.raises(CheckpointConversionError, match="image DC-AE \\(AutoencoderDC\\)"):
        VideoDCAE(VideoDCAE.Config(checkpoint=str(image_dcae), **arch))


# ----------------------------------------------------------------------------------------------
# in a SceneTok: trains on its latents and renders RGB
# ----------------------------------------------------------------------------------------------


def test_scenetok_with_a_video_dcae_target_trains_and_renders_rgb():
    from scenetok.data.dataset import build_dataset
    from scenetok.model import SceneTok
    from scenetok.recipe import load_recipe
    from scenetok.types import collate_scenes

    recipe = load_recipe(Path(__file__).parent / "recipes" / "tiny.yaml", [
        "dataset.image_size=32", "dataset.target_views=8", "dataset.frames_per_scene=16",
        "token_compressor.patch_size=2",
        "target_image_compressor={name: video_dcae, preset: tiny, random_init: true}",
    ])
    model = SceneTok(recipe)
    assert isinstance(model.target_image_compressor, VideoDCAE)
    dataset = build_dataset(recipe, split="train")
    batch = collate_scenes([dataset[0], dataset[1]])
    loss = model.loss(batch, generator=torch.Generator().manual_seed(0))["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert model.target_latents(batch.target).shape == (2, 2, 8, 1, 1)  # 8 frames -> 2 latent frames
    model.eval()
    frames = model.reconstruct(batch, steps=2)
    assert frames.shape == batch.target.images.shape == (2, 8, 3, 32, 32)
    assert 0.0 <= float(frames.min()) <= float(frames.max()) <= 1.0


def test_data_cache_writes_video_dcae_targets_and_training_on_them_matches_raw_images(tmp_path, capsys):
    from scenetok.checkpoint import load_checkpoint
    from scenetok.cli import main
    from scenetok.data.cache import CachedLatentDataset
    from scenetok.data.dataset import build_dataset
    from scenetok.recipe import load_recipe
    from scenetok.train.loop import train_recipe

    tiny = str(Path(__file__).parent / "recipes" / "tiny.yaml")
    # The target compressor loads the fixture weights, so the cache and the raw run use the same network.
    target = {"name": "video_dcae", "checkpoint": str(WEIGHTS), **fixture_architecture()}
    overrides = ["dataset.image_size=32", "dataset.target_views=8", "dataset.frames_per_scene=16",
                 "dataset.num_scenes=4", "token_compressor.patch_size=2", "train.steps=2",
                 f"target_image_compressor={json.dumps(target)}"]
    cache = tmp_path / "cache"
    assert main(["data", "cache", tiny, *overrides, "--out", str(cache), "--no-progress"]) == 0
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["compressor"]["name"] == "pixel" and manifest["target_compressor"]["name"] == "video_dcae"
    assert manifest["parts"]["target"]["latent_shapes"] == [[2, 8, 1, 1]]  # 8 frames -> 2 latent frames

    recipe = load_recipe(tiny, overrides)
    sample = build_dataset(recipe, split="train")[1]
    expected = VideoDCAE(recipe["target_image_compressor"].config).encode(sample["target"]["images"][None])[0]
    cached = CachedLatentDataset(cache, expect_compressor="pixel", expect_target_compressor="video_dcae")
    torch.testing.assert_close(cached[1]["target"]["latents"], expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="target views cached with 'video_dcae', but .* is the same compressor"):
        CachedLatentDataset(cache, expect_compressor="pixel")

    train_recipe(tiny, overrides, run_dir=tmp_path / "raw", progress=False)
    train_recipe(tiny, overrides + [f"train.latent_cache={cache}"], run_dir=tmp_path / "cached", progress=False)
    raw = load_checkpoint(tmp_path / "raw").tensors["model"]
    on_cache = load_checkpoint(tmp_path / "cached").tensors["model"]
    for key in raw:
        torch.testing.assert_close(raw[key], on_cache[key], atol=1e-6, rtol=1e-5, msg=key)

    # eval renders whole 4-frame groups (the index's context frames lie inside its 8 targets) and
    # scores only the novel frames.
    from scenetok.eval.evaluate import evaluate_run

    report = evaluate_run(tmp_path / "raw", overrides=["eval.target_views=8", "render.steps=2"], progress=False)
    index = json.loads(Path(report.data["metadata"]["index"]).read_text())
    shared = sum(len(set(e["context"]) & set(e["target"])) for e in list(index.values())[:2])
    assert shared > 0 and report.data["metadata"]["target_frames_excluded_as_context"] == shared
    assert report.data["methods"]["model"]["mean"]["num_frames"] == 2 * 8 - shared
    assert report.data["methods"]["model"]["mean"]["psnr"] > 0
