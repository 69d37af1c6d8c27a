"""Benchmark 2: does freezing pay? Steps per second and peak memory with the bottom frozen.

Full training against the embeddings plus k of the 6 layers frozen (k = 0..6).
Goal on CPU: embeddings plus 4 layers frozen at least 1.8x faster than full training.
"""
from __future__ import annotations

import argparse

from common import alternate, medians, record, status

import helpers as hp


def run(task, k: int | None, steps: int, batch: int) -> dict:
    cfg = hp.TrainConfig(max_steps=steps, batch_size=batch, evals_per_epoch=0, final_test=False, device="cpu")
    if k is not None:
        cfg = cfg.replace(freeze_layers=k, freeze_embeddings=True)
    r = hp.train(cfg, data=task, progress=False)
    return {"steps_per_s": r.steps / r.wall_time, "peak_rss_mb": r.peak_memory_mb, "added_mb": r.memory_delta_mb,
            "trainable_params": r.trainable_params}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)
    task = hp.prepare_task(hp.TrainConfig(train_size=a.steps * a.batch, dev_size=16, test_size=16, scale="workshop"))
    sides = {"full training": lambda: run(task, None, a.steps, a.batch)}
    for k in range(0, 6):
        sides[f"embeddings + {k} layers frozen"] = (lambda k=k: run(task, k, a.steps, a.batch))
    med = {k: medians(v) for k, v in alternate(sides, a.repeats, "freezing").items()}
    base = med["full training"]["steps_per_s"]
    rows = [{"setting": k, **v, "speed_vs_full": v["steps_per_s"] / base} for k, v in med.items()]
    try:
        hp.train(hp.TrainConfig(max_steps=1, freeze_layers=6, evals_per_epoch=0, final_test=False), data=task,
                 progress=False)
        k6 = "trained (unexpected)"
    except hp.ConfigError as exc:
        k6 = f"refused before training: {str(exc).splitlines()[0][:160]}"
    rows.append({"setting": "embeddings + 6 layers frozen", "speed_vs_full": None, "trainable_params": 0})
    r4 = med["embeddings + 4 layers frozen"]["steps_per_s"] / base
    payload = {
        "title": "2. Freezing pays: speed and memory with the bottom frozen",
        "columns": ["setting", "steps_per_s", "speed_vs_full", "peak_rss_mb", "added_mb", "trainable_params", "repeats"],
        "rows": rows, "figures": {"speedup_k4": r4, "k6": k6},
        "goals": [{"goal": "embeddings + 4 layers frozen at least 1.8x faster than full training (CPU)",
                   "measured": f"{r4:.2f}x", "status": status(r4 >= 1.8)}],
        "notes": f"k = 6 (everything frozen): {k6}. Peak memory is the process's resident set (CPU); "
                 "`added_mb` is what training added on top of the loaded model and data.",
    }
    record("freezing", payload)
    for r in rows:
        print(f"{r['setting']:32s} {r.get('steps_per_s') or 0:6.2f} steps/s  x{r['speed_vs_full'] or 0:.2f}")
    return payload


if __name__ == "__main__":
    main()
