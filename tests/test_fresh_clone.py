"""A fresh clone for a learner anywhere (issue 17): data without CI's folder, `make data`, the browser wiring.

- The hub path, offline: ``datasets.load_dataset`` is replaced by records shaped like the hub's
  (``sentence-transformers/stsb``: sentence1, sentence2, score in [0, 1]; ``stanfordnlp/snli``:
  premise, hypothesis, label 0/1/2 with -1 for no gold label), built from the real data.
- ``make data``'s writer on those records: the local layout it writes reads back to the same rows.
- A fresh clone (no data/, no CI data folder, offline): notebook 00's first data cell says to run
  ``make data`` on a machine with internet.
- ``make test-browser`` without Chromium and without root skips with one line; ``.ci/run`` fails.
- (slow, opt-in) a fresh virtualenv with ``pip install .`` alone runs notebook 00 at smoke scale.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from helpers import data as D, datafetch as F

ROOT = Path(__file__).resolve().parent.parent
NB00 = ROOT / "notebooks" / "00_quickstart.ipynb"


# ----------------------------------------------------------------------------- hub-shaped records

def stsb_hub_split(split: str) -> list[dict]:
    """Records as ``sentence-transformers/stsb`` gives them, from the official file of ``split`` plus edge cases."""
    path = D.find_local(f"stsbenchmark/{D.STSB_FILES[split]}")
    assert path is not None, "the tests need the real STS-B files (WORKSHOP_DATA_DIR)"
    cols = D.parse_stsb_file(path)
    records = [{"sentence1": a, "sentence2": b, "score": s}
               for a, b, s in zip(cols["sentence1"], cols["sentence2"], cols["score"])]
    if split != "dev":
        records = records[:200]
    return records + [
        {"sentence1": "  Leading and trailing spaces.  ", "sentence2": "A tab\tinside and a\nline break.", "score": 0.0},
        {"sentence1": "A float32 score.", "sentence2": "Café, naïve, 東京.", "score": float.fromhex("0x1.851eb80000000p-1")},
        {"sentence1": "Top score.", "sentence2": "Top score!", "score": 1.0},
    ]


def snli_hub_split(split: str) -> list[dict]:
    """Records as ``stanfordnlp/snli`` gives them (plain text, label 0/1/2, -1 for no gold label)."""
    rows = D.snli_rows_from_files(split)
    assert rows is not None, "the tests need the real SNLI files (WORKSHOP_DATA_DIR)"
    ids = {name: i for i, name in D.SNLI_LABELS.items()}
    records = [{"premise": p, "hypothesis": h, "label": ids[label]} for p, h, label in rows]
    return records + [
        {"premise": "A man sleeps .", "hypothesis": "A man does n't sleep .", "label": 2},  # PTB-like text
        {"premise": "A dog runs.", "hypothesis": "No gold label for this one.", "label": -1},
        {"premise": "A dog runs.", "hypothesis": "A line\nbreak.", "label": 0},
    ]


@pytest.fixture(scope="module")
def hub():
    """``{(dataset id, hub split): datasets.Dataset}`` shaped like the hub's, with the hub's features."""
    import datasets

    stsb = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                              "score": datasets.Value("float64")})
    snli = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                              "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])})
    out = {}
    for split, hub_split in D.STSB_HUB_SPLITS.items():
        out[D.STSB_HUB_ID, hub_split] = datasets.Dataset.from_list(stsb_hub_split(split), features=stsb)
    for split in F.SNLI_SPLITS:
        out[D.SNLI_HUB_ID, D.SNLI_HUB_SPLITS[split]] = datasets.Dataset.from_list(snli_hub_split(split), features=snli)
    return out


@pytest.fixture
def fake_hub(hub, monkeypatch, tmp_path):
    """No local copy anywhere, and ``datasets.load_dataset`` answering from :func:`hub` (calls are counted)."""
    import datasets

    calls = []

    def load_dataset(dataset_id, split=None, **kwargs):
        calls.append((dataset_id, split))
        return hub[dataset_id, split]

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(D.DATA_ENV, str(empty))
    monkeypatch.setattr(D, "PROJECT_ROOT", tmp_path / "fresh-clone")
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def everything() -> dict:
    """What the notebooks load: every STS-B split, SNLI dev triplets and the SNLI test retrieval task."""
    out = {f"stsb-{s}": D.load_stsb(s).to_dict() for s in D.STSB_FILES}
    out["snli-triplets-dev"] = D.load_snli_triplets("dev").to_dict()
    out["snli-retrieval-test"] = D.load_snli_retrieval("test")
    return out


def test_make_data_writes_the_hub_records_so_the_loaders_read_them_back_identically(fake_hub, monkeypatch, tmp_path):
    from_hub = everything()
    assert len(fake_hub) == 5  # three STS-B splits, SNLI dev (triplets) and test (retrieval)
    assert from_hub["stsb-dev"]["sentence2"][-3:] == ["A tab inside and a line break.", "Café, naïve, 東京.", "Top score!"]
    assert from_hub["stsb-dev"]["sentence1"][-3] == "Leading and trailing spaces."

    dest = tmp_path / "data"
    done = F.fetch(dest, log=lambda line: None)
    # the real rows plus the edge cases, less the one without a gold label (-1) in each split
    assert done == {"stsbenchmark": {"train": 203, "dev": 1503, "test": 203}, "snli": {"dev": 9844, "test": 9826}}

    # The local layout: the official STS-B TSV without header (score 0-5), SNLI s1/s2/labels files.
    lines = (dest / "stsbenchmark" / "sts-dev.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1503 and all(len(line.split("\t")) == 7 for line in lines)
    assert lines[0].split("\t")[4:] == ["5.000", "A man with a hard hat is dancing.", "A man wearing a hard hat is dancing."]
    assert (dest / "snli" / "labels.dev").read_text().splitlines()[:3] == ["neutral", "entailment", "contradiction"]
    assert "CC BY-SA 4.0" in (dest / "snli" / "SOURCE.txt").read_text()

    calls = len(fake_hub)
    monkeypatch.setenv(D.DATA_ENV, str(dest))
    from_disk = everything()
    assert len(fake_hub) == calls, "the loaders went to the hub although the files were written"
    assert from_disk == from_hub


def test_make_data_skips_what_is_there_and_says_what_to_do_without_the_hub(fake_hub, monkeypatch, tmp_path, capsys):
    import datasets

    dest = tmp_path / "data"
    F.fetch(dest, log=lambda line: None)
    n = len(fake_hub)
    assert F.fetch(dest, log=lambda line: None) == {"stsbenchmark": {}, "snli": {}} and len(fake_hub) == n

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'sentence-transformers/stsb' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert F.main(["--dest", str(dest), "--force"]) == 2
    err = capsys.readouterr().err
    assert "could not download 'sentence-transformers/stsb'" in err and "needs internet" in err
    assert (dest / "stsbenchmark" / "sts-dev.csv").exists()  # nothing half-written or removed


@given(st.integers(0, 5000))
def test_score_text_round_trips_official_decimals(k):
    score = float(f"{k / 1000:.3f}") / 5.0
    text = F.stsb_score_text(score)
    assert float(text) / 5.0 == score and text == f"{k / 1000:.3f}"


@given(st.floats(0, 1, width=32))
def test_score_text_round_trips_float32_scores(score):
    assert float(F.stsb_score_text(score)) / 5.0 == score


# ----------------------------------------------------------------------------- a fresh clone, offline

def test_fresh_clone_offline_notebook00_first_data_cell_says_run_make_data(tmp_path):
    """Notebook 00's cells up to its first data cell, in a copy of the project with no data/ and no CI folder."""
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "helpers", clone / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    (clone / "notebooks").mkdir()
    shutil.copy2(NB00, clone / "notebooks" / NB00.name)
    script = r"""
import json, sys, nbformat
nb = nbformat.read(sys.argv[1], as_version=4)
ns, ran = {}, []
for cell in nb.cells:
    if cell.cell_type != "code":
        continue
    ran.append(cell.source)
    try:
        exec(compile(cell.source, "cell", "exec"), ns)
    except Exception as exc:
        print(json.dumps({"type": type(exc).__name__, "message": str(exc), "cell": cell.source,
                          "helpers": ns["hp"].__file__}))
        break
    if "load_stsb(" in cell.source:
        print(json.dumps({"type": None, "cell": cell.source}))
        break
"""
    env = {k: v for k, v in os.environ.items() if k not in (D.DATA_ENV, "PYTHONPATH")}
    env.update(PYTHONPATH=str(clone), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-cache"),
               WORKSHOP_SCALE="smoke", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-c", script, NB00.name], cwd=clone / "notebooks", env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["helpers"] == str(clone / "helpers" / "__init__.py")
    assert out["type"] == "DataError", out
    assert "hp.load_stsb(" in out["cell"] and "hp.setup()" not in out["cell"]  # the first data cell, not set-up
    message = out["message"]
    assert message.index("make data") < message.index("hub error")
    assert "on a machine with internet" in message and "WORKSHOP_DATA_DIR" in message
    assert "HF_HUB_OFFLINE=1 is set" in message and str(clone / "data" / "stsbenchmark") in message
    assert "shared" not in message


def test_missing_data_message_without_hf_offline(monkeypatch, tmp_path):
    import datasets

    monkeypatch.delenv(D.DATA_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(D, "PROJECT_ROOT", tmp_path / "fresh-clone")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("no network")))
    with pytest.raises(D.DataError) as info:
        D.load_snli_triplets("dev")
    message = str(info.value)
    assert "run `make data`" in message and "$WORKSHOP_DATA_DIR is not set" in message
    assert str(tmp_path / "fresh-clone" / "data" / "snli") in message and "HF_HUB_OFFLINE" not in message


def test_loaders_look_in_workshop_data_dir_then_data_and_nowhere_else(monkeypatch, tmp_path):
    monkeypatch.setattr(D, "PROJECT_ROOT", tmp_path / "clone")
    monkeypatch.setenv(D.DATA_ENV, str(tmp_path / "mine"))
    assert D.data_dirs() == [tmp_path / "mine", tmp_path / "clone" / "data"]
    monkeypatch.delenv(D.DATA_ENV)
    assert D.data_dirs(tmp_path / "arg") == [tmp_path / "arg", tmp_path / "clone" / "data"]


# ----------------------------------------------------------------------------- the browser tests' wiring

STAMP = ".venv/.workshop-installed"  # -o: never (re)run the set-up from these tests


def sandbox_path(tmp_path: Path, *, apt: bool, chromium: bool = False) -> str:
    """A PATH with the few tools the scripts need, a non-root `id`, a `sudo` that wants a password, no browser."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ["bash", "sh", "env", "uname", "make", "dirname"] + (["apt-get"] if apt else []):
        real = shutil.which(tool)
        assert real, f"{tool} is needed on PATH for this test"
        (bin_ / tool).symlink_to(real)
    real_id = shutil.which("id")
    fakes = {"id": f'#!/bin/sh\nif [ "$1" = "-u" ]; then echo 1000; else exec {real_id} "$@"; fi\n',
             "sudo": "#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n"}
    if chromium:
        fakes["chromium"] = "#!/bin/sh\necho 'Chromium 140.0 (fake)'\n"
    for name, text in fakes.items():
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    return str(bin_)


def run_script(cmd: list[str], path: str, **extra) -> subprocess.CompletedProcess:
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "CHROMIUM", "BROWSER_TESTS"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PATH=path, **extra)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("apt", [False, True], ids=["no-apt", "apt-without-root"])
def test_make_test_browser_skips_with_one_line_without_chromium_and_root(tmp_path, apt):
    proc = run_script(["make", "-s", "-o", STAMP, "test-browser"], sandbox_path(tmp_path, apt=apt))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    skipped = [line for line in proc.stdout.splitlines() if "SKIPPED" in line]
    assert len(skipped) == 1 and "browser tests" in skipped[0] and "CHROMIUM=" in skipped[0], proc.stdout
    assert "pytest" not in proc.stdout
    reason = "no apt-get" if not apt else "needs root or password-less sudo"
    assert reason in skipped[0]


def test_ci_run_fails_on_the_same_machine(tmp_path):
    data = tmp_path / "ci-data"
    for sub in ("stsbenchmark", "snli"):
        (data / sub).mkdir(parents=True)
    proc = run_script([str(ROOT / ".ci" / "run"), "-s", "-o", STAMP, "test-browser"],
                      sandbox_path(tmp_path, apt=True), WORKSHOP_DATA_DIR=str(data))
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "required" in proc.stderr and "SKIPPED" not in proc.stdout


def test_install_browser_finds_a_chromium_on_path(tmp_path):
    path = sandbox_path(tmp_path, apt=False, chromium=True)
    proc = run_script([str(ROOT / "tools" / "install_browser.sh")], path)
    assert proc.returncode == 0 and proc.stdout.strip() == str(Path(path) / "chromium"), proc.stderr
    proc = run_script([str(ROOT / "tools" / "install_browser.sh")], path, CHROMIUM=str(tmp_path / "missing"))
    assert proc.returncode == 1 and "not an executable" in proc.stderr


# ----------------------------------------------------------------------------- pip install . alone

@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("WORKSHOP_FRESH_VENV") != "1",
                    reason="opt-in (WORKSHOP_FRESH_VENV=1): builds a virtualenv from PyPI, several minutes")
def test_pip_install_alone_runs_notebook00_at_smoke_scale(tmp_path):
    """A fresh virtualenv, `pip install .` (no make, no lock), then notebook 00 top to bottom at smoke scale."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(ROOT / "helpers", project / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    py = venv / "bin" / "python"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # torch first, pinned: the CPU wheel this machine has, so the project's range never pulls a CUDA build.
    subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(project)], check=True)
    t1 = time.monotonic()
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy2(NB00, run / NB00.name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(WORKSHOP_SCALE="smoke", HF_HUB_OFFLINE="1", PATH=f"{venv / 'bin'}:{env['PATH']}")
    assert env.get(D.DATA_ENV), "needs the real data (WORKSHOP_DATA_DIR); the hub is not reachable from tests"
    proc = subprocess.run([str(py), "-m", "nbconvert", "--to", "notebook", "--execute", "--output", "executed.ipynb",
                           "--ExecutePreprocessor.kernel_name=python3", "--ExecutePreprocessor.timeout=1200",
                           NB00.name], cwd=run, env=env, capture_output=True, text=True, timeout=1800)
    t2 = time.monotonic()
    print(f"fresh venv: install {t1 - t0:.0f} s, notebook 00 at smoke scale {t2 - t1:.0f} s")
    assert proc.returncode == 0, proc.stderr[-4000:]
    where = subprocess.run([str(py), "-c", "import helpers; print(helpers.__file__)"], cwd=run, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert str(venv) in where  # the installed package, not the source tree
    import nbformat

    nb = nbformat.read(run / "executed.ipynb", as_version=4)
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "untuned all-MiniLM-L6-v2, STS-B test Spearman: 0.820" in text
    assert "optimizer steps on 96 pairs" in text
