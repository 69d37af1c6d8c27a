"""The recipe's data profile (notebook 07, ``python -m helpers recipe``): made-up files with known duplicates,
leakage and long texts, and every warning ``recipe.profile_warnings`` can give."""
import math

import pandas as pd
import pytest

import helpers as hp
from helpers import recipe as R

TRUNCATION = ("{split}: {share} of the texts are longer than {n} tokens and get truncated; raise max_seq_length if "
              "the end of a text matters.")
LEAKAGE = "{split}: {n} rows also appear in the training data; their scores overstate how well the model generalises."
FEW = "train: only {n} rows; expect noisy results and keep the rate low."


def table(rows):
    """A made-up profile table: one dict per split with the columns :func:`helpers.recipe.profile` writes."""
    return pd.DataFrame(rows).set_index("split")


def row(split, rows, truncated, duplicates, in_train, limit=64):
    return {"split": split, "rows": rows, f"truncated at {limit}": truncated, "duplicate rows": duplicates,
            "rows also in train": in_train}


def test_each_warning_fires_exactly_on_its_condition():
    t = table([row("train", 120, 0.10, 2, 0), row("dev", 20, 0.05, 0, 3), row("test", 20, float("nan"), 1, 0)])
    assert hp.recipe.profile_warnings(t, 64) == [
        TRUNCATION.format(split="train", share="10%", n=64),  # above 5%: warned
        "train: 2 duplicate rows.",
        LEAKAGE.format(split="dev", n=3),  # dev at exactly 5% truncated: no warning; test unknown (nan): none
        "test: 1 duplicate rows.",
    ]
    few = table([row("train", 99, 0.0, 0, 0), row("dev", 10, 0.051, 0, 0)])
    assert hp.recipe.profile_warnings(few, 64) == [TRUNCATION.format(split="dev", share="5%", n=64), FEW.format(n=99)]
    clean = table([row("train", 100, 0.0, 0, 0), row("dev", 10, 0.0, 0, 0), row("test", 10, 0.0, 0, 0)])
    assert hp.recipe.profile_warnings(clean, 64) == []
    # the truncation column belongs to one max_seq_length: asked about another, there is nothing to read
    assert hp.recipe.profile_warnings(table([row("train", 100, 0.9, 0, 0)]), 128) == []


def words(texts):
    """A stand-in tokenizer: one token per word, so every length is known."""
    return {"input_ids": [t.split() for t in texts]}


def test_profile_counts_duplicates_leakage_and_truncation_in_made_up_files(tmp_path):
    long = " ".join(["word"] * 12)  # 12 tokens: truncated at 8
    train = [("a cat sits", "a cat is sitting", 0.9), ("a dog runs", "a dog is running", 0.8),
             ("a cat sits", "a cat is sitting", 0.7),  # the same pair again, another score: still a duplicate
             (long, "short one", 0.1)] + [(f"pair {i} left", f"pair {i} right", (i % 5) / 5) for i in range(6)]
    dev = [("a dog runs", "a dog is running", 0.8),  # also in train
           ("fresh pair here", "new text there", 0.3), ("other words", long, 0.5), ("x y", "y x", 0.2)]
    test = [("unseen left", "unseen right", 0.4), ("more left", "more right", 0.6), ("more left", "more right", 0.1),
            ("a cat sits", "a cat is sitting", 0.9)]  # one duplicate, one pair from train
    paths = {}
    for name, rows in (("train", train), ("dev", dev), ("test", test)):
        paths[name] = tmp_path / f"{name}.csv"
        pd.DataFrame(rows, columns=["sentence1", "sentence2", "score"]).to_csv(paths[name], index=False)
    task = hp.recipe.load_data(paths["train"], paths["dev"], paths["test"])
    p = hp.recipe.profile(task, words, max_seq_length=8)
    assert p["rows"].to_dict() == {"train": 10, "dev": 4, "test": 4}
    assert p["duplicate rows"].to_dict() == {"train": 1, "dev": 0, "test": 1}
    assert p["rows also in train"].to_dict() == {"train": 0, "dev": 1, "test": 1}
    assert p["truncated at 8"].to_dict() == {"train": 1 / 20, "dev": 1 / 8, "test": 0.0}  # texts, not rows
    assert p.loc["train", "tokens max"] == 12
    assert hp.recipe.profile_warnings(p, 8) == [
        "train: 1 duplicate rows.",  # 1 of 20 texts (5%) is truncated: not above the 5% threshold
        TRUNCATION.format(split="dev", share="12%", n=8), LEAKAGE.format(split="dev", n=1),
        "test: 1 duplicate rows.", LEAKAGE.format(split="test", n=1), FEW.format(n=10)]
    unknown = hp.recipe.profile(task, None, max_seq_length=8)  # no tokenizer: words counted, truncation unknown
    assert all(math.isnan(v) for v in unknown["truncated at 8"]) and unknown.loc["train", "words max"] == 12
    assert not any("truncated" in w for w in hp.recipe.profile_warnings(unknown, 8))


def _summary(final_dev, best_step, untuned_dev=0.80, default_dev=None):
    s = {"untuned": {"dev": untuned_dev, "test": 0.75},
         "final": {"dev": final_dev, "test": 0.76, "steps": 10, "stop_reason": "early stopping", "best_step": best_step}}
    if default_dev is not None:
        s["default"] = {"dev": default_dev, "test": 0.77, "steps": 10,
                        "config": dict(R.COMMON_DEFAULT)}
    return s


def test_assessment_says_when_the_untuned_model_was_kept_and_suggests_what_to_try():
    a = R.assess(_summary(0.80, best_step=0, default_dev=0.82))
    assert a["kept_untuned"] is True and a["beats_untuned"] is False and a["beats_default"] is False
    assert any("untuned model (step 0)" in n and "Try:" in n for n in a["notes"])
    assert any("did not beat the common default" in n and "--space narrow" in n for n in a["notes"])
    narrow = _summary(0.80, best_step=0, default_dev=0.82) | {"search": {"space": "narrow"}}
    lost = next(n for n in R.assess(narrow)["notes"] if "did not beat the common default" in n)
    assert "--space narrow" not in lost and "the common default itself" in lost  # it was tried: say what else
    report = R.report(_summary(0.80, best_step=0, default_dev=0.82) | {"assessment": a})
    assert "default: dev 0.8200" in report and report.count("note: ") == 2


def test_assessment_when_the_tuned_run_beats_both_and_when_no_default_was_trained():
    a = R.assess(_summary(0.84, best_step=12, default_dev=0.82))
    assert (a["kept_untuned"], a["beats_untuned"], a["beats_default"]) == (False, True, True)
    assert "beat the common default on the validation set by +0.0200" in a["notes"][0]
    # ... but the default scored higher on test (0.77 against 0.76): the report says so, and what to try
    assert len(a["notes"]) == 2 and "On the test split it did not (0.7600 against 0.7700)" in a["notes"][1]
    assert "--dev" in a["notes"][1]
    s = _summary(0.84, best_step=12, default_dev=0.82)
    s["final"]["test"] = 0.78  # better on both splits: one note
    assert len(R.assess(s)["notes"]) == 1
    a = R.assess(_summary(0.79, best_step=12))  # trained, but below the untuned model; no default trained
    assert a["beats_untuned"] is False and a["beats_default"] is None
    assert len(a["notes"]) == 1 and "not above the untuned model's 0.8000" in a["notes"][0]
    assert R.assess({})["notes"] == []


def test_reload_tolerance_follows_the_precision():
    assert R.reload_tolerance("fp32") < 1e-5 <= 1e-4 < R.reload_tolerance("bf16")
    assert R.reload_tolerance("fp16") == R.reload_tolerance("bf16")
