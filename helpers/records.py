"""What every data loader shares: :class:`DataError` (where and why a record cannot be used) and the field checks.

Core layer, imports nothing from ``helpers``; :mod:`helpers.data` (notebook 00's
data, notebook 07's own files) reads every file and field through these, so a
bad file gets one kind of message: the file, the line, the problem, the way out.
"""
from __future__ import annotations

import math
import os
from pathlib import Path


class DataError(ValueError):
    """A data file or record that cannot be used, with where and why (notebook 07; every loader of notebook 00).

    Attributes ``path`` and ``line`` (1-based, ``None`` when the problem is the
    whole file) say where the problem is.
    """

    def __init__(self, path: str | os.PathLike | None, line: int | None, problem: str):
        self.path = str(path) if path is not None else None
        self.line = line
        self.problem = problem
        where = self.path or "<data>"
        if line is not None:
            where += f", line {line}"
        super().__init__(f"{where}: {problem}")


class SubsetTooLarge(ValueError):
    """A strict subset asked for more rows than the data has (``size`` and ``available`` say how many)
    (notebook 00; used by all)."""

    def __init__(self, size: int, available: int):
        self.size, self.available = size, available
        super().__init__(
            f"Subset size {size} is larger than the data ({available} rows); use at most {available} or None for all."
        )


def _read_text(path) -> str:
    """A file's text as UTF-8 (a BOM dropped); a :class:`DataError` with the line of the first bad byte."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            path, line, f"bytes are not valid UTF-8 (byte {exc.start}); save the file as UTF-8"
        ) from None


def _text_field(value, name: str, path, line) -> str:
    """A sentence from a record: text (or a number), stripped, not empty, encodable as UTF-8."""
    if value is None or isinstance(value, (bool, list, dict)):
        if value is None:
            raise DataError(path, line, f"empty {name}")
        raise DataError(path, line, f"{name} must be text, found {type(value).__name__} {_short(value)}")
    text = str(value).strip()
    if not text:
        raise DataError(path, line, f"empty {name}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(path, line, f"{name} holds an invalid character ({exc.reason}, e.g. a lone \\ud800 escape)") from None
    return text


def _short(value, limit: int = 40) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _parse_score(value, path, line, score_range: tuple[float, float]) -> float:
    lo, hi = score_range
    if isinstance(value, bool) or value is None:
        raise DataError(path, line, f"score {value!r} is not a number")
    try:
        score = float(value)
    except OverflowError:
        raise DataError(path, line, f"score {_short(value)} is too large for a number") from None
    except (TypeError, ValueError):
        raise DataError(path, line, f"score {_short(value)} is not a number") from None
    if math.isnan(score) or not lo <= score <= hi:
        raise DataError(
            path,
            line,
            f"score {score:g} is outside [{lo:g}, {hi:g}]; pass score_range=(low, high) if your scores use another scale",
        )
    return score


__all__ = ["DataError", "SubsetTooLarge"]
