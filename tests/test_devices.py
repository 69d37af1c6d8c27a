"""The runner's GPU choices (helpers.devices), checked without a GPU: CUDA's answers are mocked.

One GPU per process (pinned in setup(), else refused before training), the trainer's batch check,
search workers spread over the GPUs, and the choices that keep a GPU busy (loader workers, logging
every few steps with a finite-loss guard that never waits, best weights in memory), each a function
of the device; the last two also run for real on this CPU with the CUDA choices forced.
"""
import math
import os
import sys

import pytest
import torch
from transformers import TrainerCallback

from helpers import config, devices as D, memory as Mem, workers as W
from helpers import training as T
from helpers.evaluation import score
from helpers.training import TrainConfig, train


@pytest.fixture
def no_visible_env(monkeypatch):
    """No CUDA_VISIBLE_DEVICES and no torchrun; whatever a test sets is undone afterwards."""
    for name in ("CUDA_VISIBLE_DEVICES", "WORLD_SIZE"):
        monkeypatch.setenv(name, "")  # remembers the original state, so a value set by the code is removed after
        monkeypatch.delenv(name)


# --------------------------------------------------------------------------- one GPU per process


def test_pin_one_gpu_keeps_only_the_asked_gpu_visible(monkeypatch, no_visible_env):
    monkeypatch.setattr(D, "gpu_count", lambda: 4)
    monkeypatch.setattr(D, "_runtime_gpu_count", lambda: 1 if os.environ.get("CUDA_VISIBLE_DEVICES") else 4)
    assert D.pin_one_gpu("cuda:2") == "cuda" and os.environ["CUDA_VISIBLE_DEVICES"] == "2"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6,7")  # the parent's own list: its second entry is GPU 5
    assert D.pin_one_gpu("cuda:1") == "cuda" and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert D.pin_one_gpu(None) == "cuda" and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert D.pin_one_gpu("cpu") == "cpu" and D.pin_one_gpu("mps") == "mps"


def test_pin_one_gpu_leaves_the_environment_when_cuda_already_started(monkeypatch, no_visible_env):
    monkeypatch.setattr(D, "gpu_count", lambda: 2)
    monkeypatch.setattr(D, "_runtime_gpu_count", lambda: 2)  # CUDA read the variable before: the pin has no effect
    assert D.pin_one_gpu("cuda") == "cuda" and "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setattr(D, "gpu_count", lambda: 1)
    assert D.pin_one_gpu("cuda:0") == "cuda:0" and "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setattr(D, "gpu_count", lambda: 4)
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun: every process already has its GPU
    assert D.pin_one_gpu("cuda") == "cuda" and "CUDA_VISIBLE_DEVICES" not in os.environ


def test_setup_pins_one_gpu_before_choosing_the_precision(monkeypatch, no_visible_env):
    monkeypatch.setenv("WORKSHOP_DEVICE", "cuda:1")
    monkeypatch.delenv(config.PRECISION_ENV, raising=False)
    monkeypatch.setattr(D, "gpu_count", lambda: 2)
    monkeypatch.setattr(D, "_runtime_gpu_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(config, "cuda_has_fast_bf16", lambda: True)
    monkeypatch.setattr(config, "seed_everything", lambda seed: None)
    cfg = config.setup("smoke")
    assert (cfg.device, cfg.precision) == ("cuda", "bf16")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1" and os.environ["WORKSHOP_DEVICE"] == "cuda"


def test_several_gpus_in_one_process_are_refused_with_the_way_out(monkeypatch, no_visible_env):
    monkeypatch.setattr(D, "gpu_count", lambda: 2)
    with pytest.raises(ValueError, match=r"2 GPUs are visible.*CUDA_VISIBLE_DEVICES=0.*torchrun --nproc_per_node 2"):
        D.check_one_gpu("cuda")
    D.check_one_gpu("cpu")
    monkeypatch.setattr(D, "gpu_count", lambda: 1)
    D.check_one_gpu("cuda")
    D.check_one_gpu("cuda:0")
    with pytest.raises(ValueError, match="sees 1 GPU"):
        D.check_one_gpu("cuda:1")
    monkeypatch.setattr(D, "gpu_count", lambda: 4)
    monkeypatch.setenv("WORLD_SIZE", "4")
    D.check_one_gpu("cuda:3")  # torchrun: DistributedDataParallel, one GPU per process


def test_train_refuses_several_gpus_before_anything_loads(monkeypatch, no_visible_env):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(config, "cuda_has_fast_bf16", lambda: True)
    monkeypatch.setattr(T, "load_model", lambda *a, **k: pytest.fail("the model loaded before the GPU check"))
    with pytest.raises(ValueError, match="2 GPUs are visible"):
        train(TrainConfig(device="cuda", max_steps=1), progress=False)


@pytest.mark.parametrize("gpus", [1, 2, 3])
def test_trainer_batch_check_catches_data_parallel(monkeypatch, gpus):
    """The library's own arguments: with n GPUs in one process the trainer's batch is n x the configured one."""
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    args = SentenceTransformerTrainingArguments(output_dir="unused", per_device_train_batch_size=16, report_to="none")
    assert args.n_gpu == gpus and args.train_batch_size == 16 * gpus
    if gpus == 1:
        D.check_trainer_batch(args, 16)
    else:
        with pytest.raises(RuntimeError, match=f"{16 * gpus} examples per step instead of batch_size=16"):
            D.check_trainer_batch(args, 16)


# --------------------------------------------------------------------------- search workers


def test_worker_k_sees_gpu_k_mod_n():
    envs = [W.worker_env({}, k, 4, 2, cpu_count=8) for k in range(4)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0", "1"]
    assert all(e["OMP_NUM_THREADS"] == "2" for e in envs)
    parent = {"CUDA_VISIBLE_DEVICES": "4,6", "OMP_NUM_THREADS": "3"}
    assert [W.worker_env(parent, k, 3, 2)["CUDA_VISIBLE_DEVICES"] for k in range(3)] == ["4", "6", "4"]
    assert W.worker_env(parent, 0, 3, 2)["OMP_NUM_THREADS"] == "3"
    assert "CUDA_VISIBLE_DEVICES" not in W.worker_env({}, 1, 2, 0)  # no GPU: nothing to choose


def test_run_workers_gives_each_worker_its_gpu(tmp_path, monkeypatch, capsys):
    from helpers import cli

    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho \"GPU=$CUDA_VISIBLE_DEVICES\"\nexit 3\n")  # reports its GPU, then fails
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    monkeypatch.setattr(W, "gpu_count", lambda: 2)  # helpers.workers starts the workers
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    out = tmp_path / "out"
    cli.main(["search", "--workers", "3", "--trials", "3", "--scale", "smoke", "--max-seq-length", "32",
              "--no-progress", "--output", str(out)])
    capsys.readouterr()
    logs = [(out / "workers" / f"worker-{k}.log").read_text().strip() for k in range(3)]
    assert logs == ["GPU=0", "GPU=1", "GPU=0"]


# --------------------------------------------------------------------------- keeping the GPU busy


def test_loader_workers_only_on_cuda():
    assert D.loader_settings("cpu") == {"dataloader_num_workers": 0}
    assert D.loader_settings("mps") == {"dataloader_num_workers": 0}
    assert D.loader_settings("cuda", cpu_count=16, start_method="fork") == {
        "dataloader_num_workers": 4, "dataloader_persistent_workers": True, "dataloader_pin_memory": True}
    assert D.loader_settings("cuda:0", cpu_count=2, start_method="fork")["dataloader_num_workers"] == 1
    spawn = D.loader_settings("cuda", cpu_count=16, start_method="spawn")  # workers would pickle the model
    assert spawn["dataloader_num_workers"] == 0 and not spawn["dataloader_persistent_workers"]


def test_logging_every_step_on_cpu_every_few_on_cuda():
    assert D.logging_steps("cpu", 10_000) == 1 and D.logging_steps("mps", 10_000) == 1
    assert D.logging_steps("cuda", 10_000) == D.CUDA_LOG_EVERY
    assert D.logging_steps("cuda", 40) == 2 and D.logging_steps("cuda", 10) == 1
    assert D.sync_free_guard("cuda:0") and not D.sync_free_guard("cpu")


def test_nonfinite_guard_keeps_nan_out_of_the_gradients():
    layer = torch.nn.Linear(3, 2)

    def grads(loss_value):
        layer.zero_grad(set_to_none=True)
        layer(torch.ones(1, 3)).sum().backward()
        return torch.tensor(loss_value)

    D.drop_nonfinite_grads(layer, None, grads(float("nan")), wait=False)
    assert all(p.grad is not None and torch.count_nonzero(p.grad) == 0 for p in layer.parameters())
    D.drop_nonfinite_grads(layer, None, grads(1.0), wait=False)
    assert all(torch.count_nonzero(p.grad) > 0 for p in layer.parameters())
    D.drop_nonfinite_grads(layer, None, grads(float("inf")), wait=True)  # the CPU path: gradients dropped
    assert all(p.grad is None for p in layer.parameters())


def test_best_weights_place_follows_device_and_room():
    mb = 2**20
    assert D.best_weights_place("cpu", 90 * mb) == "disk" and D.best_weights_place("mps", 90 * mb) == "disk"
    assert D.best_weights_place("cuda", 90 * mb, free_device_bytes=10_000 * mb, free_host_bytes=0) == "device"
    assert D.best_weights_place("cuda", 90 * mb, free_device_bytes=500 * mb, free_host_bytes=8_000 * mb) == "host"
    assert D.best_weights_place("cuda", 90 * mb, free_device_bytes=500 * mb, free_host_bytes=500 * mb) == "disk"
    assert D.best_weights_place("cuda", 90 * mb, free_device_bytes=10_000 * mb, world=2) == "disk"  # torchrun


def test_best_weights_keeps_the_first_best_evaluation():
    layer = torch.nn.Linear(2, 1)
    keeper = D.BestWeights(layer, "eval_m", greater_is_better=True, place="host")

    class State:
        global_step = 0

    for step, value in [(1, 0.5), (2, 0.7), (3, 0.7), (4, 0.6)]:
        State.global_step = step
        with torch.no_grad():
            layer.weight.fill_(step)
        keeper.on_evaluate(None, State, None, metrics={"eval_m": value})
    assert keeper.step == 2 and not keeper.restore(layer, 3)
    assert keeper.restore(layer, 2) and torch.all(layer.weight == 2)


class PoisonStep(TrainerCallback):
    """Makes one optimizer step's loss NaN (its embeddings are multiplied by NaN)."""

    def __init__(self, step: int):
        self.step, self.model, self.handle = step, None, None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model = model

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            def poison(module, inputs, output):
                return {**output, "token_embeddings": output["token_embeddings"] * float("nan")}
            self.handle = self.model[0].register_forward_hook(poison)

    def on_step_end(self, args, state, control, **kwargs):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


@pytest.fixture
def cuda_choices(monkeypatch):
    """The runner's CUDA choices, forced on this CPU: a loader worker, a log every 3 steps, a guard that never
    waits, the best weights in host memory."""
    monkeypatch.setattr(T, "loader_settings", lambda device: {"dataloader_num_workers": 1,
                                                              "dataloader_persistent_workers": True})
    monkeypatch.setattr(T, "logging_steps", lambda device, total: 3)
    monkeypatch.setattr(T, "sync_free_guard", lambda device: True)
    monkeypatch.setattr(T, "best_weights_place", lambda device, n, world=1: "host")


@pytest.mark.slow
def test_a_nan_step_stops_the_run_within_one_logging_window(sts_small, fast, cuda_choices):
    r = train(TrainConfig(epochs=3, schedule="constant", warmup_fraction=0.0), data=sts_small,
              callbacks=[PoisonStep(2)], **fast)
    assert r.stop_reason.startswith("diverged") and "NaN" in r.stop_reason
    assert 2 <= r.steps <= 2 + 3
    assert all(torch.isfinite(p).all() for p in r.model.parameters())  # the NaN step never reached the weights
    assert [e["step"] for e in r.train_loss] == [3] and math.isnan(r.train_loss[0]["loss"])


@pytest.mark.slow
def test_early_stopping_restores_the_best_weights_kept_in_memory(sts_small, fast, cuda_choices, tmp_path, monkeypatch):
    import tempfile

    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    saves = []

    class Saves(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            saves.append(state.global_step)

    r = train(TrainConfig(early_stopping_patience=1, learning_rate=1e-4, epochs=3, evals_per_epoch=2,
                          schedule="constant", warmup_fraction=0.0), data=sts_small, callbacks=[Saves()], **fast)
    assert saves == []  # no checkpoint written: the best weights stayed in memory
    best = max(e["metric"] for e in r.evals)
    assert r.best_step == max(r.evals, key=lambda e: e["metric"])["step"]
    assert score(r.model, sts_small.dev_evaluator) == pytest.approx(best, abs=1e-6)
    assert list(private.iterdir()) == []


# --------------------------------------------------------------------------- memory and scale


def test_memory_source_and_mps_driver_figure(monkeypatch):
    assert Mem.memory_source("cuda:0") == Mem.CUDA_ALLOCATOR and Mem.memory_source("cpu") == Mem.PROCESS_RSS
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 300 * 2**20, raising=False)
    assert Mem.memory_source("mps") == Mem.MPS_DRIVER
    with Mem.PeakMemory("mps", interval=0.001) as m:
        pass
    assert m.source == Mem.MPS_DRIVER and m.peak_mb == pytest.approx(300)
    monkeypatch.delattr(torch.mps, "driver_allocated_memory")
    assert Mem.memory_source("mps") == Mem.PROCESS_RSS  # an older torch: the figure is the process's RSS


def test_full_scale_trains_every_layer_in_the_sweeps():
    assert config.get_scale("full").sweep_freeze_layers == 0
    assert config.get_scale("workshop").sweep_freeze_layers == config.get_scale("smoke").sweep_freeze_layers == 4
