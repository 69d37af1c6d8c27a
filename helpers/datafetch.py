"""``make data``: download STS-B and SNLI once from the Hugging Face hub and keep them on disk.

Notebook 00 explains where the data comes from: the loaders in :mod:`helpers.data` read a local
copy when there is one and the hub otherwise. A room with poor Wi-Fi runs this once beforehand
(``make data``, or ``python -m helpers.datafetch`` without make) and then works offline. It writes
the same layout as the official distributions, which the loaders read back to exactly the rows the
hub gives (checked after writing)::

    data/stsbenchmark/sts-{train,dev,test}.csv   tab-separated, no header: genre, file, year, id,
                                                 score 0-5, sentence1, sentence2
    data/snli/{s1,s2,labels}.{dev,test}          premise, hypothesis, label name; one pair per line

The destination is ``--dest``, else ``$WORKSHOP_DATA_DIR``, else the project's ``data/`` (git-ignored
there). A data set whose files are all present is not downloaded again (``--force`` does). The
code-search task needs no download. This module imports only :mod:`helpers.data`.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from . import data as D

STSB_SPLITS = ("train", "dev", "test")
SNLI_SPLITS = ("dev", "test")  # the splits the workshop uses; train (550k pairs) is not needed
LICENCES = {
    "stsbenchmark": (D.STSB_HUB_ID, "STS Benchmark (Cer et al., SemEval-2017)",
                     "scores CC BY-SA 4.0; sentence text under each source's own terms "
                     "(http://ixa2.si.ehu.eus/stswiki)"),
    "snli": (D.SNLI_HUB_ID, "SNLI 1.0 (Bowman et al., EMNLP 2015)",
             "CC BY-SA 4.0 (https://nlp.stanford.edu/projects/snli/)"),
}


class FetchError(D.DataError):
    """``make data`` could not download or write a data set (the message says why and what to do)
    (``make data``, before notebook 00)."""

    def __init__(self, problem: str):
        super().__init__(None, None, problem)


def default_dest() -> Path:
    """Where ``make data`` writes: ``$WORKSHOP_DATA_DIR`` when set, else the project's ``data/`` folder
    (``make data``, before notebook 00)."""
    env = os.environ.get(D.DATA_ENV)
    return Path(env) if env else D.PROJECT_ROOT / "data"


def stsb_paths(dest: str | os.PathLike) -> dict[str, Path]:
    """The three STS-B files of a local copy under ``dest`` (``make data``, before notebook 00)."""
    return {split: Path(dest) / "stsbenchmark" / name for split, name in D.STSB_FILES.items()}


def snli_paths(dest: str | os.PathLike) -> dict[str, list[Path]]:
    """The s1/s2/labels files of each SNLI split under ``dest`` (``make data``, before notebook 00)."""
    return {split: [Path(dest) / "snli" / f"{name}.{split}" for name in ("s1", "s2", "labels")]
            for split in SNLI_SPLITS}


# --------------------------------------------------------------------------- writers


def stsb_score_text(score: float) -> str:
    """The 0-5 score as text that :func:`helpers.data.parse_stsb_file` (which divides by 5) reads as ``score``
    (``make data``, before notebook 00).

    Scores that came from the official 3-decimal files are written that way (``3.800``), and so is
    every score the hub gives (a 0-5 decimal divided by 5). For an arbitrary double that no 0-5 number
    divides back to, the nearest is written (at most one unit in the last place away, about 1e-16).
    """
    target = score * 5.0
    candidates = [f"{target:.3f}", repr(target)]
    below = above = target
    for _ in range(4):  # neighbouring doubles, for scores that are not a decimal divided by 5
        below, above = math.nextafter(below, -math.inf), math.nextafter(above, math.inf)
        candidates += [repr(below), repr(above)]
    for text in candidates:
        if float(text) / 5.0 == score:
            return text
    return min(candidates, key=lambda text: abs(float(text) / 5.0 - score))


def stsb_file_text(cols: dict[str, list], split: str) -> str:
    """One STS-B split in the official layout (tab-separated, no header, no quoting), from loader columns
    (``make data``, before notebook 00)."""
    hub_split = D.STSB_HUB_SPLITS[split]
    lines = []
    for i, (s1, s2, score) in enumerate(zip(cols["sentence1"], cols["sentence2"], cols["score"])):
        for text in (s1, s2):
            if not text or any(c in text for c in "\t\r\n") or text != text.strip():
                raise FetchError(f"STS-B {split} row {i + 1}: sentence {text!r} cannot be written on one line")
        lines.append("\t".join(["hub", D.STSB_HUB_ID, hub_split, f"{i:05d}", stsb_score_text(score), s1, s2]))
    return "\n".join(lines) + "\n"


def snli_file_texts(rows: list[tuple[str, str, str]]) -> dict[str, str]:
    """The s1, s2 and labels file texts for SNLI rows (premise, hypothesis, label name), one pair per line
    (``make data``, before notebook 00)."""
    names = set(D.SNLI_LABELS.values())
    for i, (premise, hypothesis, label) in enumerate(rows, start=1):
        for text in (premise, hypothesis):
            if not text or "\n" in text or "\r" in text:
                raise FetchError(f"SNLI row {i}: sentence {text!r} cannot be written on one line")
        if label not in names:
            raise FetchError(f"SNLI row {i}: unknown label {label!r}")
    return {name: "".join(f"{row[k]}\n" for row in rows) for k, name in enumerate(("s1", "s2", "labels"))}


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a cut download never leaves half a file
    (``make data``, before notebook 00)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    os.replace(tmp, path)


def write_stsb(splits: dict[str, dict[str, list]], dest: str | os.PathLike,
               log: Callable[[str], None] = print) -> dict[str, int]:
    """Write STS-B columns per split (as :func:`helpers.data.stsb_from_hub_records` gives) and check the read-back
    (``make data``, before notebook 00).

    Sentences must read back identically and scores too, except a score no 0-5 text can represent
    (see :func:`stsb_score_text`), which may differ by one unit in the last place (counted in the log).
    """
    paths = stsb_paths(dest)
    texts = {split: stsb_file_text(cols, split) for split, cols in splits.items()}  # every check before any write
    for split, text in texts.items():
        write_atomic(paths[split], text)
    for split, cols in splits.items():
        back = D.parse_stsb_file(paths[split])
        inexact = sum(a != b for a, b in zip(back["score"], cols["score"]))
        if (back["sentence1"], back["sentence2"]) != (cols["sentence1"], cols["sentence2"]) or any(
                abs(a - b) > 1e-15 for a, b in zip(back["score"], cols["score"])) or len(back["score"]) != len(cols["score"]):
            raise FetchError(f"{paths[split]} does not read back as the rows downloaded; please report this")
        if inexact:
            log(f"STS-B {split}: {inexact} scores differ from the hub's by at most 1e-15 (the 0-5 text layout)")
    return {split: len(cols["score"]) for split, cols in splits.items()}


def write_snli(splits: dict[str, list[tuple[str, str, str]]], dest: str | os.PathLike) -> dict[str, int]:
    """Write SNLI rows per split (as :func:`helpers.data.snli_rows_from_hub_records` gives) and check the read-back
    (``make data``, before notebook 00)."""
    paths = snli_paths(dest)
    texts = {split: snli_file_texts(rows) for split, rows in splits.items()}
    for split, files in texts.items():
        for path, name in zip(paths[split], ("s1", "s2", "labels")):
            write_atomic(path, files[name])
    for split, rows in splits.items():
        if D.snli_rows_from_files(split, dest) != rows:
            raise FetchError(f"{paths[split][0].parent}: SNLI {split} does not read back as downloaded; please report this")
    return {split: len(rows) for split, rows in splits.items()}


def write_source_note(folder: Path, name: str) -> None:
    """A SOURCE.txt beside the files: where they came from, when, and their licence
    (``make data``, before notebook 00)."""
    hub_id, title, licence = LICENCES[name]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    write_atomic(folder / "SOURCE.txt", f"{title}\nDownloaded by `make data` from the Hugging Face hub "
                 f"({hub_id}) on {when}.\nLicence: {licence}.\n")


# --------------------------------------------------------------------------- download


def hub_records(dataset_id: str, split: str):
    """One split of a hub data set, or a :class:`FetchError` that says what to do
    (``make data``, before notebook 00)."""
    from datasets import load_dataset

    try:
        return load_dataset(dataset_id, split=split)
    except Exception as exc:  # noqa: BLE001 - any failure here means the same thing to the learner
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
        hint = ("HF_HUB_OFFLINE=1 is set in this shell; run `HF_HUB_OFFLINE=0 make data`." if offline else
                "It needs internet (huggingface.co); run it on a machine that has it, then copy the data/ folder, "
                f"or point ${D.DATA_ENV} at a copy.")
        raise FetchError(f"make data could not download {dataset_id!r} ({split}) from the Hugging Face hub: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. {hint}") from exc


def fetch(dest: str | os.PathLike | None = None, force: bool = False,
          log: Callable[[str], None] = print) -> dict[str, dict[str, int]]:
    """Download STS-B (train, dev, test) and SNLI (dev, test) into ``dest`` in the local layout
    (``make data``, before notebook 00).

    Returns ``{"stsbenchmark": {split: pairs}, "snli": {split: pairs}}``; a data set already
    complete on disk is skipped (its counts are ``{}``) unless ``force``.
    """
    dest = Path(dest) if dest is not None else default_dest()
    done: dict[str, dict[str, int]] = {}
    if not force and all(p.exists() for p in stsb_paths(dest).values()):
        log(f"STS-B: already in {dest / 'stsbenchmark'} (use --force to download again)")
        done["stsbenchmark"] = {}
    else:
        cols = {split: D.stsb_from_hub_records(hub_records(D.STSB_HUB_ID, D.STSB_HUB_SPLITS[split]))
                for split in STSB_SPLITS}
        done["stsbenchmark"] = write_stsb(cols, dest, log)
        write_source_note(dest / "stsbenchmark", "stsbenchmark")
        log("STS-B: " + ", ".join(f"{s} {n:,}" for s, n in done["stsbenchmark"].items())
            + f" pairs -> {dest / 'stsbenchmark'}")
    if not force and all(p.exists() for files in snli_paths(dest).values() for p in files):
        log(f"SNLI: already in {dest / 'snli'} (use --force to download again)")
        done["snli"] = {}
    else:
        rows = {split: D.snli_rows_from_hub_records(hub_records(D.SNLI_HUB_ID, D.SNLI_HUB_SPLITS[split]))
                for split in SNLI_SPLITS}
        done["snli"] = write_snli(rows, dest)
        write_source_note(dest / "snli", "snli")
        log("SNLI: " + ", ".join(f"{s} {n:,}" for s, n in done["snli"].items()) + f" labelled pairs -> {dest / 'snli'}")
    return done


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.datafetch [--dest DIR] [--force]`` (what ``make data`` runs)
    (``make data``, before notebook 00)."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers.datafetch",
        description="Download STS-B and SNLI once from the Hugging Face hub into the local layout, for offline use.")
    parser.add_argument("--dest", type=Path, default=None,
                        help=f"folder to write into (default: ${D.DATA_ENV}, else the project's data/)")
    parser.add_argument("--force", action="store_true", help="download again even when the files are there")
    args = parser.parse_args(argv)
    dest = args.dest if args.dest is not None else default_dest()
    try:
        fetch(dest, force=args.force)
    except D.DataError as exc:
        print(f"error: {exc.problem}", file=sys.stderr)
        return 2
    if dest.resolve() not in {d.resolve() for d in D.data_dirs()}:
        print(f"The notebooks look in ${D.DATA_ENV} and the project's data/: set {D.DATA_ENV}={dest.resolve()}")
    else:
        print("Done: the notebooks now load the data from disk, also without internet.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
