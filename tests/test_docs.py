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
