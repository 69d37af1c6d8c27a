"""Benchmark 6 (GPU only): training throughput with mixed precision at batch 256.

Pairs per second for all-MiniLM-L6-v2 on STS-B, and the share of the GPU's peak
dense tensor throughput that represents (model FLOPs: 6 x parameters x tokens per
step). Skipped, with a line saying so, when no CUDA GPU is present.
"""
from __future__ import annotations

import argparse
import statistics
import time

from common import record
from transformers import TrainerCallback

import helpers as hp

PEAK_TFLOPS = {  # dense bf16/fp16 tensor-core peaks from the vendors' data sheets
    "H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "T4": 65.0, "V100": 125.0,
}


class Tokens(TrainerCallback):
    def __init__(self):
        self.times, self._t = [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        import torch

        torch.cuda.synchronize()
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        import torch

        torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._t)


def main(argv=None) -> dict:
    import torch

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=256)
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        payload = {"title": "6. GPU throughput", "skipped": "no CUDA GPU on this machine; run `make bench` where one is."}
        record("gpu", payload)
        print("GPU benchmark skipped: no CUDA GPU on this machine.")
        return payload
    name = torch.cuda.get_device_name(0)
    task = hp.prepare_task(hp.TrainConfig(train_size=a.steps * a.batch, dev_size=64, test_size=64, scale="workshop"))
    model = hp.load_model(device="cuda")
    tokens_per_step = sum(len(model.tokenizer(list(task.train[c]), truncation=True, max_length=128)["input_ids"][i])
                          for c in ("sentence1", "sentence2") for i in range(a.batch))
    timer = Tokens()
    r = hp.train(hp.TrainConfig(max_steps=a.steps, batch_size=a.batch, evals_per_epoch=0, final_test=False,
                                device="cuda"), model=model, data=task, progress=False, callbacks=[timer])
    step_s = statistics.median(timer.times[3:] or timer.times)
    pairs_s = a.batch / step_s
    params = sum(p.numel() for p in model.parameters())
    tflops = 6 * params * tokens_per_step / step_s / 1e12
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    rows = [{"gpu": name, "batch": a.batch, "pairs_per_s": pairs_s, "s_per_step": step_s, "model_tflops": tflops,
             "share_of_peak": (tflops / peak) if peak else None, "peak_mb": r.peak_memory_mb}]
    payload = {"title": "6. GPU throughput (mixed precision)",
               "columns": ["gpu", "batch", "pairs_per_s", "s_per_step", "model_tflops", "share_of_peak", "peak_mb"],
               "rows": rows, "notes": "A 22.7M-parameter model with short sentences is far too small to fill a large "
                                      "GPU; the share of peak shows how much of it the workshop uses."}
    record("gpu", payload)
    print(rows[0])
    return payload


if __name__ == "__main__":
    main()
