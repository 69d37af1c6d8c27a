"""What the runner does differently on a GPU: one GPU per process, busy loaders, few syncs, best weights in memory.

Each choice is a small function of the device, called from one place in :func:`helpers.train`
(README "GPU notes"; notebook 00 shows the device and precision :func:`helpers.setup` chose).
On a CPU (and Apple MPS) every function returns what the runner always did there, which is
the faster path on a CPU: no loader workers, a log line (and a finite-loss check) every step,
early-stopping checkpoints in a temporary folder.

On CUDA:

- **one GPU per process.** With several GPUs visible and no torchrun, the library's trainer
  wraps the model in ``nn.DataParallel`` on ``cuda:0`` and multiplies the batch by the number
  of GPUs, so the helpers' steps per epoch, evaluation frequency, effective batch and rate
  scaling would silently disagree with what it does. :func:`pin_one_gpu` (from ``setup()``)
  makes one GPU visible when CUDA has not started yet; :func:`check_one_gpu` (from ``train()``)
  refuses the run with the way out otherwise; :func:`check_trainer_batch` checks that the
  trainer's batch is the configured one.
- **the loader works ahead.** Tokenisation happens in the collator, so :func:`loader_settings`
  gives the trainer persistent worker processes (started once per run, not once per epoch)
  and pinned host memory.
- **few host-device syncs.** :func:`logging_steps` logs the training loss every few steps
  instead of every step, and :func:`sync_free_guard` zeroes a non-finite step's gradients on
  the GPU without waiting for it; the :class:`helpers.training.Recorder` sees the non-finite
  mean of the logged window and stops the run at most :data:`CUDA_LOG_EVERY` steps later.
- **best weights in memory.** :func:`best_weights_place` keeps the best evaluation's weights
  in GPU (or host) memory for early stopping instead of writing a checkpoint at every
  evaluation (:class:`BestWeights`).
"""
from __future__ import annotations

import os

CUDA_LOG_EVERY = 5  # optimizer steps between logged losses on CUDA: a non-finite step stops the run within this many
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"


def _kind(device: str) -> str:
    return str(device).split(":")[0]


def _index(device: str) -> int:
    """The GPU number in ``cuda:N`` (0 for plain ``cuda``)."""
    part = str(device).partition(":")[2]
    return int(part) if part.isdigit() else 0


def gpu_count() -> int:
    """CUDA GPUs this process can see (0 without CUDA); does not start CUDA
    (the GPU path of every run; notebook 00)."""
    import torch

    try:
        return int(torch.cuda.device_count())
    except Exception:  # pragma: no cover - a broken driver counts as none
        return 0


def _distributed() -> bool:
    """Launched by torchrun with several processes (``$WORLD_SIZE``; core layer: no import of helpers.distributed)."""
    try:
        return int(os.environ.get("WORLD_SIZE", 1)) > 1
    except ValueError:
        return False


# --------------------------------------------------------------------------- one GPU per process


def pin_one_gpu(device: str | None) -> str | None:
    """Make only the requested GPU visible when several are and CUDA has not started (``setup()``)
    (the GPU path of every run; notebook 00).

    ``device`` is what the learner asked for (``None``/``""`` means automatic, ``cuda:N``
    a GPU). Returns the device to use afterwards: ``"cuda"`` when a GPU was pinned (it is
    then GPU 0 of this process), else ``device`` unchanged. Under torchrun, on a CPU, or
    with one GPU nothing changes. When CUDA already started in this process the pin cannot
    take effect; the environment is put back and :func:`check_one_gpu` later refuses the run
    with the way out.
    """
    choice = (device or "").strip().lower()
    if choice and _kind(choice) != "cuda":
        return device
    n = gpu_count()
    if n <= 1 or _distributed():
        return device
    index = _index(choice)
    if index >= n:
        return device  # check_one_gpu names the problem
    before = os.environ.get(VISIBLE_ENV)
    listed = [v.strip() for v in before.split(",")] if before else [str(i) for i in range(n)]
    os.environ[VISIBLE_ENV] = listed[index] if index < len(listed) else str(index)
    if _runtime_gpu_count() == 1:
        return "cuda"
    if before is None:  # CUDA had started: the variable no longer matters, so leave it as it was
        os.environ.pop(VISIBLE_ENV, None)
    else:
        os.environ[VISIBLE_ENV] = before
    return device


def _runtime_gpu_count() -> int:
    """GPUs the CUDA runtime reports (it reads ``CUDA_VISIBLE_DEVICES`` once, when CUDA starts)."""
    import torch

    count = getattr(torch._C, "_cuda_getDeviceCount", None)
    try:
        return int(count()) if count is not None else -1
    except Exception:  # pragma: no cover
        return -1


def check_one_gpu(device: str) -> None:
    """Raise ``ValueError`` before training when one process would train on several GPUs or a GPU it cannot use
    (the GPU path of every run; notebook 00).

    Outside torchrun the trainer always trains on ``cuda:0``, and with several GPUs visible it
    switches to ``nn.DataParallel`` with a batch multiplied by their number.
    """
    if _kind(device) != "cuda" or _distributed():
        return
    n = gpu_count()
    index = _index(device)
    if n > 1:
        raise ValueError(
            f"{n} GPUs are visible to this one process, and the trainer would spread each batch over all of them "
            f"(nn.DataParallel, batch x{n}), so steps, evaluations and rate scaling would not be what the settings "
            f"say. Make one GPU visible before Python starts, e.g. `CUDA_VISIBLE_DEVICES={index} jupyter lab` or "
            f"`CUDA_VISIBLE_DEVICES={index} python ...` (in a notebook: restart the kernel, run "
            f"`%env CUDA_VISIBLE_DEVICES={index}` first, then `hp.setup()`), or train on all of them with "
            f"`torchrun --nproc_per_node {n} -m helpers.distributed` (README \"Scaling out\").")
    if index >= max(n, 1):
        raise ValueError(f"Device {device!r}: this process sees {n} GPU(s), numbered from 0. Use device='cuda', or "
                         f"choose the GPU with CUDA_VISIBLE_DEVICES={index} before Python starts.")
    if index != 0:
        raise ValueError(f"Device {device!r}: outside torchrun the trainer trains on the first visible GPU only. "
                         f"Start Python with CUDA_VISIBLE_DEVICES={index} and use device='cuda'.")


def check_trainer_batch(args, batch_size: int) -> None:
    """Raise ``RuntimeError`` when the trainer's batch per step differs from the configured ``batch_size``
    (the GPU path of every run; notebook 03's batch arithmetic).

    The trainer multiplies the batch by the number of GPUs under ``nn.DataParallel``; the
    helpers' steps per epoch, evaluation frequency and rate scaling assume it does not.
    """
    got = args.train_batch_size
    if got != batch_size:
        raise RuntimeError(
            f"The trainer would take {got} examples per step instead of batch_size={batch_size} "
            f"({args.n_gpu} GPUs in one process: nn.DataParallel). Make one GPU visible "
            "(CUDA_VISIBLE_DEVICES=0) or use torchrun (README \"Scaling out\").")


# --------------------------------------------------------------------------- keeping the GPU busy


def loader_settings(device: str, cpu_count: int | None = None, start_method: str | None = None) -> dict:
    """The trainer's data-loader arguments for ``device`` (the GPU path of every run; notebook 00).

    CPU and MPS: no worker processes (the collator's tokenisation is cheap next to a CPU
    step, and workers would take cores from the matrix products). CUDA: up to 4 persistent
    workers (half the cores) that tokenise the next batches while the GPU trains, and pinned
    memory for faster copies. Workers need the ``fork`` start method here: under ``spawn``
    each worker would pickle the model (the collator tokenises with it).
    """
    if _kind(device) != "cuda":
        return {"dataloader_num_workers": 0}
    import multiprocessing

    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    method = start_method or multiprocessing.get_start_method(allow_none=True) or \
        multiprocessing.get_context().get_start_method()
    workers = min(4, cores // 2) if method == "fork" else 0
    return {"dataloader_num_workers": workers, "dataloader_persistent_workers": workers > 0,
            "dataloader_pin_memory": True}


def logging_steps(device: str, total_steps: int) -> int:
    """Optimizer steps between logged training losses: 1 on a CPU, a few on CUDA (each log waits for the GPU)
    (the GPU path of every run; notebook 00).

    Short CUDA runs still log about 20 times, so their loss curves keep some points.
    """
    if _kind(device) != "cuda":
        return 1
    return max(1, min(CUDA_LOG_EVERY, int(total_steps) // 20))


def sync_free_guard(device: str) -> bool:
    """True where the non-finite-loss guard must not wait for the device (CUDA); False on a CPU
    (the GPU path of every run; notebook 00)."""
    return _kind(device) == "cuda"


def drop_nonfinite_grads(model, optimizer, loss, wait: bool = True) -> None:
    """Keep a NaN/infinite loss's gradients away from the weights (the runner's training step)
    (the GPU path of every run; notebook 00).

    ``wait=True`` (CPU): reads the loss and, when it is not finite, drops the gradients
    (set to ``None``, which AdamW skips). ``wait=False`` (CUDA): zeroes the gradients on the
    device under a mask computed there, without reading anything back, so the GPU never idles;
    AdamW then applies only its momentum and weight decay for that step, and the run stops at
    the next logged loss (:func:`logging_steps`).
    """
    import torch

    finite = torch.isfinite(loss.detach()).all()
    if wait:
        if not bool(finite):
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
            model.zero_grad(set_to_none=True)
        return
    bad = ~finite
    for p in model.parameters():
        if p.grad is not None:
            p.grad.masked_fill_(bad, 0.0)


# --------------------------------------------------------------------------- best weights for early stopping


def best_weights_place(device: str, weight_bytes: int, free_device_bytes: int | None = None,
                       free_host_bytes: int | None = None, world: int = 1) -> str:
    """Where early stopping keeps the best evaluation's weights: ``"device"``, ``"host"`` or ``"disk"``
    (early stopping on the GPU; notebook 04).

    CPU, MPS and several processes: ``"disk"`` (a checkpoint in the run's temporary folder,
    what the trainer does; every rank restores the same file). CUDA: a copy in GPU memory when
    four copies' worth is free (no transfer at all), else in host memory when that has room,
    else disk. Memory figures are looked up when not given.
    """
    if _kind(device) != "cuda" or world > 1:
        return "disk"
    need = 4 * int(weight_bytes)
    if free_device_bytes is None:
        import torch

        try:
            free_device_bytes = int(torch.cuda.mem_get_info(torch.device(device))[0])
        except Exception:
            free_device_bytes = 0
    if free_device_bytes >= need + 512 * 2**20:
        return "device"
    if free_host_bytes is None:
        import psutil

        free_host_bytes = int(psutil.virtual_memory().available)
    return "host" if free_host_bytes >= need + 2**30 else "disk"


def _trainer_callback():
    from transformers import TrainerCallback

    return TrainerCallback


class BestWeights(_trainer_callback()):
    """A trainer callback keeping a copy of the weights of the best evaluation so far, in memory
    (early stopping on the GPU; notebook 04).

    Used instead of the trainer's checkpoints when :func:`best_weights_place` says
    ``"device"`` or ``"host"``. It compares ``metric_key`` (e.g. ``eval_loss`` or
    ``eval_sts-dev_spearman_cosine``) as the trainer does: strictly better, so the first of
    equal evaluations wins. :meth:`restore` loads the copy of a given step.
    """

    def __init__(self, model, metric_key: str, greater_is_better: bool, place: str = "device"):
        self.model, self.metric_key, self.greater = model, metric_key, greater_is_better
        self.place = place
        self.step: int | None = None
        self.value: float | None = None
        self.weights: dict | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.metric_key)
        if value is None:
            return
        better = self.value is None or (value > self.value if self.greater else value < self.value)
        if better:
            self.value, self.step = value, state.global_step
            self.weights = self.copy_weights()

    def copy_weights(self) -> dict:
        """A detached copy of the model's state, on the device or in host memory."""
        import torch

        with torch.no_grad():
            if self.place == "host":
                return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore(self, model, step: int) -> bool:
        """Load the kept weights into ``model`` when they are those of ``step``; True when done."""
        if self.weights is None or self.step != step:
            return False
        model.load_state_dict(self.weights)
        return True


__all__ = ["CUDA_LOG_EVERY", "gpu_count", "pin_one_gpu", "check_one_gpu", "check_trainer_batch", "loader_settings",
           "logging_steps", "sync_free_guard", "drop_nonfinite_grads", "best_weights_place", "BestWeights"]
