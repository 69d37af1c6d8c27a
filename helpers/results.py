"""What a run leaves behind: :class:`TrainResult`, the one JSON writer, atomic saving, mean ± sd (every notebook).

Core layer: imports nothing from ``helpers``. :func:`helpers.train` fills a
:class:`TrainResult`; :func:`write_json_atomically` (with :func:`json_default`)
is the only JSON writer of the package (results, the recipe's ``summary.json``);
:func:`mean_sd` is the one mean ± standard deviation over seeds that every
table and verdict uses (notebooks 01-07).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path


@dataclass
class TrainResult:
    """What one run measured (notebook 00 onwards). ``model`` is the trained model (best one when early stopping)."""

    config: dict
    metric: str  # name of the task metric, e.g. "Spearman"
    lr: list[float] = field(default_factory=list)  # top rate at every optimizer step
    group_lrs: list[list[float]] = field(default_factory=list)  # every param group's rate per step
    train_loss: list[dict] = field(default_factory=list)  # {step, epoch, loss}
    evals: list[dict] = field(default_factory=list)  # {step, epoch, loss, metric}
    layer_lrs: dict[str, float] = field(default_factory=dict)  # peak rate per part
    unfreeze_history: list[list[int]] = field(default_factory=list)  # trainable layers per epoch
    learning_rate: float = 0.0  # the peak rate used (after batch scaling)
    effective_batch: int = 0  # per-device batch x grad_accum x processes
    world_size: int = 1  # processes that trained together (torchrun / accelerate launch)
    steps: int = 0
    train_examples: int = 0
    trainable_params: int = 0
    total_params: int = 0
    wall_time: float = 0.0
    steps_per_sec: float = 0.0
    examples_per_sec: float = 0.0
    peak_memory_mb: float = 0.0
    memory_delta_mb: float = 0.0
    device: str = "cpu"
    precision: str = "fp32"  # what the trainer computed in (config.pick_precision)
    test_metric: float = float("nan")
    best_step: int | None = None
    stop_reason: str = "finished"  # finished | early stopping | diverged: ... | stopped | interrupted
    model: object = field(default=None, repr=False, compare=False)

    @property
    def dev_metric(self) -> float:
        """The last validation metric (the best one when early stopping restored it)."""
        vals = [e["metric"] for e in self.evals if e.get("metric") is not None]
        if self.best_step is not None:
            best = [e["metric"] for e in self.evals if e["step"] == self.best_step and e.get("metric") is not None]
            if best:
                return best[0]
        return vals[-1] if vals else float("nan")

    @property
    def dev_metric_start(self) -> float:
        """The validation metric before training (evaluated at step 0)."""
        vals = [e["metric"] for e in self.evals if e["step"] == 0 and e.get("metric") is not None]
        return vals[0] if vals else float("nan")

    def summary(self) -> dict:
        """The headline numbers as a flat dict (one row of a comparison table)."""
        return {
            "dev": self.dev_metric,
            "test": self.test_metric,
            "steps": self.steps,
            "trainable_params": self.trainable_params,
            "wall_s": self.wall_time,
            "steps_per_s": self.steps_per_sec,
            "peak_mb": self.peak_memory_mb,
            "stop": self.stop_reason,
        }

    def to_dict(self) -> dict:
        """Everything but the model, for JSON."""
        d = asdict(replace(self, model=None))
        d.pop("model")
        return d

    JSON_FORMAT = "workshop-train-result"

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write everything but the model to ``path`` as JSON, atomically (temp file + ``os.replace``).

        Never pickle: a results file is safe to open from anyone. NaN and
        infinities are written as Python's ``json`` writes them (``NaN``,
        ``Infinity``), which :meth:`load_json` reads back exactly.
        """
        payload = {"format": self.JSON_FORMAT, "version": 1, "result": self.to_dict()}
        return write_json_atomically(path, payload)

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> "TrainResult":
        """Read a result written by :meth:`save_json` (``model`` is ``None``)."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a saved training result ({exc}).") from None
        if not isinstance(payload, dict) or payload.get("format") != cls.JSON_FORMAT:
            raise ValueError(f"{path}: not a saved training result (no format {cls.JSON_FORMAT!r}).")
        data = payload.get("result")
        names = {f.name for f in fields(cls)} - {"model"}
        if not isinstance(data, dict) or "config" not in data or "metric" not in data:
            raise ValueError(f"{path}: the saved result lacks 'config' or 'metric'.")
        return cls(**{k: v for k, v in data.items() if k in names})


# --------------------------------------------------------------------------- JSON and atomic saving


def json_default(obj):
    """JSON for the odd values a result or summary can hold: numpy/torch scalars, paths, sets; else a TypeError
    (notebook 00; used by all)."""
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def strict_json(value):
    """``value`` with NaN and infinities as ``None`` and tuples as lists, so it is strict JSON (the recipe's summary)
    (notebook 07)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_json_atomically(path: str | os.PathLike, payload) -> Path:
    """Write ``payload`` as JSON to ``path`` via a temporary file and ``os.replace``: never half-written.

    The one JSON writer: :meth:`TrainResult.save_json` and the recipe's
    ``summary.json`` (notebook 07, the CLI) use it, with :func:`json_default`.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=1, default=json_default)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return out


def save_model_atomically(model, output_dir: str | os.PathLike) -> Path:
    """Save to a sibling temporary folder, then rename, so a crash never leaves half a model (notebook 07).

    An error or Ctrl-C while saving leaves ``output_dir`` as it was (the
    previous model, or nothing) and no temporary folder behind.
    """
    out = Path(output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save(str(tmp))
        if out.exists():
            old = out.with_name(f".{out.name}-old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)  # left by an earlier crash of this process id
            out.rename(old)
            try:
                tmp.rename(out)
            except BaseException:
                old.rename(out)  # put the previous model back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- mean ± sd over seeds


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0.0 for a single value) of numbers, one per seed.

    The one place the package computes mean ± sd: tables and verdicts of notebooks 01-07 call it.
    """
    import numpy as np

    v = np.asarray(list(values), dtype=float)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def fmt_mean_sd(values, digits: int = 4) -> str:
    """``0.8412 ± 0.0031`` for numbers, one per seed (see :func:`mean_sd`) (notebooks 02 and 04)."""
    m, s = mean_sd(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


__all__ = ["TrainResult", "json_default", "strict_json", "write_json_atomically", "save_model_atomically", "mean_sd",
           "fmt_mean_sd"]
