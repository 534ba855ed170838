"""The docs stay true: README set-up commands, CI command, hook specs, built-in components."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def setup_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_readme_gives_exactly_two_setup_commands():
    commands = setup_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    assert commands[0].endswith("scenetok quickstart")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert setup_commands()[1] in ci


def test_every_hookspec_is_documented():
    import inspect

    from scenetok import hookspecs

    specs = [f for name, f in vars(hookspecs).items() if name.startswith("scenetok_") and callable(f)]
    assert specs
    for spec in specs:
        assert inspect.getdoc(spec), f"{spec.__name__} has no docstring"


def test_every_builtin_component_is_documented():
    from scenetok import registry

    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    for info in registry.list_components():
        if info.distribution == "scenetok":
            assert f"`{info.name}`" in contributing, info.name
            cls = registry.get_component(info.kind, info.name)
            assert cls.__doc__ and cls.Config.__doc__, info.name


def test_contributing_templates_are_working_components():
    """Every template in CONTRIBUTING.md defines a class that passes the registry's checks and does
    its job on a tiny input."""
    import torch

    from scenetok.interfaces import LatentSpec
    from scenetok.registry import check_component_class
    from scenetok.types import Cameras

    text = (ROOT / "CONTRIBUTING.md").read_text().split("## Templates", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)\n```", text, flags=re.S)
    kinds = {}
    for block in blocks:
        kind = re.match(r"# ([a-z ]+) --", block).group(1).replace(" ", "_")
        namespace: dict = {"__name__": f"template_{kind}"}
        exec(compile(block, f"CONTRIBUTING.md ({kind})", "exec"), namespace)  # noqa: S102 - our own docs
        (cls,) = [v for v in namespace.values() if isinstance(v, type) and v.__module__ == namespace.get("__name__")
                  and hasattr(v, "Config")]
        check_component_class(kind, "template", cls)
        kinds[kind] = cls
    assert set(kinds) == {"image_compressor", "token_compressor", "decoder", "sampler", "dataset"}

    images = torch.rand(2, 3, 3, 16, 16)
    compressor = kinds["image_compressor"](kinds["image_compressor"].Config())
    latents = compressor.encode(images)
    assert latents.shape == (2, 3, 16, 4, 4)
    torch.testing.assert_close(compressor.decode(latents), images.mean(2, keepdim=True).expand_as(images))
    cameras = Cameras(torch.eye(4).expand(2, 3, 4, 4), torch.eye(3).expand(2, 3, 3, 3))
    tokens = kinds["token_compressor"](kinds["token_compressor"].Config(), in_channels=16, latent_size=(4, 4))
    scene_tokens = tokens(latents, cameras).sample()
    assert scene_tokens.shape == (2, 16, 8)
    decoder = kinds["decoder"](kinds["decoder"].Config(), in_channels=16, latent_size=(4, 4), token_dim=8,
                               latent_spec=LatentSpec(16, 4))
    assert decoder(latents, torch.zeros(2, 3), cameras, scene_tokens).shape == latents.shape
    sampler = kinds["sampler"](kinds["sampler"].Config())
    t = sampler.sample_timesteps(2, 3)
    noise = torch.randn_like(latents)
    noisy = sampler.add_noise(latents, noise, t)
    # one exact Euler step with the true velocity from t to 0 recovers the clean latents
    clean = sampler.step(noisy, sampler.training_target(latents, noise, t), t.double(), torch.zeros(2, 3).double())
    torch.testing.assert_close(clean, latents)
    dataset = kinds["dataset"](kinds["dataset"].Config(image_size=16))
    sample = dataset[0]
    assert sample["context"]["images"].shape == (4, 3, 16, 16) and sample["target"]["extrinsics"].shape == (4, 4, 4)
