"""``scenetok import-official``: released checkpoints -> scenetok runs.

Key sets: ``tests/fixtures/official_keys/*.json`` hold the full official state-dict layout
(key -> shape) of each released configuration at real size, generated from the official modules
by ``make_keysets.py``; ``tiny.json`` is the same structure at test size, filled with random values
here to check that imported weights give exactly the outputs of the scenetok modules.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scenetok import registry
from scenetok.cli import main
from scenetok.convert import official
from scenetok.convert.official import OfficialConfig, OfficialImportError, import_official
from scenetok.model import SceneTok
from scenetok.nn.utils import rename_key
from scenetok.recipe import load_recipe
from scenetok.testing.contracts import random_cameras

KEYSETS = Path(__file__).parent / "fixtures" / "official_keys"
TINY_RECIPE = KEYSETS / "tiny_recipe.yaml"
TINY = OfficialConfig(name="tiny", recipe=str(TINY_RECIPE), compat=("decoder.camera_bf16_rounding=true",),
                      signature={"compressor.scene_tokens": (1, 8, 64)}, experiment="tiny")
TINY_CONFIGS = {"tiny": TINY}


def keyset(name: str) -> dict:
    return json.loads((KEYSETS / f"{name}.json").read_text())


def shapes_of(name: str) -> dict[str, tuple[int, ...]]:
    return {key: tuple(shape) for key, shape in keyset(name)["keys"].items()}


# ----------------------------------------------------------------------------------------------
# Full-size key sets: detection and a complete account on the meta device
# ----------------------------------------------------------------------------------------------


SCENETOK_CONFIGS = ("re10k", "dl3dv_videodc", "dl3dv_wan")


def test_every_released_configuration_is_covered():
    assert set(official.RELEASED_CONFIGS) == {*SCENETOK_CONFIGS, "scenegen_shift1", "scenegen_shift4",
                                              "scenegen_shift12"}


@pytest.mark.parametrize("name", SCENETOK_CONFIGS)
def test_released_keyset_maps_completely(name):
    data = keyset(name)
    assert data["official_commit"] == "b7aed48"
    shapes = shapes_of(name)
    config = official.detect_config(shapes, f"{name}.json")
    assert config.name == name
    recipe = official.load_config_recipe(config)
    targets = official.target_shapes(recipe)  # the scenetok networks, built on the meta device
    account = official.account_keys(shapes, recipe, targets)
    assert account.errors == []
    # Every official key is mapped or dropped on purpose; the only drops are the RoPE tables.
    assert set(account.mapped.values()) | set(account.dropped) == set(shapes)
    assert sorted(account.dropped) == ["compressor.feat_rope.freqs_cos", "compressor.feat_rope.freqs_sin"]
    # Every scenetok parameter is filled; the only scenetok-only one is the CFG null token.
    all_targets = {f"{section}.{key}" for section, keys in targets.items() for key in keys}
    assert set(account.mapped) | set(account.scenetok_only) == all_targets
    assert list(account.scenetok_only) == ["decoder.null_token"]
    assert len(account.mapped) == len(shapes) - 2


@pytest.mark.parametrize("shift", [1, 4, 12])
def test_released_scenegen_keyset_maps_completely(shift):
    data = keyset("scenegen_re10k")
    assert f"scenegen_shift{shift}_re10k.ckpt" in data["checkpoints"]
    shapes = shapes_of("scenegen_re10k")
    # The three shifts share one layout: the released file name picks the configuration.
    config = official.detect_config(shapes, f"checkpoints/scenegen_shift{shift}_re10k.ckpt")
    assert config.name == f"scenegen_shift{shift}"
    recipe = official.load_config_recipe(config)
    assert recipe["sampler"].config.shift == shift
    targets = official.target_shapes(recipe)  # the scene generator, sized by re10k/scenetok, on meta
    account = official.account_keys(shapes, recipe, targets)
    assert account.errors == [] and account.scenetok_only == {}
    assert set(account.mapped.values()) | set(account.dropped) == set(shapes)
    assert sorted(account.dropped) == ["scene_generator.anchor_pose_embed.model.model.pos_embed",
                                       "scene_generator.pose_embed.model.model.pos_embed"]
    assert set(account.mapped) == {f"scene_generator.{key}" for key in targets["scene_generator"]}


def test_scenegen_shift_needs_the_file_name_or_config():
    with pytest.raises(OfficialImportError, match="ambiguous configuration.*pass --config"):
        official.detect_config(shapes_of("scenegen_re10k"), "downloaded.ckpt")


def test_keyset_sizes_match_the_reference_counts():
    # SCENETOK.md section 12: compressor + its 8,192 RoPE-table values + renderer.
    assert keyset("re10k")["num_values"] == 238_013_824 + 8_192 + 564_188_256
    assert keyset("dl3dv_videodc")["num_values"] == 238_407_040 + 8_192 + 564_188_256
    assert keyset("dl3dv_wan")["num_values"] == 238_407_040 + 8_192 + 559_305_744
    # SCENETOK.md section 6.1: 1,256,236,096 parameters + two persistent 16384 x 1536 sin-cos tables.
    assert keyset("scenegen_re10k")["num_values"] == 1_256_236_096 + 2 * 16_384 * 1_536


def test_released_compat_switches():
    configs = official.RELEASED_CONFIGS
    assert "decoder.camera_legacy_channel_order=true" in configs["dl3dv_wan"].compat
    assert "dataset.scale_context_focal_by_256=true" in configs["dl3dv_wan"].compat
    assert "dataset.scale_focal_by_256=true" in configs["dl3dv_videodc"].compat
    assert not any("focal" in s or "legacy" in s for s in configs["re10k"].compat)
    recipe = official.load_config_recipe(configs["dl3dv_wan"])
    assert recipe["decoder"].config.camera_legacy_channel_order is True
    assert recipe["dataset"].config.scale_context_focal_by_256 is True
    # ... and off in the shipped recipe itself.
    plain = load_recipe(configs["dl3dv_wan"].recipe_path())
    assert plain["decoder"].config.camera_legacy_channel_order is False
    assert plain["dataset"].config.scale_context_focal_by_256 is False
    assert plain["decoder"].config.camera_bf16_rounding is False


def test_cli_config_names_match_the_released_configs():
    from scenetok.convert.official_command import CONFIG_NAMES

    assert set(CONFIG_NAMES) == set(official.RELEASED_CONFIGS)


def test_missing_keys_are_named_the_official_way():
    # The key maps run backwards, so a missing parameter is reported by its checkpoint name.
    shapes = shapes_of("re10k")
    del shapes["denoiser.model.blocks.7.attn2.to_k.weight"], shapes["compressor.aggregate.3.norm3.weight"]
    recipe = official.load_config_recipe(official.RELEASED_CONFIGS["re10k"])
    account = official.account_keys(shapes, recipe, official.target_shapes(recipe))
    message = "; ".join(account.errors)
    assert "denoiser.model.blocks.7.attn2.to_k.weight (1024, 1024)" in message
    assert "compressor.aggregate.3.norm3.weight (768,)" in message


# ----------------------------------------------------------------------------------------------
# Tiny official-shaped checkpoint with real values
# ----------------------------------------------------------------------------------------------


def tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator) * 0.2 for key, shape in shapes_of("tiny").items()}


def save_lightning(path: Path, state: dict, step: int = 7, **extra) -> Path:
    torch.save({"state_dict": state, "global_step": step, **extra}, path)
    return path


def direct_modules(state: dict[str, torch.Tensor]):
    """The scenetok modules of the tiny recipe (with the switch the import must set) loaded
    straight from the official state dict through the components' key maps."""
    recipe = load_recipe(TINY_RECIPE, ["decoder.camera_bf16_rounding=true"])
    from scenetok.model import build_components, image_size_of

    built = build_components(recipe, image_size_of(recipe["dataset"].config), networks_only=True)
    for prefix, section in (("compressor.", "token_compressor"), ("denoiser.", "decoder")):
        module = built[section]
        key_map = type(module).official_key_map()
        renamed = {}
        for key, value in state.items():
            if key.startswith(prefix):
                ours = rename_key(key[len(prefix):], key_map)
                if ours is not None:
                    renamed[ours] = value
        missing, unexpected = module.load_state_dict(renamed, strict=False)
        assert unexpected == [] and missing == ([] if section == "token_compressor" else ["null_token"])
        module.eval()
    return built["token_compressor"], built["decoder"]


def test_tiny_checkpoint_round_trips_with_identical_outputs(tmp_path):
    state = tiny_state()
    ckpt = save_lightning(tmp_path / "tiny.ckpt", state)
    result = import_official(ckpt, tmp_path / "run", configs=TINY_CONFIGS)
    assert result.config.name == "tiny" and result.step == 7
    assert result.account.errors == [] and len(result.account.mapped) == len(state) - 2

    model = SceneTok.from_pretrained(tmp_path / "run")
    assert model.trained_step == 7
    assert model.recipe["decoder"].config.camera_bf16_rounding is True
    assert torch.equal(model.decoder.null_token, torch.zeros_like(model.decoder.null_token))
    compressor, decoder = direct_modules(state)

    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 3, 32, 8, 8, generator=generator)
    context = random_cameras(2, 3, generator)
    with torch.no_grad():
        got, want = model.token_compressor(latents, context), compressor(latents, context)
        assert torch.equal(got.mean, want.mean) and torch.equal(got.logvar, want.logvar)
        tokens = want.mean
        noisy = torch.randn(2, 2, 8, 4, 4, generator=generator)
        t = torch.rand(2, 2, generator=generator) * 999
        targets = random_cameras(2, 8, generator)
        out = model.decoder(noisy, t, targets, tokens)
        assert torch.equal(out, decoder(noisy, t, targets, tokens))
        assert out.abs().sum() > 0  # the zero-initialised output layer was really overwritten

    report = json.loads((tmp_path / "run" / "import.json").read_text())
    assert report["mapped"]["decoder.scene_token_proj.weight"] == "denoiser.cnd_proj.weight"
    assert report["scenetok_only"] == {"decoder.null_token": result.account.scenetok_only["decoder.null_token"]}
    assert set(report["dropped"]) == {"compressor.feat_rope.freqs_cos", "compressor.feat_rope.freqs_sin"}


def test_guidance_scale_one_never_reads_the_null_token(tmp_path):
    ckpt = save_lightning(tmp_path / "tiny.ckpt", tiny_state())
    import_official(ckpt, tmp_path / "run", configs=TINY_CONFIGS)
    model = SceneTok.from_pretrained(tmp_path / "run")
    generator = torch.Generator().manual_seed(3)
    tokens = torch.randn(1, 8, 16, generator=generator)
    cameras = random_cameras(1, 8, generator)
    noise = torch.randn(1, 2, 8, 4, 4, generator=generator)

    def render() -> torch.Tensor:
        return model.render(tokens, cameras, steps=2, guidance=1.0, decode=False, noise=noise)

    before = render()
    with torch.no_grad():
        model.decoder.null_token.normal_()
    assert torch.equal(before, render())


def test_ema_prefix_is_dropped_on_purpose(tmp_path):
    state = tiny_state()
    state["ema.n_averaged"] = torch.tensor(3)
    result = import_official(save_lightning(tmp_path / "t.ckpt", state), tmp_path / "run", configs=TINY_CONFIGS)
    assert "ema.n_averaged" in result.account.dropped


def test_plain_state_dict_and_explicit_config(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(tiny_state(), path)
    result = import_official(path, tmp_path / "run", config="tiny", configs=TINY_CONFIGS)
    assert result.step == 0 and not result.account.errors


def test_safetensors_input(tmp_path):
    from safetensors.torch import save_file

    save_file(tiny_state(), str(tmp_path / "tiny.safetensors"))
    result = import_official(tmp_path / "tiny.safetensors", tmp_path / "run", configs=TINY_CONFIGS)
    assert result.config.name == "tiny" and not result.account.errors
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes((tmp_path / "tiny.safetensors").read_bytes()[:100])
    assert "not a readable safetensors file" in import_error(tmp_path / "again", broken)


def test_refuses_to_overwrite_a_run(tmp_path):
    ckpt = save_lightning(tmp_path / "t.ckpt", tiny_state())
    import_official(ckpt, tmp_path / "run", configs=TINY_CONFIGS)
    with pytest.raises(OfficialImportError, match="already holds checkpoints"):
        import_official(ckpt, tmp_path / "run", configs=TINY_CONFIGS)


# ----------------------------------------------------------------------------------------------
# Errors: one line naming the file and the keys
# ----------------------------------------------------------------------------------------------


class HyperParameters:
    """Stands for the config objects a Lightning checkpoint pickles next to its weights."""

    lr = 1e-4


def import_error(tmp_path, ckpt: Path, **kwargs) -> str:
    with pytest.raises(OfficialImportError) as info:
        import_official(ckpt, tmp_path / "run", configs=kwargs.pop("configs", TINY_CONFIGS), **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(ckpt) in message
    return message


def test_pickled_objects_are_refused_with_how_to_resave(tmp_path):
    ckpt = save_lightning(tmp_path / "pickled.ckpt", tiny_state(), hyper_parameters=HyperParameters())
    message = import_error(tmp_path, ckpt)
    assert "pickled Python objects" in message and "HyperParameters" in message
    assert "torch.save({'state_dict'" in message


def test_truncated_file(tmp_path):
    whole = save_lightning(tmp_path / "whole.ckpt", tiny_state())
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert "truncated or corrupt" in import_error(tmp_path, cut)


@pytest.mark.parametrize("content", [b"junk", b"not a checkpoint", b"PK\x03\x04" + b"\0" * 40])
def test_garbage_files(tmp_path, content):
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(content)
    assert "truncated or corrupt" in import_error(tmp_path, path)


def test_unknown_configuration_names_the_decisive_keys(tmp_path):
    state = tiny_state()
    state["compressor.scene_tokens"] = torch.zeros(1, 9, 64)
    message = import_error(tmp_path, save_lightning(tmp_path / "u.ckpt", state))
    assert "unknown configuration" in message and "compressor.scene_tokens (1, 9, 64)" in message
    # The released configurations: a checkpoint of none of them.
    message = import_error(tmp_path, save_lightning(tmp_path / "u2.ckpt", tiny_state()),
                           configs=official.RELEASED_CONFIGS)
    assert "unknown configuration" in message and "re10k" in message


def test_unknown_config_name(tmp_path):
    message = import_error(tmp_path, save_lightning(tmp_path / "n.ckpt", tiny_state()), config="nope")
    assert "unknown configuration 'nope'" in message


def test_missing_key(tmp_path):
    state = tiny_state()
    del state["denoiser.model.blocks.1.mlp.w3.weight"]
    message = import_error(tmp_path, save_lightning(tmp_path / "m.ckpt", state))
    assert "1 keys missing" in message and "denoiser.model.blocks.1.mlp.w3.weight (64, 170)" in message


def test_misshaped_key(tmp_path):
    state = tiny_state()
    state["denoiser.cnd_proj.weight"] = torch.zeros(64, 17)
    message = import_error(tmp_path, save_lightning(tmp_path / "s.ckpt", state))
    assert "wrong shape" in message
    assert "denoiser.cnd_proj.weight (64, 17) vs decoder.scene_token_proj.weight (64, 16)" in message


def test_unknown_key(tmp_path):
    state = tiny_state()
    state["denoiser.model.legacy_thing.weight"] = torch.zeros(3)
    state["optimizer_moment"] = torch.zeros(3)
    message = import_error(tmp_path, save_lightning(tmp_path / "k.ckpt", state))
    assert "2 keys no rule maps" in message and "denoiser.model.legacy_thing.weight" in message


def test_scene_generator_checkpoints_need_the_frozen_scenetok_run(tmp_path):
    state = {"scene_generator.model.pos_embed": torch.zeros(1, 512, 1536),
             "scene_generator.model.c_embedder.proj.weight": torch.zeros(1536, 32, 1, 1)}
    ckpt = save_lightning(tmp_path / "scenegen_shift4_re10k.ckpt", state)
    message = import_error(tmp_path, ckpt, configs=official.RELEASED_CONFIGS)
    assert "SceneGen checkpoint needs its frozen SceneTok" in message and "scenegen.scenetok_run=" in message


def test_a_scenetok_checkpoint_is_not_a_scenegen_one(tmp_path):
    # Forcing a SceneGen configuration on SceneTok keys names them as keys of sections it lacks.
    recipe = official.load_config_recipe(official.RELEASED_CONFIGS["scenegen_shift4"])
    account = official.account_keys(shapes_of("re10k"), recipe, official.target_shapes(recipe))
    assert "a token_compressor key; this configuration has no token_compressor" in " ".join(account.errors)
    assert "595 keys missing" in " ".join(account.errors)  # every scene-generator parameter


def test_cli_error_is_one_line(tmp_path, capsys):
    ckpt = tmp_path / "broken.ckpt"
    ckpt.write_bytes(b"not a checkpoint")
    assert main(["import-official", str(ckpt), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scenetok: error: ") and str(ckpt) in err and "\n" not in err


def test_importer_reaches_components_through_the_registry():
    source = Path(official.__file__).read_text() + Path(official.__file__).with_name("official_command.py").read_text()
    assert "scenetok.components" not in source
    assert registry.get_component("decoder", "dit").official_scenetok_only().keys() == {"null_token"}


def test_legacy_torch_save_format(tmp_path):
    path = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": tiny_state(), "global_step": 3}, path, _use_new_zipfile_serialization=False)
    assert import_official(path, tmp_path / "run", configs=TINY_CONFIGS).step == 3


def test_cli_imports_and_stores_overrides(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(official.RELEASED_CONFIGS, "tiny", TINY)  # detection sees the tiny configuration
    ckpt = save_lightning(tmp_path / "tiny.ckpt", tiny_state(), step=11)
    assert main(["import-official", str(ckpt), "--out", str(tmp_path / "run"), "dataset.num_scenes=3"]) == 0
    out = capsys.readouterr().out
    assert "configuration: tiny" in out and "123 mapped, 2 dropped on purpose, 1 scenetok-only" in out
    assert "decoder.camera_bf16_rounding=true" in out
    model = SceneTok.from_pretrained(tmp_path / "run")
    assert model.trained_step == 11 and model.recipe["dataset"].config.num_scenes == 3


TINY_WAN = OfficialConfig(
    name="tiny_wan", recipe=str(KEYSETS / "tiny_wan_recipe.yaml"),
    compat=("decoder.camera_bf16_rounding=true", "decoder.camera_legacy_channel_order=true"),
    signature={"compressor.scene_tokens": (1, 8, 64), "denoiser.model.x_embedder.proj.weight": (64, 4, 1, 1)})


@pytest.mark.slow
def test_wan_structure_renders_end_to_end_after_import(tmp_path):
    """The dl3dv_wan path at test size: import, then `scenetok render` writes frames (random-init
    VA-VAE and Wan 2.2 stand in for the released autoencoders)."""
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=generator) * 0.2 for k, shape in shapes_of("tiny_wan").items()}
    result = import_official(save_lightning(tmp_path / "wan.ckpt", state), tmp_path / "run",
                             configs={"tiny_wan": TINY_WAN})
    assert result.config.name == "tiny_wan" and not result.account.errors
    model = SceneTok.from_pretrained(tmp_path / "run")
    assert model.decoder.config.camera_legacy_channel_order is True
    assert main(["render", str(tmp_path / "run"), "--out", str(tmp_path / "render"), "--no-progress"]) == 0
    frames = sorted((tmp_path / "render" / "frames").glob("*.png"))
    assert len(frames) == 34


TINY_SCENEGEN = OfficialConfig(
    name="tiny_scenegen", recipe=str(KEYSETS / "tiny_scenegen_recipe.yaml"),
    compat=("scene_generator.camera_bf16_rounding=true", "scene_generator.ray_epsilon=1e-6"),
    signature={"scene_generator.model.pos_embed": (1, 8, 64)})


def test_tiny_scenegen_checkpoint_round_trips_with_identical_outputs(tmp_path):
    from scenetok.registry import get_component
    from scenetok.scenegen.runs import load_scenegen

    scenetok_run = import_official(save_lightning(tmp_path / "tiny.ckpt", tiny_state()), tmp_path / "scenetok",
                                   configs=TINY_CONFIGS).run_dir
    generator = torch.Generator().manual_seed(4)
    state = {k: torch.randn(shape, generator=generator) * 0.2 for k, shape in shapes_of("tiny_scenegen").items()}
    result = import_official(save_lightning(tmp_path / "sg.ckpt", state, step=5), tmp_path / "scenegen",
                             overrides=[f"scenegen.scenetok_run={scenetok_run}"],
                             configs={"tiny_scenegen": TINY_SCENEGEN})
    assert result.account.errors == [] and result.account.scenetok_only == {}
    assert sorted(result.account.dropped) == ["scene_generator.anchor_pose_embed.model.model.pos_embed",
                                              "scene_generator.pose_embed.model.model.pos_embed"]
    model = load_scenegen(tmp_path / "scenegen")
    assert model.trained_step == 5

    # The same weights loaded straight into the component through its key map.
    cls = get_component("scene_generator", "dit")
    spec = load_recipe(TINY_SCENEGEN.recipe_path(), [*TINY_SCENEGEN.compat, "scenegen.scenetok_run=" + str(scenetok_run)])
    direct = cls(spec["scene_generator"].config, num_tokens=8, token_dim=16, in_channels=32, latent_size=(8, 8))
    key_map = cls.official_key_map()
    direct.load_state_dict({rename_key(k[len("scene_generator."):], key_map): v for k, v in state.items()
                            if rename_key(k[len("scene_generator."):], key_map) is not None})
    direct.eval()
    inputs = (torch.randn(2, 8, 16, generator=generator), torch.rand(2, 8, generator=generator) * 999,
              torch.randn(2, 3, 32, 8, 8, generator=generator), random_cameras(2, 3, generator),
              random_cameras(2, 4, generator), torch.tensor([[True, True, False], [True, False, False]]))
    with torch.no_grad():
        out = model.generator(*inputs)
        assert torch.equal(out, direct(*inputs)) and out.abs().sum() > 0
