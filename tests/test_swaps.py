"""Component swaps: carried keys, dropped keys, order independence (core and plugin configs)."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from scenetok.components.samplers.flow import FlowSampler
from scenetok.recipe import RecipeError, load_recipe

QUICKSTART = Path(__file__).resolve().parent.parent / "recipes" / "quickstart.yaml"


class CosFlow(FlowSampler):
    """A plugin sampler whose Config subclasses flow's and adds one field."""

    @dataclass
    class Config(FlowSampler.Config):
        """Attributes:
        power: exponent of the (pretend) cosine timestep warp.
        """

        power: float = 1.0


@pytest.fixture
def cosflow(registry_override):
    registry_override("sampler", "cosflow", CosFlow)


def test_flow_to_ddpm_keeps_the_shared_timestep_fields():
    r = load_recipe(QUICKSTART, ["sampler.name=ddpm"])
    config = r["sampler"].config
    assert (config.timesteps, config.shift, config.timestep_mode) == ("shifted", 4.0, "per_sample")
    assert config.prediction == "epsilon"  # 'sample' is not a ddpm prediction: dropped, default used
    assert r.notes == ["sampler: 'flow' -> 'ddpm': kept: timesteps, shift, timestep_mode; "
                       "dropped: prediction ('sample' not valid)"]


def test_a_plugin_config_subclassing_flow_keeps_every_field(cosflow):
    r = load_recipe(QUICKSTART, ["sampler.name=cosflow"])
    config = r["sampler"].config
    assert isinstance(config, CosFlow.Config)
    assert (config.prediction, config.timesteps, config.shift, config.timestep_mode) == \
        ("sample", "shifted", 4.0, "per_sample")
    assert r.notes[0].endswith("kept: prediction, timesteps, shift, timestep_mode; dropped: none")


def test_swapping_back_drops_fields_only_the_plugin_has(cosflow, tmp_path):
    plugin = tmp_path / "plugin.yaml"
    plugin.write_text(f"extends: {QUICKSTART}\nsampler: {{name: cosflow, power: 3}}\n")
    r = load_recipe(plugin, ["sampler.name=flow"])
    assert r["sampler"].config.shift == 4.0
    assert r.notes == ["sampler: 'flow' -> 'cosflow' -> 'flow': kept: prediction, timesteps, shift, timestep_mode; "
                       "dropped: power (not a field)"]


def test_override_order_does_not_matter(cosflow):
    before = load_recipe(QUICKSTART, ["sampler.power=2", "sampler.name=cosflow"])
    after = load_recipe(QUICKSTART, ["sampler.name=cosflow", "sampler.power=2"])
    assert before["sampler"].config.power == after["sampler"].config.power == 2.0
    assert before.resolved() == after.resolved()


def test_a_key_set_after_the_swap_is_validated_strictly():
    # `prediction: sample` given explicitly with the new name is an error, not a silent drop.
    with pytest.raises(RecipeError, match="prediction must be one of"):
        load_recipe(QUICKSTART, ["sampler.name=ddpm", "sampler.prediction=sample"])
    r = load_recipe(QUICKSTART, ["sampler.prediction=v", "sampler.name=ddpm"])
    assert r["sampler"].config.prediction == "v"
    assert r.notes[0].endswith("dropped: none")


def test_extends_chain_carries_across_files(cosflow, tmp_path):
    mid = tmp_path / "mid.yaml"
    mid.write_text(f"extends: {QUICKSTART}\nsampler: {{name: ddpm, beta_end: 0.03}}\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: mid.yaml\nsampler: {power: 2, name: cosflow}\n")  # key order inside a node is free
    r = load_recipe(child)
    config = r["sampler"].config
    assert (config.timesteps, config.shift, config.power) == ("shifted", 4.0, 2.0)
    # Carried keys are judged against the final component only: cosflow accepts 'sample'.
    assert config.prediction == "sample"
    # One note for the whole chain.
    assert r.notes == ["sampler: 'flow' -> 'ddpm' -> 'cosflow': kept: prediction, timesteps, shift, timestep_mode; "
                       "dropped: beta_end (not a field)"]


def test_a_preset_carries_only_if_the_new_component_has_it(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"extends: {QUICKSTART}\nsampler: {{name: flow, preset: dl3dv}}\n")
    r = load_recipe(recipe, ["sampler.name=ddpm"])
    assert "preset (no such preset)" in r.notes[0]
    assert r["sampler"].preset is None


def test_provider_never_carries_over_and_is_listed_as_dropped(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"extends: {QUICKSTART}\nsampler: {{name: flow, provider: scenetok}}\n")
    r = load_recipe(recipe, ["sampler.name=ddpm"])
    assert r.notes[0].endswith("dropped: prediction ('sample' not valid), "
                               "provider (it chose the distribution of the old component)")
    assert "provider" not in r.data["sampler"]
