"""Layer freezing, gradual unfreezing and layer-wise learning rates (notebook 02).

Static freezing happens before the trainer builds its optimizer, so frozen
weights get no optimizer state (less memory). Gradual unfreezing must not:
the trainer only puts ``requires_grad`` weights into AdamW, so a layer frozen
before the optimizer exists would never train after being "unfrozen".
:class:`GradualUnfreezing` therefore freezes in ``on_train_begin`` (after the
optimizer is built) and unfreezes one more layer at each epoch's start.

Runner layer: mechanics, cost model and tables; the runs of notebook 02's
grids come from :func:`helpers.run_grid` (``speed=True`` times the training
steps alone, which :func:`train_speed` reads).
"""
from __future__ import annotations

import re

from transformers import TrainerCallback

from .models import count_parameters, embeddings, encoder_layers, n_layers
from .results import fmt_mean_sd, mean_sd


def set_trainable(module, trainable: bool) -> None:
    """Switch ``requires_grad`` for every weight of ``module`` (notebook 02)."""
    for p in module.parameters():
        p.requires_grad_(trainable)


def freeze_bottom(model, k: int, freeze_embeddings: bool = True) -> list[str]:
    """Freeze the bottom ``k`` transformer layers (and the embeddings); returns the frozen parts' names
    (notebook 02)."""
    layers = encoder_layers(model)
    if not 0 <= k <= len(layers):
        raise ValueError(f"Cannot freeze {k} layers: the model has {len(layers)} (use 0..{len(layers)}).")
    frozen = []
    if freeze_embeddings:
        set_trainable(embeddings(model), False)
        frozen.append("embeddings")
    for i in range(k):
        set_trainable(layers[i], False)
        frozen.append(f"layer {i}")
    return frozen


def unfreeze_all(model) -> None:
    """Make every weight trainable again (notebook 02)."""
    set_trainable(model, True)


def trainable_layers(model) -> list[int]:
    """Indices of transformer layers with any trainable weight (notebook 02)."""
    return [i for i, layer in enumerate(encoder_layers(model)) if any(p.requires_grad for p in layer.parameters())]


class GradualUnfreezing(TrainerCallback):
    """Start with only the top ``start_layers`` trainable; unfreeze one more layer (downwards) each epoch.

    After every layer is trainable the embeddings follow. ``history`` records,
    per epoch, which layer indices were trainable (notebook 02 draws it).
    """

    def __init__(self, model, start_layers: int = 1):
        self.model = model
        self.start_layers = start_layers
        self.history: list[list[int]] = []

    def _apply(self, epoch: int) -> None:
        layers = encoder_layers(self.model)
        n = len(layers)
        open_layers = min(n, self.start_layers + epoch)
        for i, layer in enumerate(layers):
            set_trainable(layer, i >= n - open_layers)
        set_trainable(embeddings(self.model), self.start_layers + epoch > n)
        self.history.append(trainable_layers(self.model))

    def on_train_begin(self, args, state, control, **kwargs):
        self._apply(0)
        self._epoch_started = 0

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = int(round(state.epoch or 0))
        if epoch > 0:
            self._apply(epoch)


def _module_prefix(model, target) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    raise ValueError("module not found in model")  # pragma: no cover


def layerwise_rates(model, peak: float, decay: float) -> dict[str, float]:
    """Rate per part for layer-wise decay: top layer ``peak``, each layer below x ``decay``, embeddings lowest
    (notebook 02)."""
    n = n_layers(model)
    rates = {f"layer {i}": peak * decay ** (n - 1 - i) for i in range(n)}
    rates["embeddings"] = peak * decay**n
    return rates


def layerwise_lr_mapping(model, peak: float, decay: float) -> dict[str, float]:
    """``learning_rate_mapping`` for the trainer: regex of each layer's parameter names -> its rate (notebook 02).

    Patterns are built from the model's own module paths (``0.model.encoder.layer.3.``),
    so they work for any backbone layout and never match a neighbouring index.
    """
    if decay == 1.0:
        return {}
    rates = layerwise_rates(model, peak, decay)
    mapping = {}
    for i, layer in enumerate(encoder_layers(model)):
        mapping[re.escape(_module_prefix(model, layer)) + r"\."] = rates[f"layer {i}"]
    mapping[re.escape(_module_prefix(model, embeddings(model))) + r"\."] = rates["embeddings"]
    return mapping


# --------------------------------------------------------------------------- parts, arbitrary freezing


def part_names(model) -> list[str]:
    """The freezable parts, bottom first: ``embeddings``, ``layer 0`` ... ``layer N-1`` (read from the model)
    (notebook 02)."""
    return ["embeddings"] + [f"layer {i}" for i in range(n_layers(model))]


def part_modules(model) -> dict[str, object]:
    """``{part name: module}`` for :func:`part_names` (notebook 02)."""
    parts = {"embeddings": embeddings(model)}
    for i, layer in enumerate(encoder_layers(model)):
        parts[f"layer {i}"] = layer
    return parts


def check_part_names(names, n: int | None = None) -> list[str]:
    """Problems with part names (``"embeddings"``, ``"layer 3"``); ``n`` is the model's layer count if known
    (notebook 02)."""
    problems = []
    for name in names:
        m = re.fullmatch(r"layer (\d+)", str(name))
        if name == "embeddings":
            continue
        if m is None:
            problems.append(f"{name!r} is not a part name (use 'embeddings' or 'layer 0' ... 'layer N-1')")
        elif n is not None and int(m.group(1)) >= n:
            problems.append(f"{name!r} does not exist (the model has layers 0..{n - 1})")
    return problems


def freeze_parts(model, parts) -> list[str]:
    """Freeze exactly the named parts (any set, not only the bottom ones); returns their names, bottom first
    (notebook 02)."""
    modules = part_modules(model)
    problems = check_part_names(parts, n_layers(model))
    if problems:
        raise ValueError("; ".join(problems))
    for name in parts:
        set_trainable(modules[name], False)
    return [p for p in modules if p in set(parts)]


def shaping_trainable(model) -> int:
    """Trainable parameters that shape the embeddings: embeddings, layers and later modules (not the unused pooler)
    (notebook 02)."""
    total = sum(p.numel() for m in part_modules(model).values() for p in m.parameters() if p.requires_grad)
    for idx, module in enumerate(model):
        if idx > 0:
            total += sum(p.numel() for p in module.parameters() if p.requires_grad)
    return total


# --------------------------------------------------------------------------- lower layers at a lower rate


def lower_layers_rates(model, peak: float, low: float, lower_layers: int | None = None) -> dict[str, float]:
    """Rate per part when the bottom ``lower_layers`` layers (default: the bottom half) and the embeddings get ``low``
    (notebook 02).

    The syllabus's "1e-5 for earlier layers": the upper layers keep ``peak``.
    """
    n = n_layers(model)
    k = n // 2 if lower_layers is None else lower_layers
    rates = {f"layer {i}": (low if i < k else peak) for i in range(n)}
    rates["embeddings"] = low
    return rates


def rates_lr_mapping(model, rates: dict[str, float], peak: float) -> dict[str, float]:
    """``learning_rate_mapping`` from ``{part: rate}``; parts at ``peak`` need no entry (they keep the base rate)
    (notebook 02)."""
    modules = part_modules(model)
    return {re.escape(_module_prefix(model, modules[part])) + r"\.": rate
            for part, rate in rates.items() if rate != peak}


def part_rates(model, peak: float, decay: float = 1.0, low: float | None = None,
               lower_layers: int | None = None) -> dict[str, float]:
    """The peak rate of every part for a configuration: flat, layer-wise decay, or lower layers at ``low``
    (notebook 02)."""
    if low is not None:
        return lower_layers_rates(model, peak, low, lower_layers)
    return layerwise_rates(model, peak, decay)


# --------------------------------------------------------------------------- proof that freezing happened


class WeightMovement(TrainerCallback):
    """How far each part's weights moved in each epoch (L2 norm of the change), to prove what trained (notebook 02).

    Snapshots the weights at the start of training and at every epoch's end;
    ``epochs`` holds one ``{part: distance}`` per epoch. A frozen part moves by
    exactly 0.0. Works with the optimizer the trainer builds and with
    :class:`GradualUnfreezing`: it only reads weights, never changes them.
    Pass it with ``train(cfg, callbacks=[WeightMovement()])``.
    """

    def __init__(self, model=None):
        self.model = model
        self.epochs: list[dict[str, float]] = []
        self._last: dict[str, list] = {}

    def _snap(self) -> dict[str, list]:
        return {name: [p.detach().to("cpu", copy=True) for p in m.parameters()]
                for name, m in part_modules(self.model).items()}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.model is None:
            self.model = model
        self.epochs = []
        self._last = self._snap()

    def on_epoch_end(self, args, state, control, **kwargs):
        import torch

        now = self._snap()
        row = {}
        for name, tensors in now.items():
            sq = sum(float(torch.sum((a.double() - b.double()) ** 2)) for a, b in zip(tensors, self._last[name]))
            row[name] = sq ** 0.5
        self.epochs.append(row)
        self._last = now

    def table(self):
        """A DataFrame: one row per part (bottom first), one column per epoch."""
        import pandas as pd

        df = pd.DataFrame(self.epochs).T
        df.columns = [f"epoch {i + 1}" for i in range(len(self.epochs))]
        return df


# --------------------------------------------------------------------------- what freezing saves


def step_cost(n: int, frozen) -> float:
    """Compute per optimizer step relative to full training, for ``n`` layers and the set of frozen part names
    (notebook 02).

    Cost model (docs/references.md, "Layer freezing and layer-wise rates"; Kaplan et al. 2020): forward = 1 unit per
    layer, always all layers; backward = 1 unit per layer for the activation
    gradients, from the top down to the lowest trainable part, plus 1 unit per
    trainable layer for its weight gradients. Full training costs 3 units per
    layer. Freezing the bottom k gives (n + 2(n - k)) / 3n. Trainable
    embeddings need the activation gradients through every layer.
    """
    frozen = set(frozen)
    trainable = [i for i in range(n) if f"layer {i}" not in frozen]
    if "embeddings" not in frozen:
        lowest = 0
    elif trainable:
        lowest = min(trainable)
    else:
        return 1 / 3  # forward only: nothing to train
    return (n + (n - lowest) + len(trainable)) / (3 * n)


def adamw_state_bytes(trainable_params: int) -> int:
    """AdamW keeps two fp32 states (first and second moment) per trainable parameter: 8 bytes each (notebook 02)."""
    return 8 * trainable_params


# --------------------------------------------------------------------------- tables for notebook 02


def freezing_cost_table(model, ks=None, freeze_embeddings: bool | None = None):
    """Predicted cost of freezing the bottom k layers: trainable parameters, compute per step, AdamW state
    (notebook 02).

    ``freeze_embeddings=None`` follows the runner: the embeddings are frozen exactly when k > 0.
    """
    import pandas as pd

    n = n_layers(model)
    modules = part_modules(model)
    counts = {name: count_parameters(m) for name, m in modules.items()}
    shaping = sum(counts.values()) + sum(count_parameters(m) for i, m in enumerate(model) if i > 0)
    rows = []
    for k in (range(n + 1) if ks is None else ks):
        frozen = [f"layer {i}" for i in range(k)] + (["embeddings"] if (k > 0 if freeze_embeddings is None else freeze_embeddings) else [])
        trainable = shaping - sum(counts[p] for p in frozen)
        cost = step_cost(n, frozen)
        rows.append({"freeze_layers": k, "trainable params": trainable, "share trainable": f"{trainable / shaping:.1%}",
                     "compute per step": f"{cost:.1%}", "speed-up ceiling": f"{1 / cost:.2f}x",
                     "AdamW state MB": round(adamw_state_bytes(trainable) / 2**20, 1)})
    return pd.DataFrame(rows).set_index("freeze_layers")


def rates_table(model, peak: float, arms: dict[str, dict]):
    """Rate per part (rows, top layer first) for each arm's settings (``decay=`` or ``low=``/``lower_layers=``)
    (notebook 02)."""
    import pandas as pd

    cols = {arm: part_rates(model, peak, **kw) for arm, kw in arms.items()}
    df = pd.DataFrame(cols).loc[list(reversed(part_names(model)))]
    return df.map(lambda v: f"{v:.2e}")


def summary_table(results_by_arm: dict[str, list], baseline: str | None = None):
    """One row per arm: dev and test (mean ± sd over seeds), trainable parameters, steps/s, speed-up, peak memory
    (notebook 02)."""
    import pandas as pd

    baseline = baseline or next(iter(results_by_arm))
    base_speed = mean_sd([train_speed(r) for r in results_by_arm[baseline]])[0]
    rows = []
    for arm, runs in results_by_arm.items():
        speed = mean_sd([train_speed(r) for r in runs])[0]
        rows.append({"arm": arm, "seeds": len(runs), "dev": fmt_mean_sd([r.dev_metric for r in runs]),
                     "test": fmt_mean_sd([r.test_metric for r in runs]),
                     "trainable params": runs[0].trainable_params, "steps/s": round(speed, 2),
                     f"speed vs {baseline}": f"{speed / base_speed:.2f}x",
                     "peak MB": round(mean_sd([r.peak_memory_mb for r in runs])[0])})
    return pd.DataFrame(rows).set_index("arm")


def train_speed(result) -> float:
    """Optimizer steps per second of training alone (``run_grid(..., speed=True)``), else the runner's overall rate
    (notebook 02)."""
    return getattr(result, "train_steps_per_sec", None) or result.steps_per_sec
