"""Benchmark 3: which CPU training-speed levers help on this machine?

Against the helpers' CPU default (pad to the longest in the batch, 128-token limit,
every core, fp32), one lever at a time: pad every batch to a fixed length, a 64-token
limit, one thread, and ``torch.compile``; plus how much padding grouping by length
could remove, and the token-limit question on code, where inputs are long. Figure:
median seconds per optimizer step (the first two steps, which include compilation,
left out).

Reduced precision: bf16 autocast (the trainer's ``bf16=True`` on a CPU, what
``pick_precision`` chooses on CPUs with AMX/AVX512-BF16) next to fp32, for training
(seconds per optimizer step) and encoding (seconds per batch of ``model.encode``, the
evaluations), at batch 16 and 64; each bf16 row's ratio is against the fp32 row of the
same kind and batch. ``--quick`` is a smoke run (3 steps, one repeat) that checks the
script; ``--precision-only`` runs only these rows; ``--no-record`` leaves results.json alone.
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import time

from common import alternate, medians, record
from transformers import TrainerCallback

import helpers as hp


class StepTimes(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t)


def run(task, steps: int, batch: int, max_len: int = 128, fixed_padding: bool = False, threads: int | None = None,
        compile_model: bool = False, task_name: str = "stsb", precision: str = "fp32") -> dict:
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model = hp.load_model(device="cpu", max_seq_length=max_len)
        if fixed_padding:
            model[0].processing_kwargs = {"text": {"padding": "max_length", "max_length": max_len}}
        if compile_model:
            model[0].auto_model = torch.compile(model[0].auto_model, dynamic=True)
        timer = StepTimes()
        hp.train(hp.TrainConfig(task=task_name, max_steps=steps, batch_size=batch, max_seq_length=max_len,
                                evals_per_epoch=0, final_test=False, device="cpu", precision=precision),
                 model=model, data=task, progress=False, callbacks=[timer])
        steady = timer.times[2:] or timer.times
        return {"s_per_step": statistics.median(steady), "first_step_s": timer.times[0]}
    finally:
        torch.set_num_threads(before)


def encode(texts: list[str], batch: int, precision: str = "fp32") -> dict:
    """Seconds per batch of ``model.encode`` (what every evaluation does), in fp32 or under bf16 autocast."""
    import contextlib

    import torch

    model = hp.load_model(device="cpu")
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        model.encode(texts[:batch], batch_size=batch)  # warm-up
        start = time.perf_counter()
        model.encode(texts, batch_size=batch)
        wall = time.perf_counter() - start
    return {"s_per_step": wall / math.ceil(len(texts) / batch), "sentences_per_s": len(texts) / wall}


def padding_share(texts: list[str], tokenizer, batch: int, grouped: bool, seed: int = 0) -> float:
    """Share of the tokens in padded batches that are padding (random batches, or batches of similar length)."""
    lengths = [len(t) for t in tokenizer(texts, truncation=True, max_length=128)["input_ids"]]
    idx = list(range(len(lengths)))
    random.Random(seed).shuffle(idx)
    if grouped:
        idx.sort(key=lambda i: lengths[i])
    real = padded = 0
    for s in range(0, len(idx), batch):
        chunk = [lengths[i] for i in idx[s:s + batch]]
        real += sum(chunk)
        padded += max(chunk) * len(chunk)
    return 1 - real / padded


def precision_sides(steps: int, texts: list[str]) -> dict:
    """bf16 autocast next to fp32: training and encoding at batch 16 and 64 (side name -> (baseline, function))."""
    sides = {}
    for b in (16, 64):
        task = hp.prepare_task(hp.TrainConfig(train_size=steps * b, dev_size=16, test_size=16, scale="workshop"))
        fp32, bf16 = f"STS-B training, batch {b}: fp32", f"STS-B training, batch {b}: bf16 autocast"
        sides[fp32] = (fp32, lambda task=task, b=b: run(task, steps, b, precision="fp32"))
        sides[bf16] = (fp32, lambda task=task, b=b: run(task, steps, b, precision="bf16"))
        e32, e16 = f"encoding, batch {b}: fp32", f"encoding, batch {b}: bf16 autocast"
        sides[e32] = (e32, lambda b=b: encode(texts, b, "fp32"))
        sides[e16] = (e32, lambda b=b: encode(texts, b, "bf16"))
    return sides


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out (it takes minutes to compile)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 steps, one repeat, no compile, 64 sentences")
    p.add_argument("--precision-only", action="store_true", help="only the fp32 / bf16 rows")
    p.add_argument("--no-record", action="store_true", help="print the figures without writing results.json")
    a = p.parse_args(argv)
    if a.quick:
        a.steps, a.repeats, a.no_compile = 3, 1, True
    S, B = a.steps, a.batch
    default = "STS-B: default (longest, 128 tokens, all cores)"
    sentences = list(hp.prepare_task(hp.TrainConfig(train_size="all", dev_size=16, test_size=16,
                                                    scale="workshop")).train["sentence1"])
    sides: dict = {}
    if not a.precision_only:
        sts = hp.prepare_task(hp.TrainConfig(train_size=S * B, dev_size=16, test_size=16, scale="workshop"))
        code = hp.prepare_task(hp.TrainConfig(task="codesearch", train_size=S * B, dev_size=16, test_size=16,
                                              scale="workshop"))
        code_default = "code: 128-token limit"
        levers = {
            default: lambda: run(sts, S, B),
            "STS-B: fixed padding to 128": lambda: run(sts, S, B, fixed_padding=True),
            "STS-B: 64-token limit": lambda: run(sts, S, B, max_len=64),
            "STS-B: one thread": lambda: run(sts, S, B, threads=1),
            code_default: lambda: run(code, S, B, task_name="codesearch"),
            "code: 64-token limit": lambda: run(code, S, B, max_len=64, task_name="codesearch"),
            "code: 256-token limit": lambda: run(code, S, B, max_len=256, task_name="codesearch"),
        }
        if not a.no_compile:
            levers["STS-B: torch.compile"] = lambda: run(sts, S, B, compile_model=True)
        sides.update({k: (code_default if k.startswith("code") else default, f) for k, f in levers.items()})
    sides.update(precision_sides(S, sentences[:64] if a.quick else sentences[:1024]))
    results = {}
    for k, v in alternate({k: f for k, (_, f) in sides.items()}, a.repeats, "CPU levers").items():
        results[k] = medians(v)
    rows = [{"setting": k, **v, "baseline": sides[k][0],
             "speed_vs_default": results[sides[k][0]]["s_per_step"] / v["s_per_step"]} for k, v in results.items()]
    bf16 = {r["setting"]: round(r["speed_vs_default"], 2) for r in rows if "bf16" in r["setting"]}
    if a.precision_only:
        payload = {"title": "3. CPU training-speed levers (precision rows only)", "rows": rows, "bf16_speedup": bf16,
                   "columns": ["setting", "s_per_step", "speed_vs_default", "sentences_per_s", "repeats"]}
        for r in rows:
            print(f"{r['setting']:48s} {r['s_per_step']:7.3f} s/step  x{r['speed_vs_default']:.2f}")
        if not a.no_record:
            record("cpu_levers_precision", payload)
        return payload
    model = hp.load_model(device="cpu")
    texts = list(hp.prepare_task(hp.TrainConfig(train_size="all", dev_size=16, test_size=16, scale="workshop")).train["sentence1"])
    lengths = [len(t) for t in model.tokenizer(texts, truncation=False)["input_ids"]]
    code_texts = list(code.train["positive"]) if "positive" in code.train.column_names else []
    code_lengths = [len(t) for t in model.tokenizer(code_texts, truncation=False)["input_ids"]] if code_texts else []
    figures = {
        "padding_share_random_batches": padding_share(texts, model.tokenizer, B, grouped=False),
        "padding_share_grouped_by_length": padding_share(texts, model.tokenizer, B, grouped=True),
        "stsb_share_over_64_tokens": sum(n > 64 for n in lengths) / len(lengths),
        "code_share_over_64_tokens": (sum(n > 64 for n in code_lengths) / len(code_lengths)) if code_lengths else None,
        "code_share_over_128_tokens": (sum(n > 128 for n in code_lengths) / len(code_lengths)) if code_lengths else None,
    }
    winners = [r["setting"] for r in rows if r["speed_vs_default"] > 1.05 and r["setting"].startswith("STS-B:")]
    payload = {
        "title": "3. CPU training-speed levers",
        "columns": ["setting", "s_per_step", "speed_vs_default", "baseline", "sentences_per_s", "first_step_s",
                    "repeats"], "rows": rows,
        "figures": figures, "winners": winners, "bf16_speedup": bf16,
        "notes": (f"Padding is {figures['padding_share_random_batches']:.0%} of the tokens in random STS-B batches of "
                  f"{B} and {figures['padding_share_grouped_by_length']:.0%} when batches are grouped by length, so "
                  "grouping could save at most that difference of the compute; the trainer's samplers for Sentence "
                  "Transformers do not group by length, and grouped batches are not random (they change what the "
                  f"model sees together). {figures['stsb_share_over_64_tokens']:.1%} of STS-B sentences exceed 64 "
                  "tokens, so a 64-token limit barely changes STS-B; on code "
                  f"{(figures['code_share_over_64_tokens'] or 0):.0%} of the snippets exceed 64 tokens, so the limit "
                  "trades quality for speed there (the notebooks use 64 for code search to fit the CPU budget). "
                  "Faster than the default by more than 5% on STS-B: " + (", ".join(winners) or "none") + ". "
                  "bf16 autocast against fp32 (speed_vs_default of each bf16 row, against its fp32 row): "
                  + ", ".join(f"{k} x{v}" for k, v in bf16.items()) + "."),
    }
    if not a.no_record:
        record("cpu_levers", payload)
    for r in rows:
        print(f"{r['setting']:48s} {r['s_per_step']:6.2f} s/step  x{r['speed_vs_default']:.2f}")
    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in figures.items()})
    return payload


if __name__ == "__main__":
    main()
