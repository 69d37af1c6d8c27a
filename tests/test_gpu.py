"""On a real CUDA GPU (``pytest -m gpu``, run by ``tools/gpu_check.sh``); skipped without one.

The precision chosen on the real device, one run at ``WORKSHOP_SCALE=full`` on a subset with the
GPU path's choices (loader workers, few syncs, best weights in memory, the trainer's batch), and
the same numbers from the same seed on CUDA.
"""
import math
import os

import pytest
import torch
from transformers import TrainerCallback

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS; read when CUDA starts

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (tools/gpu_check.sh)")]


def test_precision_on_the_real_gpu():
    from helpers import config

    major, _ = torch.cuda.get_device_capability()
    expected = "bf16" if major >= 8 else "fp16"  # Ampere and newer do bf16 in hardware; T4/V100 only emulate it
    assert config.pick_precision("cuda", "auto") == expected
    assert config.cuda_has_fast_bf16() is (major >= 8)
    dtype = torch.bfloat16 if expected == "bf16" else torch.float16
    a = torch.randn(64, 64, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        out = a @ a
    assert out.dtype == dtype and torch.isfinite(out).all()


@pytest.mark.slow
def test_one_full_scale_run_on_a_subset():
    from helpers import devices as D
    from helpers.training import TrainConfig, train

    saves = []

    class Saves(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            saves.append(state.global_step)

        def on_train_begin(self, args, state, control, **kwargs):
            self.args = args

    seen = Saves()
    r = train(TrainConfig(scale="full", train_size=2048, dev_size=300, test_size=300, epochs=1,
                          early_stopping_patience=3, device="cuda"), callbacks=[seen], progress=False)
    assert r.device.startswith("cuda") and r.precision in ("bf16", "fp16")
    assert r.config["batch_size"] == 32 and r.config["max_seq_length"] == 256 and r.config["freeze_layers"] == 0
    assert r.trainable_params == r.total_params  # full scale trains every layer
    assert seen.args.train_batch_size == 32 and seen.args.logging_steps == D.logging_steps("cuda", r.steps)
    assert seen.args.dataloader_num_workers == D.loader_settings("cuda")["dataloader_num_workers"]
    assert saves == []  # the best weights stayed in memory
    assert r.steps == math.ceil(2048 / 32) or r.stop_reason == "early stopping"
    assert math.isfinite(r.test_metric) and r.test_metric > 0.7 and r.dev_metric >= r.dev_metric_start - 0.02
    assert r.peak_memory_mb > 0 and all(p.device.type == "cuda" for p in r.model.parameters())


@pytest.mark.slow
def test_same_seed_same_numbers_on_cuda():
    """With deterministic kernels the same seed gives identical numbers; without, the same to rounding."""
    from helpers.training import TrainConfig, train

    cfg = TrainConfig(scale="smoke", train_size=256, dev_size=64, test_size=64, max_steps=16, batch_size=16,
                      evals_per_epoch=1, seed=3, device="cuda")
    free = [train(cfg, progress=False) for _ in range(2)]
    assert [e["loss"] for e in free[0].train_loss] == pytest.approx([e["loss"] for e in free[1].train_loss], rel=1e-2)
    assert free[0].test_metric == pytest.approx(free[1].test_metric, abs=2e-3)
    torch.use_deterministic_algorithms(True)
    try:
        exact = [train(cfg, progress=False) for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(False)
    assert [e["loss"] for e in exact[0].train_loss] == [e["loss"] for e in exact[1].train_loss]
    assert exact[0].evals == exact[1].evals and exact[0].test_metric == exact[1].test_metric
