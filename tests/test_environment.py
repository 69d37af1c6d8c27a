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
        if item.startswith("-"):  # -e . and the --extra-index-url line
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
    assert "exec make test BROWSER_TESTS=required" in ci and "WORKSHOP_DATA_DIR" in ci  # the README's command
    assert "make test" in (ROOT / "README.md").read_text()


def test_conda_environment_takes_the_cpu_torch_by_default():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert pip_section[0] == "--extra-index-url https://download.pytorch.org/whl/cpu"  # torch 2.13.0+cpu wins
    assert "torch==2.13.0" in pip_section
    assert "python=3.11" in env["dependencies"]
    text = (ROOT / "environment.yml").read_text()
    assert "NVIDIA GPU, delete the --extra-index-url line" in text  # how conda users choose CUDA


def test_only_ci_names_the_ci_data_folder_and_turns_the_hub_off():
    """Learners have no ../shared: nothing they run or read sends them there, and nothing forces offline."""
    learner_files = [ROOT / "Makefile", ROOT / "README.md", ROOT / "data" / "README.md",
                     *sorted((ROOT / "helpers").glob("*.py")), *sorted((ROOT / "docs").glob("*.md"))]
    for path in learner_files:
        text = path.read_text()
        assert "shared/data" not in text and "../shared" not in text, path
    for path in (ROOT / "Makefile", *sorted((ROOT / "helpers").glob("*.py"))):
        text = path.read_text()
        assert "HF_HUB_OFFLINE ?=" not in text and 'HF_HUB_OFFLINE", "1"' not in text, path
    ci = (ROOT / ".ci" / "run").read_text()
    assert "export HF_HUB_OFFLINE=1" in ci and "shared/data" in ci


def test_learners_are_never_sent_to_documents_they_do_not_have():
    """The team's source notes (EVIDENCE, LIBRARY_NOTES, ...) stay with the team: helpers, notebooks and docs cite
    docs/references.md instead."""
    files = [*sorted((ROOT / "helpers").rglob("*.py")), *sorted((ROOT / "notebooks").glob("*.ipynb")),
             *sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
    for path in files:
        text = path.read_text()
        for name in ("EVIDENCE", "LIBRARY_NOTES", "SYLLABUS.txt", "BROWSER_NOTES", "LAYOUT.md"):
            assert name not in text, f"{path.relative_to(ROOT)} names {name}, which learners do not have"


def test_python_floor_licence_and_repository_url_are_stated_once_and_agree():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    readme = (ROOT / "README.md").read_text()
    assert "Python **3.11 or newer**" in readme and "3.10" not in readme
    assert "MIT License" in (ROOT / "LICENSE").read_text() and project["license"] == {"text": "MIT"}
    url = project["urls"]["Repository"]
    cells = re.findall(r'REPO = "([^"]+)"', readme)
    assert cells == [url], "the README's Colab/Kaggle cell must use pyproject.toml's [project.urls] Repository"
    assert "github.com" not in (ROOT / "docs" / "instructors.md").read_text(), "link the README's set-up cell instead"


def test_readme_covers_every_setup_and_the_licences():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    for needle in ("make lab", "make data", "conda env create", "Windows", "Colab", "Kaggle",
                   "enable_custom_widget_manager", "T4", "fp16", "docs/instructors.md"):
        assert needle in setup, needle
    for needle in ("STS Benchmark", "SNLI", "all-MiniLM-L6-v2", "CC BY-SA 4.0", "Apache 2.0",
                   "sentence-transformers/stsb", "stanfordnlp/snli"):
        assert needle in readme, needle


def test_make_data_target_runs_the_fetcher():
    makefile = (ROOT / "Makefile").read_text()
    assert "\ndata: $(STAMP)\n\t$(BIN)/python -m helpers.datafetch\n" in makefile


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
