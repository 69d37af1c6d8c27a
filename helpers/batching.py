"""Batch size and its companions (notebook 03).

Runner layer. The rate-scaling rules, the effective batch and
:func:`steps_per_epoch`, the one owner of the steps arithmetic (used by the
training runner, the batch calculator and the search's pruning savings); the
batch x rate grid and its tables (the runs come from :func:`helpers.run_grid`
with ``speed=True, memory=True``); hard negatives for the code-search task;
and what AdamW's weight decay touches and can do.
"""
from __future__ import annotations

import math

from .results import mean_sd
from .schedules import warmup_steps

SCALING_RULES = ("none", "linear", "sqrt")


def effective_batch(batch_size: int, grad_accum: int = 1, world_size: int = 1) -> int:
    """Examples per optimizer step: per-device batch x accumulation steps x processes (notebook 03)."""
    return batch_size * grad_accum * world_size


def scaled_learning_rate(
    learning_rate: float, batch_size: int, base_batch_size: int, rule: str = "none", grad_accum: int = 1
) -> float:
    """The rate for ``batch_size x grad_accum`` when ``learning_rate`` was chosen at ``base_batch_size`` (notebook 03).

    ``linear``: double the batch, double the rate (Goyal et al., shown for SGD);
    ``sqrt``: double the batch, x1.41 (derived for Adam, Malladi et al. 2022);
    ``none``: keep the rate.
    """
    if rule not in SCALING_RULES:
        raise ValueError(f"Unknown rate-scaling rule {rule!r}; use one of {', '.join(SCALING_RULES)}.")
    k = effective_batch(batch_size, grad_accum) / base_batch_size
    if rule == "linear":
        return learning_rate * k
    if rule == "sqrt":
        return learning_rate * math.sqrt(k)
    return learning_rate


# --------------------------------------------------------------------------- the rules, the arithmetic

RULE_EXPONENTS = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}  # rate x (batch / base) ** exponent


def rule_rates(base_lr: float, base_batch: int, batch: int) -> dict[str, float]:
    """The rate each rule gives for ``batch`` when ``base_lr`` was right at ``base_batch`` (notebook 03)."""
    return {rule: scaled_learning_rate(base_lr, batch, base_batch, rule) for rule in SCALING_RULES}


def steps_per_epoch(n_examples: int, batch_size: int, grad_accum: int = 1, devices: int = 1) -> int:
    """Optimizer steps in one epoch, counted as the trainer counts them (notebook 03's calculator, the runner).

    One process: every batch makes a forward pass, the last smaller one too,
    so ``ceil(ceil(n / batch) / grad_accum)``. Several processes (torchrun):
    sentence-transformers drops the last incomplete batch and deals whole
    rounds of one batch per process, so each process takes
    ``n // batch // devices`` batches, then ``ceil(... / grad_accum)`` steps;
    0 when a process would get no full batch (the runner refuses that).
    """
    batches = math.ceil(n_examples / batch_size) if devices == 1 else n_examples // batch_size // devices
    if devices == 1:
        batches = max(1, batches)
    return -(-batches // grad_accum)


def batch_plan(batch_size: int, grad_accum: int = 1, devices: int = 1, data_size: int = 1000, epochs: float = 1,
               base_lr: float = 2e-5, base_batch: int = 16, warmup_fraction: float = 0.1) -> dict:
    """Everything the batch calculator shows (notebook 03): effective batch, steps, warm-up, rate per rule.

    Each of ``devices`` processes takes ``batch_size`` examples per forward
    pass and the optimizer steps every ``grad_accum`` passes, so one step
    sees ``batch_size x grad_accum x devices`` examples. Steps are counted as
    the trainer counts them (:func:`steps_per_epoch`): on one device a last,
    smaller batch still makes a step; on several the trainer drops it.
    ``negatives``: what each anchor of an in-batch loss (MNRL) meets, with the
    embeddings gathered across devices (``gather_across_devices``, the default).
    """
    for name, v in (("batch_size", batch_size), ("grad_accum", grad_accum), ("devices", devices),
                    ("data_size", data_size), ("base_batch", base_batch)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}={v!r}: use a whole number of at least 1.")
    eff = effective_batch(batch_size, grad_accum, devices)
    per_epoch = steps_per_epoch(data_size, batch_size, grad_accum, devices)
    if per_epoch < 1:
        raise ValueError(f"data_size={data_size} gives each of {devices} devices no full batch of {batch_size} "
                         f"(the trainer drops incomplete batches when several processes train): use at least "
                         f"{batch_size * devices} examples, a smaller batch or fewer devices.")
    total = max(1, math.ceil(per_epoch * epochs))
    return {
        "effective_batch": eff,
        "steps_per_epoch": per_epoch,
        "total_steps": total,
        "warmup_steps": warmup_steps(total, warmup_fraction),
        "rates": rule_rates(base_lr, base_batch, eff),
        "forward_batch": batch_size,  # what one forward pass holds in memory, per device
        "negatives": in_batch_negatives(batch_size, devices),
    }


def in_batch_negatives(batch_size: int, devices: int = 1, gather: bool = True) -> int:
    """Negatives each anchor of an in-batch loss (MNRL) meets: ``batch_size x devices - 1`` when the devices'
    embeddings are gathered (``TrainConfig.gather_across_devices``, the default), else ``batch_size - 1``.

    Gradient accumulation adds none (notebook 03); CachedMNRL's ``batch_size`` counts, not its mini-batch.
    """
    return batch_size * (devices if gather else 1) - 1


# --------------------------------------------------------------------------- the batch x rate grid

def rate_grid(base_lr: float, base_batch: int, batch_sizes, rules=SCALING_RULES) -> dict[str, dict]:
    """Arms for notebook 03's grid: every batch size at the rate each rule predicts from ``base_lr``.

    ``{name: {"batch_size", "learning_rate", "rules"}}``; rules that give the
    same rate (all of them at ``base_batch``) share one arm.
    """
    arms: dict[str, dict] = {}
    for b in batch_sizes:
        by_rate: dict[float, list[str]] = {}
        for rule in sorted(rules, key=lambda r: RULE_EXPONENTS[r]):
            lr = scaled_learning_rate(base_lr, b, base_batch, rule)
            by_rate.setdefault(round(lr, 12), []).append(rule)
        for lr, names in by_rate.items():
            arms[f"batch {b}, {'/'.join(names)} {lr:.1e}"] = {"batch_size": b, "learning_rate": lr, "rules": names}
    return arms


def arm_for(grid: dict[str, dict], batch_size: int, rule: str) -> str:
    """The name of the :func:`rate_grid` arm that trains ``batch_size`` at the rate of ``rule`` (notebook 03)."""
    for name, a in grid.items():
        if a["batch_size"] == batch_size and rule in a["rules"]:
            return name
    raise KeyError(f"No arm for batch {batch_size} under rule {rule!r}.")


def grid_configs(base, grid: dict[str, dict]) -> dict:
    """``{arm: base.replace(batch_size=..., learning_rate=...)}`` for a :func:`rate_grid` (rates already scaled)
    (notebook 03)."""
    return {name: base.replace(batch_size=a["batch_size"], learning_rate=a["learning_rate"], lr_scaling="none")
            for name, a in grid.items()}


def grid_table(results: dict[str, list], grid: dict[str, dict]):
    """One row per arm of a :func:`rate_grid`: batch, rate, rules, dev and test (mean and sd), time, memory
    (notebook 03)."""
    import pandas as pd

    rows = []
    for name, runs in results.items():
        a = grid[name]
        dev, dev_sd = mean_sd([r.dev_metric for r in runs])
        test, test_sd = mean_sd([r.test_metric for r in runs])
        rows.append({"arm": name, "batch": a["batch_size"], "rate": a["learning_rate"], "rules": "/".join(a["rules"]),
                     "dev": dev, "dev sd": dev_sd, "test": test, "test sd": test_sd, "seeds": len(runs),
                     "steps": runs[0].steps,
                     "train s/epoch": mean_sd([getattr(r, "train_s_per_epoch", r.wall_time) for r in runs])[0],
                     "activation MB": mean_sd([getattr(r, "activation_mb", float("nan")) for r in runs])[0],
                     "peak MB": mean_sd([r.peak_memory_mb for r in runs])[0]})
    return pd.DataFrame(rows).set_index("arm")


def run_table(results_by_arm: dict[str, list], notes: dict[str, dict] | None = None):
    """One row per arm: seeds, steps, dev and test (mean ± sd), training s/epoch, memory, how the runs ended
    (notebook 03).

    ``notes``: extra columns per arm (e.g. negatives per anchor). Runs from
    :func:`helpers.run_grid` with ``speed=True, memory=True``.
    """
    import pandas as pd

    rows = []
    for arm, runs in results_by_arm.items():
        row = {"arm": arm, **(notes or {}).get(arm, {}), "seeds": len(runs), "steps": runs[0].steps}
        for key, vals in (("dev", [r.dev_metric for r in runs]), ("test", [r.test_metric for r in runs])):
            m, sd = mean_sd(vals)
            row[key] = f"{m:.4f} ± {sd:.4f}"
        row["train s/epoch"] = round(mean_sd([getattr(r, "train_s_per_epoch", r.wall_time) for r in runs])[0], 1)
        row["activation MB"] = round(mean_sd([getattr(r, "activation_mb", float("nan")) for r in runs])[0])
        row["peak MB"] = round(mean_sd([r.peak_memory_mb for r in runs])[0])
        row["stop"] = ", ".join(sorted({r.stop_reason.split(":")[0] for r in runs}))
        rows.append(row)
    return pd.DataFrame(rows).set_index("arm")


def best_rates(table, key: str = "dev"):
    """Per batch size, the grid's rate with the best mean ``key`` (a :func:`grid_table`), and the rules that gave it
    (notebook 03)."""
    idx = table.groupby("batch")[key].idxmax()
    best = table.loc[idx, ["batch", "rate", "rules", "dev", "test", "train s/epoch", "activation MB"]]
    return best.set_index("batch").sort_index()


def fitted_exponent(batches, rates) -> float:
    """Least-squares slope of log(rate) against log(batch): 0 = keep the rate, 0.5 = square root, 1 = linear
    (notebook 03)."""
    import numpy as np

    x, y = np.log(np.asarray(batches, dtype=float)), np.log(np.asarray(rates, dtype=float))
    if len(set(x)) < 2:
        return float("nan")
    return float(np.polyfit(x, y, 1)[0])


def nearest_rule(exponent: float) -> str:
    """The rule whose exponent is closest to a fitted one (notebook 03)."""
    return min(RULE_EXPONENTS, key=lambda r: abs(RULE_EXPONENTS[r] - exponent))


# --------------------------------------------------------------------------- what goes into an in-batch batch

def with_hard_negatives(task, model, relative_margin: float = 0.05, batch_size: int = 64):
    """A copy of a retrieval ``task`` whose training pairs get one mined hard negative each (notebook 03).

    What the library's ``mine_hard_negatives`` does, without its progress
    bars: for each anchor, the training document ``model`` (the untuned model
    here) scores highest that is not its own positive, skipping documents
    scored within ``relative_margin`` of the true positive's score (likely
    false negatives, such as near-identical code). Anchors without such a
    document are dropped. Columns: anchor, positive, negative.
    """
    from dataclasses import replace

    import torch
    from datasets import Dataset

    anchors, positives = list(task.train["anchor"]), list(task.train["positive"])
    enc = dict(batch_size=batch_size, normalize_embeddings=True, convert_to_tensor=True, show_progress_bar=False)
    with torch.no_grad():
        scores = (model.encode(anchors, **enc) @ model.encode(positives, **enc).T).float().cpu()
    own = scores.diagonal().clone()
    first = {}
    ids = torch.tensor([first.setdefault(p, i) for i, p in enumerate(positives)])
    same_text = ids.unsqueeze(1) == ids.unsqueeze(0)
    scores[same_text] = -torch.inf  # the positive itself and exact copies of it
    scores[scores > (own - own.abs() * relative_margin).unsqueeze(1)] = -torch.inf  # too close: probably also right
    best, idx = scores.max(dim=1)
    keep = [i for i in range(len(anchors)) if torch.isfinite(best[i])]
    triplets = Dataset.from_dict({"anchor": [anchors[i] for i in keep], "positive": [positives[i] for i in keep],
                                  "negative": [positives[int(idx[i])] for i in keep]})
    return replace(task, train=triplets)


# --------------------------------------------------------------------------- AdamW weight decay

def decay_groups_callback():
    """A trainer callback that records the optimizer's parameter groups as the trainer built them (notebook 03).

    ``callback.groups``: one dict per group with its ``weight_decay``, ``lr``,
    the number of tensors and weights, and the parameter names. The trainer
    gives bias and LayerNorm weights their own groups with weight decay 0.
    """
    from transformers import TrainerCallback

    class DecayGroups(TrainerCallback):
        def __init__(self):
            self.groups: list[dict] = []

        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            names = {id(p): n for n, p in model.named_parameters()} if model is not None else {}
            self.groups = [{"weight_decay": g["weight_decay"], "lr": g.get("initial_lr", g["lr"]),  # before warm-up
                            "tensors": len(g["params"]),
                            "weights": sum(p.numel() for p in g["params"]),
                            "names": [names.get(id(p), "?") for p in g["params"]]}
                           for g in optimizer.param_groups if g["params"]]

    return DecayGroups()


def decay_table(groups: list[dict]):
    """The recorded groups in two rows, decayed and not decayed: tensors, weights, and which kinds of weight
    (notebook 03)."""
    import re

    import pandas as pd

    def kind(name: str) -> str:
        name = re.sub(r"\.\d+\.", ".N.", name)
        return re.sub(r"^.*?(embeddings|encoder\.layer\.N|pooler)", r"\1", name)

    rows = []
    for decayed in (True, False):
        part = [g for g in groups if (g["weight_decay"] > 0) == decayed]
        names = [n for g in part for n in g["names"]]
        kinds = sorted({kind(n) for n in names})
        rows.append({"weight decay": "yes" if decayed else "no (0)",
                     "rate": ", ".join(sorted({f"{g['lr']:.1e}" for g in part})) or "-",
                     "decay": ", ".join(sorted({f"{g['weight_decay']:g}" for g in part})) or "-",
                     "tensors": len(names), "weights": sum(g["weights"] for g in part),
                     "bias or LayerNorm among them": sum(1 for n in names if "bias" in n or "LayerNorm" in n),
                     "kinds (layers as N)": len(kinds), "examples": ", ".join(kinds[:2]) + ", ..."})
    return pd.DataFrame(rows).set_index("weight decay")


def decay_shrink(rates, weight_decay: float) -> float:
    """How much AdamW's decoupled decay alone shrinks a decayed weight over a run: 1 - prod(1 - rate_t x decay)
    (notebook 03).

    ``rates``: the rate at every optimizer step (``result.lr``). With fine-tuning
    rates (about 2e-5) and decay 0.01 to 0.1 this is tiny, which is why the
    decay barely changes a short fine-tuning run.
    """
    keep = 1.0
    for lr in rates:
        keep *= 1.0 - lr * weight_decay
    return 1.0 - keep
