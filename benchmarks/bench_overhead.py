"""Benchmark 1: the helpers' runner against a plain SentenceTransformerTrainer script.

Same model, data, seed, batch, rate and linear warm-up schedule; no evaluation
during training. Figures: optimizer steps per second of ``trainer.train()`` and the
dev Spearman after training. Goal: the runner at most 2% slower, same metric.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time

from common import alternate, medians, record, status

import helpers as hp
from helpers.evaluation import score
from helpers.schedules import warmup_steps


def plain_run(task, steps: int, batch: int, lr: float, seed: int) -> dict:
    """What a learner would write by hand with the library (no helpers)."""
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    hp.seed_everything(seed)
    model = hp.load_model(device="cpu")
    out = tempfile.mkdtemp(prefix="bench-plain-")
    try:
        args = SentenceTransformerTrainingArguments(
            output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr,
            warmup_steps=warmup_steps(steps, 0.1), lr_scheduler_type="linear", weight_decay=0.01,
            seed=seed, data_seed=seed, report_to="none", save_strategy="no", disable_tqdm=True, use_cpu=True,
            dataloader_num_workers=0)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=task.train, loss=CoSENTLoss(model))
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)
    model.eval()
    return {"steps_per_s": steps / wall, "wall_s": wall, "dev_spearman": score(model, task.dev_evaluator)}


def runner_run(task, steps: int, batch: int, lr: float, seed: int) -> dict:
    r = hp.train(hp.TrainConfig(max_steps=steps, batch_size=batch, learning_rate=lr, seed=seed, evals_per_epoch=0,
                                final_test=False, device="cpu"), data=task, progress=False)
    return {"steps_per_s": r.steps / r.wall_time, "wall_s": r.wall_time, "dev_spearman": score(r.model, task.dev_evaluator)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    task = hp.prepare_task(hp.TrainConfig(train_size=a.steps * a.batch, dev_size=200, test_size=16, scale="workshop"))
    runs = alternate({"plain trainer": lambda: plain_run(task, a.steps, a.batch, 2e-5, 0),
                      "helpers runner": lambda: runner_run(task, a.steps, a.batch, 2e-5, 0)}, a.repeats, "overhead")
    med = {k: medians(v) for k, v in runs.items()}
    slower = 1 - med["helpers runner"]["steps_per_s"] / med["plain trainer"]["steps_per_s"]
    dmetric = abs(med["helpers runner"]["dev_spearman"] - med["plain trainer"]["dev_spearman"])
    rows = [{"side": k, **v} for k, v in med.items()]
    payload = {
        "title": "1. Overhead of the helpers' runner",
        "columns": ["side", "steps_per_s", "wall_s", "dev_spearman", "repeats"], "rows": rows,
        "figures": {"runner_slower_fraction": slower, "metric_difference": dmetric, "steps": a.steps, "batch": a.batch},
        "goals": [{"goal": "runner at most 2% slower in steps/s", "measured": f"{slower:+.1%}", "status": status(slower <= 0.02)},
                  {"goal": "same final metric", "measured": f"|dev Spearman difference| = {dmetric:.5f}",
                   "status": status(dmetric < 1e-3)}],
        "notes": "The runner logs the rate and loss at every step and records evaluations; the plain script logs "
                 "every 500 steps. Both time `trainer.train()` only (model loading excluded).",
    }
    record("overhead", payload)
    print(f"runner {slower:+.1%} slower than the plain trainer; dev Spearman difference {dmetric:.5f}")
    return payload


if __name__ == "__main__":
    main()
