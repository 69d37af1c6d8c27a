"""Early-stopping rules replayed offline on logged validation curves, and the wiring around them (notebook 04).

A run trained to the end logs its validation loss and task metric at every
evaluation (``TrainResult.evals``). Replaying a stopping rule on that log says
at which evaluation it would have stopped and which checkpoint it would have
kept, without training again. Evaluations of the test split logged at the same
steps (:class:`TestCurve`) say what the kept checkpoint would have scored.

Real early stopping is not re-implemented here: it is the trainer's own
``EarlyStoppingCallback`` wired by :func:`helpers.train`
(``TrainConfig.early_stopping_patience``). :func:`patience` mirrors that
callback exactly, so a replay and a real run stop at the same evaluation:

* the evaluation before training (step 0, ``eval_on_start``) never counts for
  the callback; every rule here sees only the evaluations during training;
* an evaluation "improves" when it beats the best *earlier* evaluation during
  training by more than ``threshold``; the patience counter resets then, and
  grows by one otherwise; the run stops when the counter reaches the patience;
* the kept checkpoint is the best evaluation up to the stop, step 0 included
  (what :func:`helpers.train` restores).

Rules: ``patience(n)``, Prechelt's generalization loss ``gl(alpha)`` and
``up(s)`` (1998), each on the task metric (``signal="metric"``, higher is
better) or the validation loss (``signal="loss"``, lower is better).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from transformers import TrainerCallback

from .evaluation import score
from .results import fmt_mean_sd, mean_sd
from .training import train

SIGNALS = ("metric", "loss")


@dataclass(frozen=True)
class Rule:
    """A stopping rule: ``kind`` patience | gl | up with its parameter (see :func:`patience`, :func:`gl`, :func:`up`)
    (notebook 04)."""

    kind: str
    param: float
    threshold: float = 0.0

    @property
    def name(self) -> str:
        if self.kind == "patience":
            extra = f", threshold {self.threshold:g}" if self.threshold else ""
            return f"patience {int(self.param)}{extra}"
        if self.kind == "gl":
            return f"GL{self.param:g}"
        return f"UP{int(self.param)}"


def patience(n: int, threshold: float = 0.0) -> Rule:
    """Stop after ``n`` evaluations in a row without improvement (transformers' ``EarlyStoppingCallback``)
    (notebook 04)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"patience must be a whole number of at least 1, got {n!r}")
    return Rule("patience", n, threshold)


def gl(alpha: float) -> Rule:
    """Prechelt's GL_alpha: stop once the validation error is more than ``alpha`` % above its minimum so far
    (notebook 04).

    The error is the validation loss, or ``1 - metric`` for Spearman / nDCG@10.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be a positive percentage, got {alpha!r}")
    return Rule("gl", float(alpha))


def up(s: int) -> Rule:
    """Prechelt's UP_s: stop after ``s`` evaluations in a row at which the validation error rose (notebook 04)."""
    if not isinstance(s, int) or s < 1:
        raise ValueError(f"s must be a whole number of at least 1, got {s!r}")
    return Rule("up", s)


def parse_rule(rule: Rule | str) -> Rule:
    """A :class:`Rule`, or its name: ``"patience 3"``, ``"GL5"``, ``"UP2"`` (notebook 04)."""
    if isinstance(rule, Rule):
        return rule
    text = str(rule).strip().lower().replace("_", "").replace(" ", "")
    try:
        if text.startswith("patience"):
            return patience(int(text[len("patience"):]))
        if text.startswith("gl"):
            return gl(float(text[2:]))
        if text.startswith("up"):
            return up(int(text[2:]))
    except ValueError:
        pass
    raise ValueError(f"Unknown stopping rule {rule!r}; use 'patience N', 'GL<alpha>' or 'UP<s>'.")


# --------------------------------------------------------------------------- curves


def curve(evals, signal: str = "metric") -> list[tuple[int, float]]:
    """``(step, value)`` of every logged evaluation that has ``signal`` (``metric`` or ``loss``) (notebook 04)."""
    if signal not in SIGNALS:
        raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")
    return [(int(e["step"]), float(e[signal])) for e in evals if e.get(signal) is not None]


def error(value: float, signal: str) -> float:
    """Lower-is-better error of one evaluation: the loss itself, or ``1 - metric`` (notebook 04)."""
    return value if signal == "loss" else 1.0 - value


def thin(evals, every: int) -> list[dict]:
    """The evaluations a run evaluating ``every`` times less often would have logged (step 0 kept) (notebook 04).

    With 4 evaluations per epoch, ``thin(evals, 4)`` is once per epoch.
    """
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a whole number of at least 1, got {every!r}")
    during = [e for e in evals if e["step"] > 0]
    return [e for e in evals if e["step"] == 0] + [e for i, e in enumerate(during, 1) if i % every == 0]


# --------------------------------------------------------------------------- replay


@dataclass
class Replay:
    """Where one rule stops on one logged run, and what it keeps (notebook 04)."""

    rule: str
    signal: str
    fired: bool  # False: the rule never fired, the run went to its last evaluation
    stop_step: int  # the step of the evaluation at which training ends
    kept_step: int  # the best evaluation up to the stop (what would be restored)
    kept_dev: float  # validation metric of the kept checkpoint
    kept_test: float  # test score of the kept checkpoint (NaN without a test curve)
    evals_seen: int  # evaluations during training up to the stop
    total_steps: int  # the steps of the whole logged run

    @property
    def compute(self) -> float:
        """Share of the whole run's optimizer steps that were trained before stopping."""
        return self.stop_step / self.total_steps if self.total_steps else float("nan")

    def row(self) -> dict:
        return {"rule": self.rule, "signal": self.signal, "stops at step": self.stop_step,
                "compute used": self.compute, "kept step": self.kept_step, "kept dev": self.kept_dev,
                "kept test": self.kept_test, "fired": self.fired}


def stop_index(values: list[float], rule: Rule, signal: str = "metric") -> int | None:
    """Index (0-based) of the evaluation at which ``rule`` stops a run, or ``None`` if it never fires (notebook 04).

    ``values`` are the evaluations *during* training (no step 0), in order.
    """
    rule = parse_rule(rule)
    higher = signal == "metric"
    if rule.kind == "patience":
        best, counter = None, 0
        for i, v in enumerate(values):
            # the callback compares with the best *earlier* evaluation, then the trainer updates the best
            improved = best is None or ((v > best if higher else v < best) and abs(v - best) > rule.threshold)
            counter = 0 if improved else counter + 1
            if best is None or (v > best if higher else v < best):
                best = v
            if counter >= rule.param:
                return i
        return None
    errors = [error(v, signal) for v in values]
    if rule.kind == "gl":
        lowest = math.inf
        for i, e in enumerate(errors):
            lowest = min(lowest, e)
            if lowest <= 0:
                continue  # a perfect score: nothing to lose relative to
            if 100.0 * (e / lowest - 1.0) > rule.param:
                return i
        return None
    rises = 0
    for i in range(1, len(errors)):
        rises = rises + 1 if errors[i] > errors[i - 1] else 0
        if rises >= rule.param:
            return i
    return None


def replay(evals, rule: Rule | str, signal: str = "metric", test=None, total_steps: int | None = None) -> Replay:
    """Replay ``rule`` on a run's logged ``evals`` (``TrainResult.evals``) (notebook 04).

    ``test``: the test score at the evaluation steps (a :class:`TestCurve`, a
    ``{step: score}`` dict, or a result with ``test_curve``), to say what the
    kept checkpoint scores. ``total_steps``: the steps of the whole run (for
    the compute share; default: the last evaluation's step).
    """
    rule = parse_rule(rule)
    points = curve(evals, signal)
    if not points:
        raise ValueError(f"no evaluation in the log has a {signal!r}")
    during = [(s, v) for s, v in points if s > 0]
    idx = stop_index([v for _, v in during], rule, signal)
    fired = idx is not None
    stop_step = during[idx][0] if fired else points[-1][0]
    seen = [(s, v) for s, v in points if s <= stop_step]
    best = (max if signal == "metric" else min)(seen, key=lambda p: p[1])  # first best, as train() restores
    kept = best[0]
    dev = {int(e["step"]): e.get("metric") for e in evals}
    scores = test_scores(test)
    return Replay(rule.name, signal, fired, stop_step, kept,
                  float("nan") if dev.get(kept) is None else float(dev[kept]),
                  float(scores.get(kept, float("nan"))), sum(1 for s, _ in seen if s > 0),
                  total_steps or points[-1][0])


def replay_all(evals, rules, signals=("metric",), test=None, total_steps: int | None = None) -> list[Replay]:
    """:func:`replay` for every rule on every signal (notebook 04)."""
    return [replay(evals, r, s, test, total_steps) for s in signals for r in rules]


def reference_rows(evals, test=None, total_steps: int | None = None) -> list[dict]:
    """The two baselines for a replay table: train to the end and keep the last / the best validation checkpoint
    (notebook 04)."""
    scores = test_scores(test)
    points = curve(evals, "metric")
    last_step = points[-1][0]
    best_step = max(points, key=lambda p: p[1])[0]
    dev = dict(points)
    total = total_steps or last_step
    rows = []
    for name, step in (("no stopping, keep the last", last_step), ("no stopping, keep the best dev", best_step)):
        rows.append({"rule": name, "signal": "metric", "stops at step": last_step,
                     "compute used": last_step / total if total else float("nan"), "kept step": step,
                     "kept dev": dev[step], "kept test": float(scores.get(step, float("nan"))), "fired": False})
    return rows


def replay_table(evals, rules, signals=("metric",), test=None, total_steps: int | None = None):
    """A pandas table: for each rule and signal, where it stops, the compute it uses and what it keeps
    (notebook 04)."""
    import pandas as pd

    rows = reference_rows(evals, test, total_steps)
    rows += [r.row() for r in replay_all(evals, rules, signals, test, total_steps)]
    return pd.DataFrame(rows).set_index(["rule", "signal"])


def replay_over_seeds(results, rules, signals=("metric",), every: int = 1) -> dict[str, list[dict]]:
    """For each rule (and signal), one row per seed's run: ``{"test", "dev", "compute", "stop", "seed"}`` (notebook 04).

    ``results`` are full runs with a ``test_curve`` (see :func:`train_with_test_curve`).
    The rows feed :func:`helpers.verdicts.compare` (``key="test"``). Two reference
    arms come first: ``no stopping (last)`` and ``no stopping (best dev)``.
    """
    out: dict[str, list[dict]] = {"no stopping (last)": [], "no stopping (best dev)": []}
    for r in results:
        evals = thin(r.evals, every)
        total = r.steps or None
        seed = (getattr(r, "config", None) or {}).get("seed")  # rules replayed on one run share its seed: paired
        last, best = reference_rows(evals, r, total)
        for name, row in (("no stopping (last)", last), ("no stopping (best dev)", best)):
            out[name].append({"test": row["kept test"], "dev": row["kept dev"], "compute": row["compute used"],
                              "stop": row["stops at step"], "seed": seed})
        for rp in replay_all(evals, rules, signals, r, total):
            name = rp.rule if len(signals) == 1 else f"{rp.rule} on {rp.signal}"
            out.setdefault(name, []).append({"test": rp.kept_test, "dev": rp.kept_dev, "compute": rp.compute,
                                             "stop": rp.stop_step, "seed": seed})
    return out


def rule_summary_table(rows_by_rule: dict[str, list[dict]]):
    """Mean ± sd over seeds of the kept test score and the compute used, per rule (pandas) (notebook 04)."""
    import pandas as pd

    table = []
    for name, rows in rows_by_rule.items():
        table.append({"rule": name, "seeds": len(rows), "kept test": fmt_mean_sd(r["test"] for r in rows),
                      "compute used": f"{mean_sd(r['compute'] for r in rows)[0]:.0%}", "stops at step": ", ".join(str(r["stop"]) for r in rows)})
    return pd.DataFrame(table).set_index("rule")


def disagreements(evals) -> dict:
    """Where validation loss and task metric disagree: their best steps and the evaluations moving in opposite ways
    (notebook 04)."""
    pts = [e for e in evals if e.get("loss") is not None and e.get("metric") is not None]
    best_metric = max(pts, key=lambda e: e["metric"])["step"]
    best_loss = min(pts, key=lambda e: e["loss"])["step"]
    opposite = []
    for a, b in zip(pts, pts[1:]):
        d_loss, d_metric = b["loss"] - a["loss"], b["metric"] - a["metric"]
        if (d_loss < 0 and d_metric < 0) or (d_loss > 0 and d_metric > 0):  # loss better but metric worse, or vice versa
            opposite.append(b["step"])
    return {"best step by metric": best_metric, "best step by loss": best_loss,
            "steps where they moved in opposite directions": opposite,
            "share of evaluations that disagree": len(opposite) / max(1, len(pts) - 1)}


# --------------------------------------------------------------------------- wiring


def test_scores(test) -> dict[int, float]:
    """``{step: test score}`` from a :class:`TestCurve`, a result with ``test_curve``, a dict, or ``None``
    (notebook 04)."""
    if test is None:
        return {}
    if isinstance(test, dict):
        return {int(k): float(v) for k, v in test.items()}
    if isinstance(test, TestCurve):
        return test.by_step()
    tc = getattr(test, "test_curve", None)
    if tc is None:
        return {}
    return test_scores(tc)


class TestCurve(TrainerCallback):
    """Scores the model on a second evaluator (the test split) at every evaluation of the run (notebook 04).

    Pass it in ``train(..., callbacks=[TestCurve(task.test_evaluator)])``; it
    consumes no random numbers, so the run's trajectory stays the same.
    ``points`` holds ``{"step", "test"}`` per evaluation (step 0 included).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, evaluator):
        self.evaluator, self._score = evaluator, score
        self.points: list[dict] = []

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        was_training = model.training
        self.points.append({"step": int(state.global_step), "test": self._score(model, self.evaluator)})
        model.train(was_training)

    def by_step(self) -> dict[int, float]:
        return {p["step"]: p["test"] for p in self.points}


def train_with_test_curve(cfg, data, **kwargs):
    """:func:`helpers.train` that also logs the test score at every evaluation (``result.test_curve``) (notebook 04).

    Used for the runs that rules are replayed on: the replay then says which test
    score each rule would have kept.
    """
    tracker = TestCurve(data.test_evaluator)
    callbacks = [*kwargs.pop("callbacks", ()), tracker]
    result = train(cfg, data=data, callbacks=callbacks, **kwargs)
    result.test_curve = tracker.by_step()
    return result


def split_overlap(task) -> dict:
    """Sizes of a task's training, validation and test sets and how many examples each pair of them shares
    (notebook 04, section 1).

    An example is a (sentence1, sentence2) pair for STS-B, a query for a retrieval task.
    """
    def examples(ev):
        if hasattr(ev, "queries"):  # InformationRetrievalEvaluator: the query texts
            return set(ev.queries)
        return set(zip(ev.sentences1, ev.sentences2))

    cols = task.columns
    train = set(task.train[cols[0]]) if "score" not in cols else set(zip(task.train[cols[0]], task.train[cols[1]]))
    sets = {"train": train, "validation": examples(task.dev_evaluator), "test": examples(task.test_evaluator)}
    return {"sizes": {k: len(v) for k, v in sets.items()},
            "validation & test": len(sets["validation"] & sets["test"]),
            "train & validation": len(sets["train"] & sets["validation"]),
            "train & test": len(sets["train"] & sets["test"])}


def restored_check(result, evaluator) -> dict:
    """Re-score an early-stopped run's returned model on the validation set: it must equal the best logged evaluation
    (notebook 04)."""
    signal = "loss" if result.config.get("early_stopping_metric") == "loss" else "metric"
    points = curve(result.evals, signal)
    best_step = (max if signal == "metric" else min)(points, key=lambda p: p[1])[0]
    logged = {int(e["step"]): e.get("metric") for e in result.evals}[best_step]
    rescored = score(result.model, evaluator)
    return {"best logged step": best_step, "best logged dev": logged, "restored step": result.best_step,
            "re-scored dev": rescored, "equal": result.best_step == best_step and abs(rescored - logged) < 1e-6}


def compute_saved(stopped, full) -> dict:
    """What stopping saved against the same run trained to the end: steps, evaluations and wall time (notebook 04)."""
    ev_s = sum(1 for e in stopped.evals if e["step"] > 0)
    ev_f = sum(1 for e in full.evals if e["step"] > 0)
    return {"steps": (stopped.steps, full.steps), "evaluations": (ev_s, ev_f),
            "wall_s": (stopped.wall_time, full.wall_time),
            "steps saved": 1 - stopped.steps / full.steps if full.steps else float("nan")}


# --------------------------------------------------------------------------- seeds


def metric_at(evals, step: int) -> float:
    """The validation metric of the last evaluation at or before ``step`` (notebook 04)."""
    pts = [(s, v) for s, v in curve(evals, "metric") if s <= step]
    return pts[-1][1] if pts else float("nan")


def best_dev(result) -> float:
    """The best validation metric a run logged (what ``load_best_model_at_end`` would keep) (notebook 04)."""
    pts = curve(result.evals, "metric")
    return max(v for _, v in pts) if pts else float("nan")


def per_seed_table(results):
    """One row per seed: test at the end, last and best validation metric, and the best evaluation's step (pandas)
    (notebook 04)."""
    import pandas as pd

    rows = []
    for r in results:
        pts = curve(r.evals, "metric")
        best = max(pts, key=lambda p: p[1]) if pts else (None, float("nan"))
        rows.append({"seed": r.config.get("seed"), "test at the end": r.test_metric,
                     "last validation": pts[-1][1] if pts else float("nan"), "best validation": best[1],
                     "best at step": best[0]})
    return pd.DataFrame(rows).set_index("seed")


def prune_seeds(results, at: float = 0.25, keep: int = 1) -> dict:
    """Dodge et al. (2020): start every seed, stop all but the ``keep`` best after a share ``at`` of training
    (notebook 04).

    Replayed on finished runs: ranks the seeds by their validation metric at
    ``at`` of the steps and compares with the ranking after the whole run (the
    best validation metric each seed reached). Returns the seeds kept, whether
    the finally best seed survived, and the share of compute saved.
    """
    import numpy as np

    if not results:
        raise ValueError("no runs to prune")
    seeds = [r.config.get("seed", i) for i, r in enumerate(results)]
    total = max(r.steps for r in results)
    cut = max(1, round(at * total))
    early = [metric_at(r.evals, cut) for r in results]
    final = [best_dev(r) for r in results]
    order = list(np.argsort(early)[::-1])
    kept = sorted(seeds[i] for i in order[:keep])
    best_final = seeds[int(np.argmax(final))]
    used = (keep * total + (len(results) - keep) * cut) / (len(results) * total)
    return {"at step": cut, "validation at that step": dict(zip(seeds, early)),
            "best validation of the whole run": dict(zip(seeds, final)),
            "kept seeds": kept, "best final seed": best_final, "best survived": best_final in kept,
            "compute saved": 1 - used}
