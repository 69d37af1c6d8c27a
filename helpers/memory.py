"""Peak memory of a block of code, on CPU (process RSS, sampled) and CUDA (allocator peak).

Used by the training runner for every result, and by notebooks 02 and 03
when they compare freezing and batch sizes.
"""
from __future__ import annotations

import threading

import psutil


class PeakMemory:
    """Context manager measuring peak memory in MiB while the block runs.

    ``peak_mb``: on CUDA the allocator's peak; on CPU the highest resident set
    size seen (sampled every ``interval`` seconds). ``delta_mb``: the peak
    above what the process held when the block started (CPU), which is what a
    setting added.
    """

    def __init__(self, device: str = "cpu", interval: float = 0.02):
        self.device = device
        self.interval = interval
        self.peak_mb = 0.0
        self.start_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def delta_mb(self) -> float:
        return max(0.0, self.peak_mb - self.start_mb)

    def _rss(self) -> float:
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
