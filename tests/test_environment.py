"""The lock, environment.yml and pyproject agree; the set-up never asks for an unpinned torch."""
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_environment_yml_lists_the_same_pins_as_the_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    env_pins = {}
    for item in pip_section:
        if item.startswith("-e"):
            continue
        name, version = item.split("==")
        env_pins[name.lower()] = version
    assert env_pins == lock_pins()


def test_lock_pins_every_direct_dependency_and_the_cpu_torch():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["test"]
    pins = lock_pins()
    for dep in deps:
        name = re.split(r"[<>=!~\[ ]", dep)[0].lower()
        assert name in pins or name.replace("-", "_") in pins or name.replace("_", "-") in pins, name
    assert pins["torch"] == "2.13.0"


def test_installed_versions_match_the_lock():
    from importlib.metadata import version

    pins = lock_pins()
    for name in ("sentence-transformers", "transformers", "torch", "nbval", "optuna"):
        assert version(name).split("+")[0] == pins[name]


def test_setup_installs_torch_pinned_and_ci_runs_make_test():
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH  := torch==2.13.0" in makefile
    assert "-c $(LOCK)" in makefile
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "WORKSHOP_DATA_DIR" in ci


def test_notebooks_follow_the_tutorial_shape():
    import nbformat

    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        assert "## Summary" in text and "## Exercises" in text, path.name
        first_code = next(c.source for c in nb.cells if c.cell_type == "code")
        assert "hp.setup()" in first_code, path.name
        for c in nb.cells:
            if c.cell_type == "code":
                assert len(c.source.splitlines()) <= 20, f"{path.name}: a cell longer than 20 lines"
