"""What a finished recipe says about itself: its plain-text report, whether tuning paid off, and the reload check's
tolerance (notebook 07 and ``python -m helpers recipe``; :class:`helpers.recipe.Recipe` writes the summary these read).

Pure functions of the ``summary.json`` dictionary: nothing here trains or loads a model.
"""
from __future__ import annotations

# The common default: what most fine-tuning scripts start from (sentence-transformers' trainer defaults with the
# usual 10% linear warm-up). The recipe trains it on the same data and measures the tuned configuration against it.
COMMON_DEFAULT = dict(batch_size=16, learning_rate=2e-5, warmup_fraction=0.1, schedule="linear", weight_decay=0.01,
                      freeze_layers=0, layerwise_decay=1.0)

# what to try when the recipe did not pay off (its assessment prints them)
SUGGESTIONS = {
    "untuned": ("more training data or more epochs (--epochs 3); the narrow search (--space narrow: the usual "
                "rates 2e-5, 3e-5 and 5e-5, each trial as long as the final run, on all the data); or keep the "
                "untuned model, which is what model/ now holds"),
    "default": ("the narrow search (--space narrow): it tries the usual rates 2e-5, 3e-5 and 5e-5, each trial as "
                "long as the final run on all the data, and keeps the best on dev. On STS-B over 4 epochs it kept "
                "5e-5, which beat the common default on test (notebook 07's bar), where the broad search's short "
                "trials ranked settings close to randomly or in reverse of the final run, on a 10% or 25% subset "
                "(notebook 06) as after one epoch instead of four (notebook 07). Or train with the common default"),
    "default, narrow": ("the common default itself: the narrow search's rates are its neighbours, so what it can "
                        "gain or lose is small; or a validation file drawn like the data the model will meet (--dev), "
                        "so that choosing on it means something for the test"),
    "test": ("a validation file drawn like the data the model will meet (--dev), so that choosing on it means "
             "something for the test; or train with the common default itself"),
}


def reload_tolerance(precision: str) -> float:
    """How far a reloaded model's test score may be from the score before saving (notebook 07).

    The score before saving comes from the trained model in memory, which still computes in the run's precision
    (the trainer wraps its forward in autocast); the reloaded model computes in fp32. In bf16/fp16 that moves a
    score by about 1e-4 (notebook 00's precision runs); in fp32 the two must agree to rounding.
    """
    return 1e-6 if precision == "fp32" else 2e-3


def assess(summary: dict) -> dict:
    """Plain statements about a finished recipe and, where it did not pay off, what to try (notebook 07).

    Returns ``{"kept_untuned", "beats_untuned", "beats_default", "notes"}`` (``beats_default`` is None when the
    common default was not trained). Scores are the validation set's: the final choice was made on it.
    """
    f, u, d = summary.get("final") or {}, summary.get("untuned") or {}, summary.get("default")
    notes, out = [], {"kept_untuned": f.get("best_step") == 0, "beats_untuned": None, "beats_default": None}
    if not f:
        return out | {"notes": notes}
    if out["kept_untuned"]:
        notes.append("The final run's best checkpoint was the untuned model (step 0): no evaluation during training "
                     "beat it on the validation set, so the saved model is the model as shipped. Try: "
                     + SUGGESTIONS["untuned"] + ".")
    if u.get("dev") is not None and f.get("dev") is not None:
        out["beats_untuned"] = f["dev"] > u["dev"]
        if not out["beats_untuned"] and not out["kept_untuned"]:
            notes.append(f"The tuned model scored {f['dev']:.4f} on the validation set, not above the untuned "
                         f"model's {u['dev']:.4f}. Try: " + SUGGESTIONS["untuned"] + ".")
    if d and d.get("dev") is not None and f.get("dev") is not None:
        diff = f["dev"] - d["dev"]
        out["beats_default"] = diff > 0
        if out["beats_default"]:
            notes.append(f"The tuned configuration beat the common default on the validation set by {diff:+.4f} "
                         f"({f['dev']:.4f} against {d['dev']:.4f}; one seed, so part of that may be seed noise).")
            if f.get("test") is not None and d.get("test") is not None and f["test"] < d["test"]:
                notes.append(f"On the test split it did not ({f['test']:.4f} against {d['test']:.4f}): the "
                             f"validation split ranked the two differently. On STS-B the dev and test splits draw "
                             f"their forum pairs from different sources, and the reference runs found the same "
                             f"reversal over 4 epochs (notebook 07's bar). Try: " + SUGGESTIONS["test"] + ".")
        else:
            notes.append(f"The tuned configuration did not beat the common default on the validation set "
                         f"({f['dev']:.4f} against {d['dev']:.4f}, {diff:+.4f}): the search found nothing better "
                         f"than the default. Try: " + SUGGESTIONS[
                             "default, narrow" if (summary.get("search") or {}).get("space") == "narrow" else "default"]
                         + ".")
    return out | {"notes": notes}


def _short_note(s: dict) -> str:
    """The line that says a search stopped short of the trials asked for, and why."""
    missing, running = s["trials"] - s["finished"], s.get("running") or 0
    why = (f"{running} trial(s) still marked running by another worker (a killed worker's trial is marked failed "
           "after its heartbeat's grace period, 90 s)" if running else "the search was stopped")
    return f"  stopped short: {missing} trial(s) missing; {why}. Run the same command again to add them."


def report(summary: dict) -> str:
    """A short plain-text report of a recipe summary (what the command line prints) (notebook 07)."""
    lines = [f"status: {summary.get('status')} (stage: {summary.get('stage')})"]
    data = summary.get("data", {})
    if data:
        rows = data.get("rows", {})
        lines.append(f"data: {data.get('task')} ({data.get('metric')}); train {rows.get('train')} rows, dev "
                     f"{rows.get('dev')}, search subset {rows.get('search subset')}")
        lines += [f"  warning: {w}" for w in data.get("warnings", [])]
    s = summary.get("search", {})
    if s.get("finished") is not None:
        lines.append(f"search: {s.get('finished')} of {s.get('trials')} trials finished ({s.get('complete')} completed, "
                     f"{s.get('pruned')} pruned) in {s.get('storage')}")
        if isinstance(s.get("trials"), int) and s["finished"] < s["trials"]:
            lines.append(_short_note(s))
    if s.get("best_params"):
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in s["best_params"].items())
        lines.append(f"best trial #{s.get('best_trial')}: subset score {s.get('best_subset_score'):.4f}; {params}")
    u, f = summary.get("untuned"), summary.get("final")
    if u:
        lines.append(f"untuned: dev {u['dev']:.4f}, test {u['test']:.4f}")
    if f and f.get("test") is not None:
        again = "; kept from the earlier run of this command" if f.get("reused") else ""
        lines.append(f"tuned:   dev {f['dev']:.4f}, test {f['test']:.4f} ({f['steps']} steps, {f['stop_reason']}{again})")
    d = summary.get("default")
    if d and d.get("test") is not None:
        lines.append(f"default: dev {d['dev']:.4f}, test {d['test']:.4f} (batch {d['config']['batch_size']}, "
                     f"{d['config']['learning_rate']:g}, {d['config']['schedule']} decay, no early stopping"
                     f"{'; kept from the earlier run of this command' if d.get('reused') else ''})")
    r = summary.get("reload")
    if r:
        before = r.get("test_before_saving")
        same = "the same" if r["same_test_score"] else "NOT the same"
        detail = (f"{same} as before saving, {before:.4f}, within {r['tolerance']:g}" if before is not None
                  else f"same as before saving: {r['same_test_score']}")
        lines.append(f"reloaded: test {r['test_after_reload']:.4f} ({detail}), "
                     f"{r['embedding_dim']}-dimensional embeddings")
    for note in (summary.get("assessment") or {}).get("notes", []):
        lines.append(f"note: {note}")
    if summary.get("model"):
        lines.append(f"model: {summary['model']}")
    t = summary.get("timings", {})
    if t:
        lines.append("timings: " + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in t.items()))
    return "\n".join(lines)


__all__ = ["COMMON_DEFAULT", "SUGGESTIONS", "assess", "reload_tolerance", "report"]
