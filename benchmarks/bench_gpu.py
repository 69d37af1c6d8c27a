"""Benchmark 6 (GPU only): training throughput and share of the GPU's peak; several small runs at once.

Times the whole ``trainer.train()`` (``TrainResult.wall_time``: tokenisation in the loader,
data loading, forward, backward, optimizer), not only the steps. Model FLOPs =
6 x non-embedding parameters x padded tokens, the tokens counted at the transformer's input
during the run (so padding to the longest pair in each batch is included). Pairs per second and
the share of the GPU's dense bf16/fp16 peak at batch 32, 128 and 256, in the precision
``pick_precision`` chooses. Then a grid's worth of small runs (batch 32), one after another
against all at once on the same GPU (separate processes): a 22.7M-parameter model cannot fill a
large GPU alone. Skipped, with a line saying so, when no CUDA GPU is present; ``--dry-run``
prepares everything on the CPU and stops before any CUDA work (``tools/gpu_check.sh --dry-run``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, record

import helpers as hp

PEAK_TFLOPS = {  # dense bf16/fp16 tensor-core peaks from the vendors' data sheets (no sparsity)
    "H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "T4": 65.0, "V100": 125.0,
}
BATCHES = {32: 120, 128: 40, 256: 20}  # batch -> optimizer steps (about 4-5k STS-B pairs each)
HERE = Path(__file__).resolve().parent


def non_embedding_params(model) -> int:
    """Parameters outside the token/position embeddings (what the 6 N D rule counts)."""
    return hp.models.count_parameters(model) - hp.models.count_parameters(hp.models.embeddings(model))


def model_flops(params: int, tokens: int) -> float:
    """Training FLOPs of ``tokens`` tokens through ``params`` non-embedding parameters: forward 2, backward 4."""
    return 6.0 * params * tokens


def peak_tflops(gpu_name: str, precision: str) -> float | None:
    """The GPU's dense bf16/fp16 peak in TFLOP/s (None for fp32 or an unlisted GPU)."""
    if precision not in ("bf16", "fp16"):
        return None
    return next((v for k, v in PEAK_TFLOPS.items() if k in gpu_name), None)


class TokenCounter:
    """Counts the padded tokens (and batches) that enter the transformer while it is active.

    It watches the input embedding table (every token id passes through it), not the backbone's
    ``forward``: sentence-transformers 6 calls the backbone in a way that skips module hooks on it,
    which left the first GPU check with a count of 0.
    """

    def __init__(self, model):
        self.module = hp.models.backbone(model).get_input_embeddings()
        self.tokens, self.batches, self._handle = 0, 0, None

    def _hook(self, module, args):
        ids = args[0] if args else None
        if ids is not None:
            self.tokens += int(ids.numel())  # shape only: no wait for the GPU
            self.batches += 1

    def __enter__(self):
        self._handle = self.module.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()


def sts_task(pairs: int):
    return hp.prepare_task(hp.TrainConfig(train_size=pairs, dev_size=64, test_size=64, scale="workshop"))


def one_run(task, batch: int, steps: int, gpu: str = "") -> dict:
    """One timed training run on CUDA: pairs/s over the whole trainer.train(), model TFLOP/s, share of peak."""
    model = hp.load_model(device="cuda")
    params = non_embedding_params(model)
    with TokenCounter(model) as count:
        r = hp.train(hp.TrainConfig(max_steps=steps, batch_size=batch, evals_per_epoch=0, final_test=False,
                                    device="cuda"), model=model, data=task, progress=False)
    tflops = model_flops(params, count.tokens) / r.wall_time / 1e12
    peak = peak_tflops(gpu, r.precision)
    return {"batch": batch, "steps": r.steps, "precision": r.precision, "wall_s": r.wall_time,
            "pairs_per_s": r.steps * batch / r.wall_time, "padded_tokens": count.tokens,
            "tokens_per_pair": count.tokens / max(1, r.steps * batch), "model_tflops": tflops,
            "share_of_peak": tflops / peak if peak else None, "peak_mb": r.peak_memory_mb}


def worker(batch: int, steps: int) -> None:
    """``--worker``: one run in its own process, one JSON line with its wall-clock window."""
    task = sts_task(batch * steps)
    start = time.time()
    row = one_run(task, batch, steps)
    print("RESULT " + json.dumps({**row, "start": start, "end": time.time()}), flush=True)


def launch(batch: int, steps: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / "bench_gpu.py"), "--worker", str(batch), str(steps)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"benchmark worker failed (exit {proc.returncode}):\n{out[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def concurrency(runs: int, batch: int, steps: int) -> dict:
    """``runs`` small runs one after another, then all at once (each in its own process, the same GPU)."""
    t0 = time.perf_counter()
    seq = [finish(launch(batch, steps)) for _ in range(runs)]
    seq_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    procs = [launch(batch, steps) for _ in range(runs)]
    con = [finish(p) for p in procs]
    con_wall = time.perf_counter() - t0
    seq_train = sum(r["wall_s"] for r in seq)
    con_train = max(r["end"] for r in con) - min(r["start"] for r in con)
    pairs = sum(r["steps"] * batch for r in con)
    return {"runs": runs, "batch": batch, "steps": steps,
            "one_after_another_s": seq_wall, "at_once_s": con_wall, "speedup_processes": seq_wall / con_wall,
            "one_after_another_train_s": seq_train, "at_once_train_window_s": con_train,
            "speedup_training": seq_train / con_train,
            "pairs_per_s_one_after_another": pairs / seq_train, "pairs_per_s_at_once": pairs / con_train}


def count_tokens_on_cpu(results: Path) -> dict:
    """``--count-tokens``: fill in the padded tokens of a GPU benchmark whose count failed (the first GPU check).

    Replays each row's run on the CPU: the same settings and seed give the same batches in the same order,
    so the same padded tokens. The replay freezes the bottom 5 layers to be quicker (freezing changes
    no batch). Then model TFLOP/s and the share of peak follow from the GPU's own wall-clock times.
    """
    data = json.loads(results.read_text())
    entry = data["benchmarks"]["gpu"] if "benchmarks" in data else data
    params = non_embedding_params(hp.load_model(device="cpu"))
    for row in entry["rows"]:
        model = hp.load_model(device="cpu")
        with TokenCounter(model) as count:
            r = hp.train(hp.TrainConfig(max_steps=row["steps"], batch_size=row["batch"], evals_per_epoch=0,
                                        final_test=False, device="cpu", precision="bf16", freeze_layers=5),
                         model=model, data=sts_task(row["batch"] * row["steps"]), progress=False)
        assert r.steps == row["steps"], (r.steps, row)
        tflops = model_flops(params, count.tokens) / row["wall_s"] / 1e12
        peak = peak_tflops(row["gpu"], row["precision"])
        row.update(padded_tokens=count.tokens, tokens_per_pair=count.tokens / (row["steps"] * row["batch"]),
                   model_tflops=tflops, share_of_peak=tflops / peak if peak else None,
                   tokens_counted="replayed on the CPU (same seed, same batches)")
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    return entry


def plan() -> dict:
    return {"batches": BATCHES, "warm_up": {"batch": 32, "steps": 10}, "concurrency": {"runs": 3, "batch": 32, "steps": 60}}


def main(argv=None) -> dict:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=2, help="timed runs per batch size (median reported)")
    p.add_argument("--runs", type=int, default=3, help="small runs for the at-once comparison (0: leave it out)")
    p.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    p.add_argument("--dry-run", action="store_true", help="prepare the data on the CPU and stop before any CUDA work")
    p.add_argument("--worker", nargs=2, type=int, metavar=("BATCH", "STEPS"), help=argparse.SUPPRESS)
    p.add_argument("--count-tokens", type=Path, metavar="RESULTS_JSON",
                   help="fill in the padded tokens of a GPU run's results.json by replaying its batches on the CPU, "
                        "then store that GPU entry here")
    a = p.parse_args(argv)
    if a.count_tokens:
        entry = count_tokens_on_cpu(a.count_tokens)
        machine_of_gpu = entry.pop("machine", None)
        record("gpu", entry)
        if machine_of_gpu:  # keep the GPU machine's description, not this CPU's
            data = json.loads(RESULTS.read_text())
            data["benchmarks"]["gpu"]["machine"] = machine_of_gpu
            RESULTS.write_text(json.dumps(data, indent=2, default=float) + "\n")
            from report import write_readme  # noqa: PLC0415

            write_readme(data)
        return entry
    if a.worker:
        worker(*a.worker)
        return {}
    if a.dry_run:
        tasks = {b: len(sts_task(b * s).train) for b, s in BATCHES.items()}
        payload = {"dry_run": True, "plan": plan(), "train_pairs": tasks}
        print("GPU benchmark dry run (no CUDA work):", json.dumps(payload))
        if a.out:
            a.out.write_text(json.dumps(payload, indent=1) + "\n")
        return payload
    if not torch.cuda.is_available():
        payload = {"title": "6. GPU throughput", "skipped": "no CUDA GPU on this machine; run `make bench` where one is."}
        record("gpu", payload)
        print("GPU benchmark skipped: no CUDA GPU on this machine.")
        return payload
    gpu = torch.cuda.get_device_name(0)
    one_run(sts_task(320), 32, 10, gpu)  # warm-up: CUDA context, kernels, allocator
    rows = []
    for batch, steps in BATCHES.items():
        task = sts_task(batch * steps)
        runs = [one_run(task, batch, steps, gpu) for _ in range(max(1, a.repeats))]
        med = {k: statistics.median(r[k] for r in runs) if isinstance(runs[0][k], float) else runs[0][k] for k in runs[0]}
        rows.append({"gpu": gpu, **med, "repeats": len(runs)})
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    conc = concurrency(a.runs, 32, 60) if a.runs > 0 else None
    if conc:
        print(conc, flush=True)
    payload = {"title": "6. GPU throughput (mixed precision, whole trainer.train())",
               "columns": ["gpu", "batch", "precision", "pairs_per_s", "wall_s", "tokens_per_pair", "model_tflops",
                           "share_of_peak", "peak_mb"],
               "rows": rows, "concurrency": conc,
               "notes": "Whole trainer.train() timed; FLOPs = 6 x non-embedding parameters x padded tokens. A "
                        "22.7M-parameter model with short sentences is far too small to fill a large GPU; the share "
                        "of peak shows how much of it one run uses, and 'concurrency' how much several runs at once "
                        "(a grid, a search) gain over one after another."}
    record("gpu", payload)
    if a.out:
        a.out.write_text(json.dumps(payload, indent=1, default=float) + "\n")
    return payload


if __name__ == "__main__":
    main()
