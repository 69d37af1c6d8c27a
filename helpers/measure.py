"""Measuring a run: peak memory (CUDA allocator, Apple MPS driver, CPU RSS), activation memory, training-only time.

Core layer: imports nothing from ``helpers``. Used by the training runner for
every result (:class:`PeakMemory`), and by :func:`helpers.run_grid` when notebooks
02 and 03 compare the speed and memory of freezing and batch sizes
(:func:`step_timer`, :func:`activation_memory_callback`, :class:`ActivationMemory`).
"""
from __future__ import annotations

import threading
import time

import psutil


CUDA_ALLOCATOR = "CUDA allocator peak"
MPS_DRIVER = "MPS driver allocations"
PROCESS_RSS = "process RSS"


def memory_source(device: str) -> str:
    """What :class:`PeakMemory` measures on ``device``: the CUDA allocator, the MPS driver, or the process's RSS
    (notebook 03).

    On Apple MPS the driver's figure is used where torch has ``torch.mps.driver_allocated_memory``;
    otherwise the figure is the process's resident memory, which does not track Metal allocations
    (say so next to any MPS figure).
    """
    kind = str(device).split(":")[0]
    if kind == "cuda":
        return CUDA_ALLOCATOR
    if kind == "mps":
        import torch

        if callable(getattr(getattr(torch, "mps", None), "driver_allocated_memory", None)):
            return MPS_DRIVER
    return PROCESS_RSS


class PeakMemory:
    """Context manager measuring peak memory in MiB while the block runs (notebook 03).

    ``peak_mb``: on CUDA the allocator's peak; on Apple MPS the highest memory
    the Metal driver had allocated for this process (``torch.mps.driver_allocated_memory``,
    sampled), because the process's resident set does not track Metal allocations; on
    CPU (and on MPS with a torch that lacks that function) the highest resident set
    size seen (sampled every ``interval`` seconds). ``source`` says which of these the
    figure is (:func:`memory_source`). ``delta_mb``: the peak above what was held when the
    block started, which is what a setting added.
    """

    def __init__(self, device: str = "cpu", interval: float = 0.02):
        self.device = device
        self.interval = interval
        self.peak_mb = 0.0
        self.start_mb = 0.0
        self.source = memory_source(device)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def delta_mb(self) -> float:
        return max(0.0, self.peak_mb - self.start_mb)

    def _rss(self) -> float:
        if self.source == MPS_DRIVER:
            import torch

            return torch.mps.driver_allocated_memory() / 2**20
        return psutil.Process().memory_info().rss / 2**20

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self._rss())

    def __enter__(self) -> "PeakMemory":
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start_mb = torch.cuda.memory_allocated() / 2**20
        else:
            self.start_mb = self.peak_mb = self._rss()
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak_mb = max(self.peak_mb, self._rss())


class ActivationMemory:
    """Peak MiB of the tensors autograd keeps for the backward pass (the activations), on any device.

    Counted exactly through ``torch.autograd.graph.saved_tensors_hooks``: every
    tensor saved for backward adds its storage once (views of one storage count
    once) until the graph that holds it is freed; the model's own weights
    (``model``'s parameters, also saved by every matrix product) are not
    counted. Unlike the process's resident memory (:class:`PeakMemory` on a
    CPU), the number does not depend on what the process did before, so batch
    sizes and losses can be compared in one notebook kernel (notebook 03).
    Activations are what grows with the batch; the weights, gradients and AdamW
    state do not.
    """

    def __init__(self, model=None):
        self._params = {p.untyped_storage().data_ptr() for p in model.parameters()} if model is not None else set()
        self._live: dict[int, list] = {}  # storage pointer -> [holders alive, bytes]
        self.live_bytes = 0
        self.peak_bytes = 0
        self._ctx = None

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20

    def _pack(self, t):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in self._params or storage.nbytes() == 0:
            return t
        entry = self._live.get(ptr)
        if entry is None:
            entry = self._live[ptr] = [0, storage.nbytes()]
            self.live_bytes += entry[1]
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        entry[0] += 1
        return _Saved(t, self, ptr)

    def _release(self, ptr: int) -> None:
        entry = self._live.get(ptr)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.live_bytes -= entry[1]
            del self._live[ptr]

    @staticmethod
    def _unpack(saved):
        return saved.tensor if isinstance(saved, _Saved) else saved

    def __enter__(self) -> "ActivationMemory":
        from torch.autograd.graph import saved_tensors_hooks

        self._ctx = saved_tensors_hooks(self._pack, self._unpack)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
            self._ctx = None


class _Saved:
    """One tensor saved for backward; tells its :class:`ActivationMemory` when autograd frees it."""

    __slots__ = ("tensor", "owner", "ptr")

    def __init__(self, tensor, owner: ActivationMemory, ptr: int):
        self.tensor, self.owner, self.ptr = tensor, owner, ptr

    def __del__(self):
        self.owner._release(self.ptr)


def activation_memory_callback():
    """A trainer callback recording each run's :class:`ActivationMemory` peak over all its optimizer steps.

    ``callback.runs`` holds one peak (MiB) per training run, in order (notebook 03's grids).
    """
    from transformers import TrainerCallback

    class ActivationMemoryCallback(TrainerCallback):
        def __init__(self):
            self.runs: list[float] = []
            self._meter: ActivationMemory | None = None
            self._model = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.runs.append(0.0)
            self._model = model

        def on_step_begin(self, args, state, control, **kwargs):
            self._meter = ActivationMemory(self._model).__enter__()

        def _close(self):
            if self._meter is not None:
                self._meter.__exit__(None, None, None)
                self.runs[-1] = max(self.runs[-1], self._meter.peak_mb)
                self._meter = None

        def on_step_end(self, args, state, control, **kwargs):
            self._close()

        def on_train_end(self, args, state, control, **kwargs):
            self._close()

    return ActivationMemoryCallback()


def step_timer():
    """A trainer callback timing the optimizer steps only (forward, backward, update), without evaluations.

    ``callback.runs`` holds one ``{"steps", "seconds"}`` per training run, in order
    (:func:`helpers.run_grid` with ``speed=True``, notebooks 02 and 03).
    """
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.runs: list[dict] = []
            self._t = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.runs.append({"steps": 0, "seconds": 0.0})

        def on_step_begin(self, args, state, control, **kwargs):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.runs[-1]["steps"] += 1
            self.runs[-1]["seconds"] += time.perf_counter() - self._t

    return StepTimer()


__all__ = ["CUDA_ALLOCATOR", "MPS_DRIVER", "PROCESS_RSS", "memory_source", "PeakMemory", "ActivationMemory",
           "activation_memory_callback", "step_timer"]
