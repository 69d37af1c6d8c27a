"""One place for the workshop's scale, seeds and device.

Every notebook starts with ``cfg = helpers.setup()`` (notebook 00 explains it):
the scale decides how much data and how many seeds each experiment uses,
``seed_everything`` makes a run repeatable, and ``pick_device`` chooses
cuda, then mps, then cpu unless ``WORKSHOP_DEVICE`` says otherwise.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, asdict

import numpy as np

SCALE_ENV = "WORKSHOP_SCALE"
DEVICE_ENV = "WORKSHOP_DEVICE"
SEED_ENV = "WORKSHOP_SEED"
PRECISION_ENV = "WORKSHOP_PRECISION"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# bf16 autocast is the default on CPUs that compute it natively (AMX / AVX512-BF16) because the reference
# precision experiments (notebook 00's reference verdicts, 5 paired seeds each, on this project's Xeon) found it
# equivalent to fp32: all of STS-B, test Spearman difference -0.0001 to +0.0001 (margin 0.005); code search,
# nDCG@10 -0.0003 to +0.0001 (margin 0.01). tests/test_reference.py keeps this flag tied to those verdicts.
# WORKSHOP_PRECISION=fp32 opts out.
CPU_BF16_BY_DEFAULT = True

# Practical-equivalence margins, fixed before any run (notebooks' verdicts, docs/references.md):
# two arms whose whole 95% paired interval lies inside +-margin are called "equivalent".
EQUIVALENCE_MARGINS = {"spearman": 0.005, "ndcg@10": 0.01}


@dataclass(frozen=True)
class Scale:
    """How big every experiment is at one scale (used by all notebooks).
    Notebook 00; used by all.

    ``None`` for a size means "the whole split".
    """

    name: str
    train_size: int | None  # STS-B training pairs
    dev_size: int | None  # STS-B dev pairs used for validation during training
    test_size: int | None  # STS-B test pairs for the final score
    retrieval_train_size: int | None  # code-search / SNLI training examples
    retrieval_test_queries: int | None  # queries in retrieval evaluations
    seeds: tuple[int, ...]  # seeds for repeated runs
    epochs: int  # default epochs of one training run
    batch_size: int  # default batch size
    max_seq_length: int  # token limit for training and evaluation
    evals_per_epoch: int  # validation evaluations per epoch
    sweep_train_size: int | None = None  # training pairs per run when a notebook compares many arms x seeds
    sweep_dev_size: int | None = None
    sweep_test_size: int | None = None
    range_test_steps: int = 100  # optimizer steps of the learning-rate range test
    search_trials: int = 14  # Optuna trials of a hyperparameter search on a subset (notebooks 06, 07)
    # bottom layers (and the embeddings) frozen in the sweeps of notebooks 01 and 03 to fit a CPU budget;
    # 0 at full scale: a GPU trains the whole model, which is what the claims are about
    sweep_freeze_layers: int = 4
    # seeds of the cheap code-search comparisons (notebook 01's schedules, notebook 04's replayed stopping rules):
    # 128-pair runs of a few seconds each, where three seeds left most paired intervals too wide to decide
    code_seeds: tuple[int, ...] = (0,)

    def as_dict(self) -> dict:
        return asdict(self)


SCALES: dict[str, Scale] = {
    # CI: tiny subsets, seconds per run, one seed. Numbers are not meaningful.
    "smoke": Scale("smoke", 96, 64, 128, 64, 48, (0,), 1, 16, 64, 2, 32, 32, 48, 20, search_trials=4),
    # Default: meaningful on a 2-core laptop; each notebook 5-14 min on 2 CPU cores (benchmarks/README.md).
    "workshop": Scale("workshop", 1000, 300, None, 600, 200, (0, 1, 2), 1, 16, 128, 4, 256, 150, 300, 80,
                      code_seeds=(0, 1, 2, 3, 4)),
    # Everything, for a GPU.
    "full": Scale("full", None, None, None, None, None, (0, 1, 2, 3, 4), 4, 32, 256, 4, None, None, None, 300,
                  search_trials=40, sweep_freeze_layers=0, code_seeds=tuple(range(10))),
}
DEFAULT_SCALE = "workshop"


def get_scale(name: str | None = None) -> Scale:
    """Return the :class:`Scale` named ``name``, or the one in ``$WORKSHOP_SCALE``.
    Notebook 00; used by all.

    Raises ``ValueError`` naming the allowed values for an unknown scale.
    """
    name = (name or os.environ.get(SCALE_ENV) or DEFAULT_SCALE).strip().lower()
    if name not in SCALES:
        raise ValueError(
            f"Unknown workshop scale {name!r} (from ${SCALE_ENV} or the argument). "
            f"Use one of: {', '.join(SCALES)}."
        )
    return SCALES[name]


def pick_device(preferred: str | None = None) -> str:
    """Pick the training device: the argument, ``$WORKSHOP_DEVICE``, else cuda, then mps, then cpu.

    Notebook 00; used by all.
    """
    import torch

    choice = (preferred or os.environ.get(DEVICE_ENV) or "").strip().lower()
    if choice:
        if choice.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"Device {choice!r} was requested but CUDA is not available here; use 'cpu'.")
        if choice == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError("Device 'mps' was requested but MPS is not available here; use 'cpu'.")
        if choice.split(":")[0] not in {"cpu", "cuda", "mps"}:
            raise ValueError(f"Unknown device {choice!r}; use 'cpu', 'cuda', 'cuda:N' or 'mps'.")
        return choice
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX tiles or AVX512-BF16), as torch itself detects it.

    On CPUs without these units bf16 autocast is emulated and slower than fp32 (notebook 00).
    """
    import torch

    cpu = getattr(torch, "cpu", None)
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    try:
        return any(bool(getattr(cpu, name)()) for name in probes if hasattr(cpu, name))
    except Exception:  # pragma: no cover - very old or unusual torch builds
        return False


def cuda_has_fast_bf16() -> bool:
    """Whether the current GPU does bf16 in hardware (Ampere or newer), not through emulation (T4, V100).

    Notebook 00; used by all.
    """
    import torch

    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # pragma: no cover - torch without the keyword
        return torch.cuda.get_device_capability()[0] >= 8


def pick_precision(device: str, preferred: str | None = None) -> str:
    """Choose ``fp32``, ``bf16`` or ``fp16`` for training on ``device`` (notebook 00 shows the choice).

    The argument, then ``$WORKSHOP_PRECISION`` (``fp32|bf16|fp16|auto``), then ``auto``:
    bf16 on a GPU that does it in hardware, else fp16 on any other GPU; on a CPU with AMX or
    AVX512-BF16, bf16 (``CPU_BF16_BY_DEFAULT``: the reference precision check found it equivalent to
    fp32, and faster: benchmark 3); fp32 on other CPUs and on Apple MPS.
    """
    choice = (preferred or os.environ.get(PRECISION_ENV) or "auto").strip().lower()
    if choice not in PRECISIONS:
        raise ValueError(f"Unknown precision {choice!r} (from ${PRECISION_ENV} or the argument). "
                         f"Use one of: {', '.join(PRECISIONS)}.")
    kind = device.split(":")[0]
    if choice == "fp16" and kind != "cuda":
        raise ValueError(f"Precision 'fp16' needs a CUDA GPU, but the device is {device!r}; "
                         "use 'bf16' (on a CPU with AMX/AVX512-BF16) or 'fp32'.")
    if choice == "bf16" and kind == "mps":
        raise ValueError("Precision 'bf16' is not supported on Apple MPS by the trainer here; use 'fp32'.")
    if choice != "auto":
        return choice
    if kind == "cuda":
        return "bf16" if cuda_has_fast_bf16() else "fp16"
    if kind == "cpu":
        return "bf16" if CPU_BF16_BY_DEFAULT and cpu_has_fast_bf16() else "fp32"
    return "fp32"


def mixed_precision(device: str, precision: str | None = None) -> dict:
    """Trainer flags for ``precision`` (:func:`pick_precision` when None): ``{"bf16": True}``, ``{"fp16": True}`` or ``{}``.

    Notebook 00; used by all.
    """
    precision = precision if precision in ("fp32", "bf16", "fp16") else pick_precision(device, precision)
    return {"bf16": True} if precision == "bf16" else {"fp16": True} if precision == "fp16" else {}


def default_seed() -> int:
    """The workshop's base seed (``$WORKSHOP_SEED``, default 0).

    Notebook 00; used by all.
    """
    return int(os.environ.get(SEED_ENV, "0"))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so the same seed gives the same numbers.

    Notebook 00; used by all.
    """
    import torch
    from transformers import set_seed

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    set_seed(seed)


@dataclass(frozen=True)
class Setup:
    """What ``setup()`` decided: the scale, the device and the base seed.

    Notebook 00; used by all.
    """

    scale: Scale
    device: str
    seed: int
    precision: str = "fp32"

    def __repr__(self) -> str:
        s = self.scale
        return (
            f"Workshop scale {s.name!r} on {self.device} in {self.precision} (seed {self.seed}): "
            f"STS-B train={s.train_size or 'all'}, dev={s.dev_size or 'all'}, test={s.test_size or 'all'}, "
            f"seeds={list(s.seeds)}, epochs={s.epochs}, batch={s.batch_size}"
        )


def setup(scale: str | None = None, device: str | None = None, seed: int | None = None,
          precision: str | None = None) -> Setup:
    """Configure a notebook: quiet logs, scale, device, precision and seed (first cell of every notebook).
    Notebook 00; used by all.

    With several GPUs visible and no torchrun, only one (``cuda:N``, else the first) is left
    visible to this process (:func:`helpers.devices.pin_one_gpu`).

    The precision chosen here (``$WORKSHOP_PRECISION`` or ``auto``) is the one every later
    :func:`helpers.train` call uses unless its config says otherwise.
    """
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=".*deprecated.*", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - logging is cosmetic
        pass
    from .devices import pin_one_gpu

    asked = device or os.environ.get(DEVICE_ENV)
    pinned = pin_one_gpu(asked)  # several GPUs, one process: only one stays visible (before CUDA starts)
    if pinned != asked and os.environ.get(DEVICE_ENV):
        os.environ[DEVICE_ENV] = pinned  # cuda:N is now this process's only GPU, cuda
    dev = pick_device(pinned)
    prec = pick_precision(dev, precision)
    if precision:
        os.environ[PRECISION_ENV] = prec  # later train() calls in this kernel use the same precision
    cfg = Setup(get_scale(scale), dev, default_seed() if seed is None else seed, prec)
    seed_everything(cfg.seed)
    return cfg


def environment_report(device: str | None = None) -> dict:
    """Versions, device, scale, threads and data folder: what notebook 00 checks first."""
    import platform

    import sentence_transformers
    import torch
    import transformers

    from .data import find_local

    stsb = find_local("stsbenchmark/sts-test.csv")
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence-transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "device": pick_device(device),
        "precision": pick_precision(pick_device(device)),
        "cuda": torch.version.cuda or "none",
        "cpu threads": torch.get_num_threads(),
        "scale": get_scale().name,
        "data": _data_source(stsb),
    }


def _data_source(found) -> str:
    """Where the data comes from, without machine-specific paths (notebook 00's environment cell)."""
    from pathlib import Path

    if found is None:
        return "Hugging Face hub (no local copy)"
    root = found.parent.parent.resolve()
    env = os.environ.get("WORKSHOP_DATA_DIR")
    if env and Path(env).resolve() == root:
        return "local copy in $WORKSHOP_DATA_DIR"
    return "local copy in data/"
