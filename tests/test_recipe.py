"""Recipes: extends chains, overrides, replacement rule, strict validation with file + key."""

import textwrap

import pytest
import yaml

from scenetok import recipe as recipes
from scenetok.recipe import RecipeError, compose, load_recipe
from tests.fake_components import FAKE_RECIPE, FAKES


@pytest.fixture
def fakes(registry_override):
    for kind, entries in FAKES.items():
        for name, cls in entries.items():
            registry_override(kind, name, cls)


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_valid_recipe_builds_typed_configs(tmp_path, fakes):
    r = load_recipe(write(tmp_path / "r.yaml", FAKE_RECIPE))
    assert r["token_compressor"].config.num_tokens == 4
    assert r["decoder"].config.width == 16  # default filled in
    assert r["train"].steps == 10 and r["train"].warmup_steps == 2
    assert r["sampler"].name == "fakeflow"  # shorthand `sampler: fakeflow`


def test_extends_chain_relative_paths_and_overrides(tmp_path, fakes):
    (tmp_path / "base").mkdir()
    write(tmp_path / "base" / "root.yaml", FAKE_RECIPE)
    write(tmp_path / "base" / "mid.yaml", "extends: root.yaml\ndecoder: {depth: 3}\n")
    child = write(tmp_path / "child.yaml", "extends: base/mid.yaml\ntoken_compressor: {token_dim: 16}\n")
    r = load_recipe(child, ["decoder.width=32", "train.lr=0.5"])
    assert r["decoder"].config.depth == 3
    assert r["decoder"].config.width == 32
    assert r["token_compressor"].config.token_dim == 16
    assert r["token_compressor"].config.num_tokens == 4
    assert r["train"].lr == 0.5


def test_extends_cycle_is_detected(tmp_path):
    write(tmp_path / "a.yaml", "extends: b.yaml\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(RecipeError, match="cycle"):
        compose(tmp_path / "a.yaml")


def test_changing_a_name_drops_only_keys_the_new_component_rejects(tmp_path, fakes, registry_override):
    from dataclasses import dataclass

    from tests.fake_components import FakeSampler

    class OtherSampler(FakeSampler):
        @dataclass
        class Config:  # shares `steps`; `prediction` is missing
            steps: int = 4
            eta: float = 0.0

    registry_override("sampler", "othersampler", OtherSampler)
    path = write(tmp_path / "r.yaml", FAKE_RECIPE.replace("sampler: fakeflow",
                                                          "sampler: {name: fakeflow, steps: 9, prediction: x}"))
    r = load_recipe(path, ["sampler.name=othersampler"])
    assert r["sampler"].config.steps == 9  # carried: the new Config declares it
    assert "prediction" not in r.data["sampler"]
    assert r.notes == ["sampler: 'fakeflow' -> 'othersampler': kept: steps; dropped: prediction (not a field)"]


def test_two_wrong_fields_are_both_reported_with_file_and_key(tmp_path, fakes):
    path = write(tmp_path / "r.yaml", FAKE_RECIPE.replace("depth: 1", "depth: one, widht: 3"))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    errors = info.value.errors
    assert len(errors) == 2, errors
    assert any(str(path.resolve()) in e and "decoder.depth" in e for e in errors)
    assert any("decoder.widht" in e and "Did you mean 'width'" in e for e in errors)


def test_unknown_component_name_did_you_mean(tmp_path, fakes):
    path = write(tmp_path / "r.yaml", FAKE_RECIPE)
    with pytest.raises(RecipeError, match="Did you mean 'fakedit'"):
        load_recipe(path, ["decoder.name=fakeditt"])


def test_config_post_init_errors_and_bad_override_are_reported(tmp_path, fakes):
    path = write(tmp_path / "r.yaml", FAKE_RECIPE)
    with pytest.raises(RecipeError, match="depth must be >= 1"):
        load_recipe(path, ["decoder.depth=0"])
    with pytest.raises(RecipeError, match="key.subkey=value"):
        load_recipe(path, ["decoder.depth"])


def test_presets_and_fields_next_to_them(tmp_path, fakes):
    path = write(tmp_path / "r.yaml", FAKE_RECIPE)
    r = load_recipe(path, ["token_compressor.preset=L", "token_compressor.num_tokens=8"])
    assert r["token_compressor"].config.depth == 4  # from preset L
    assert r["token_compressor"].config.num_tokens == 8  # field wins over the preset
    with pytest.raises(RecipeError, match="no preset 'XL'"):
        load_recipe(path, ["token_compressor.preset=XL"])


def test_import_paths_are_refused(tmp_path, fakes):
    path = write(tmp_path / "r.yaml", FAKE_RECIPE + "decoder_x: 1\n")
    with pytest.raises(RecipeError, match="unknown top-level key"):
        load_recipe(path)
    path = write(tmp_path / "r2.yaml", FAKE_RECIPE.replace("decoder: {name: fakedit, depth: 1}",
                                                        "decoder: {name: fakedit, _target_: os.system}"))
    with pytest.raises(RecipeError, match="import paths are never read"):
        load_recipe(path)


def test_missing_section_and_core_section_errors(tmp_path, fakes):
    path = write(tmp_path / "r.yaml", FAKE_RECIPE.replace("sampler: fakeflow\n", ""))
    with pytest.raises(RecipeError, match="sampler: missing"):
        load_recipe(path)
    path = write(tmp_path / "r.yaml", FAKE_RECIPE)
    with pytest.raises(RecipeError, match="train.decay"):
        load_recipe(path, ["train.decay=sometimes"])


def test_resolved_dump_round_trips_with_provenance(tmp_path, fakes):
    r = load_recipe(write(tmp_path / "r.yaml", FAKE_RECIPE), ["decoder.width=24"])
    dumped = r.dump(tmp_path / "run" / "recipe.yaml")
    data = yaml.safe_load(dumped.read_text())
    assert data["decoder"]["width"] == 24 and data["decoder"]["name"] == "fakedit"
    assert data["provenance"]["decoder"]["name"] == "fakedit"
    again = load_recipe(dumped)
    assert again["decoder"].config == r["decoder"].config
    assert again["train"] == r["train"]


def test_cross_component_check_image_size(tmp_path, fakes):
    path = write(tmp_path / "r.yaml", FAKE_RECIPE)
    with pytest.raises(RecipeError, match="not divisible"):
        load_recipe(path, ["dataset.image_size=9"])
