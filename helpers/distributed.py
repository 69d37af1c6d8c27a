"""torchrun primitives (README "Scaling out"): rank, world size, process group, shared folders, one score for all.

Runner layer. Data-parallel training (``torchrun --nproc_per_node N`` or
``accelerate launch``): the launcher starts one process per device and sets
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`helpers.train` then lets the
library's trainer do DistributedDataParallel (gloo on CPUs, NCCL on GPUs). Each
process takes ``batch_size`` examples per forward pass, so one optimizer step
sees ``batch_size x grad_accum x processes`` examples (``TrainResult.effective_batch``)
and the ``lr_scaling`` rule scales the rate by that batch. What this module adds:

- the trainer's checkpoints (early stopping) go to one temporary folder that every process of a
  node shares (:func:`shared_tempdir`), so every rank restores the same best checkpoint;
- validation metrics come from the trainer (rank 0 runs the evaluator, with the encoding shared
  across ranks, and broadcasts the numbers), and the final test score the same way
  (:func:`score_once`), so every rank returns the same :class:`helpers.TrainResult` and takes the
  same early-stopping decisions without further communication;
- only rank 0 saves the model, writes JSON and prints reports (:func:`is_main_process`);
- in-batch losses (``mnrl``, ``cached_mnrl``) gather the embeddings of every process before the
  softmax when ``TrainConfig.gather_across_devices`` is on (the default): each anchor ranks its
  positive against ``batch_size x processes - 1`` in-batch negatives instead of ``batch_size - 1``.

The search's workers and its lockstep run under torchrun live in :mod:`helpers.workers`;
one training run under torchrun is ``torchrun --nproc_per_node N -m helpers train --config '{...}'``.
"""
from __future__ import annotations

import os
import tempfile
from datetime import timedelta

from .batching import steps_per_epoch
from .evaluation import score
from .settings import ConfigError

TIMEOUT = timedelta(minutes=30)  # how long a collective waits for the slowest process (the trainer's default)


# --------------------------------------------------------------------------- rank and world size


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def world_size() -> int:
    """Processes training together: the process group's size, else ``$WORLD_SIZE`` (set by torchrun), else 1
    (torchrun runs of ``python -m helpers``; notebook 07)."""
    dist = _dist()
    if dist is not None:
        return dist.get_world_size()
    return max(1, _env_int("WORLD_SIZE", 1))


def rank() -> int:
    """This process's number among all processes (0 is the main one)
    (torchrun runs of ``python -m helpers``; notebook 07)."""
    dist = _dist()
    if dist is not None:
        return dist.get_rank()
    return _env_int("RANK", 0) if world_size() > 1 else 0


def local_rank() -> int:
    """This process's number on its machine (which GPU it uses)
    (torchrun runs of ``python -m helpers``; notebook 07)."""
    return _env_int("LOCAL_RANK", 0) if world_size() > 1 else 0


def is_distributed() -> bool:
    """True when launched by torchrun / accelerate launch with more than one process
    (torchrun runs of ``python -m helpers``; notebook 07)."""
    return world_size() > 1


def is_main_process() -> bool:
    """True on rank 0 (and in an ordinary single process): the one that saves, writes and prints
    (torchrun runs of ``python -m helpers``; notebook 07)."""
    return rank() == 0


def _dist():
    """``torch.distributed`` when its process group is initialised, else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def local_device(device: str) -> str:
    """The device of this process: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun; anything else unchanged
    (torchrun runs of ``python -m helpers``; notebook 07)."""
    if is_distributed() and device == "cuda":
        return f"cuda:{local_rank()}"
    return device


def check_launch(device: str) -> None:
    """Raise ``ValueError`` when this launch cannot train data-parallel on ``device`` (before any training)
    (``python -m helpers recipe`` under torchrun; notebook 07)."""
    if not is_distributed():
        return
    if device == "mps":
        raise ValueError("Several processes cannot share Apple's MPS device (no distributed backend supports it); "
                         "run one process, or use --device cpu.")
    if device.startswith("cuda"):
        import torch

        if local_rank() >= torch.cuda.device_count():
            raise ValueError(f"Process LOCAL_RANK={local_rank()} has no GPU: this machine has "
                             f"{torch.cuda.device_count()}; use --nproc_per_node {torch.cuda.device_count()} or fewer.")


def init_process_group(device: str) -> bool:
    """Join the launcher's process group once (gloo on CPU, NCCL on CUDA); True when distributed
    (torchrun runs of ``python -m helpers``; notebook 07).

    :func:`helpers.train` calls it before it builds the trainer's arguments, which
    then reuse the group (the trainer gets ``ddp_backend`` to match).
    """
    if not is_distributed():
        return False
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return True
    check_launch(device)
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device if ":" in device else f"cuda:{local_rank()}"))
    dist.init_process_group(backend=backend(device), timeout=TIMEOUT)
    return True


def backend(device: str) -> str:
    """The collective backend for ``device``: NCCL for CUDA, gloo otherwise
    (torchrun runs of ``python -m helpers``; notebook 07)."""
    return "nccl" if device.startswith("cuda") else "gloo"


def barrier() -> None:
    """Wait until every process got here (nothing to wait for in a single process)
    (torchrun runs of ``python -m helpers``; notebook 07)."""
    dist = _dist()
    if dist is not None and dist.get_world_size() > 1:
        dist.barrier()


def broadcast(obj=None):
    """Rank 0's ``obj`` on every process (any picklable value); ``obj`` itself in a single process
    (torchrun runs of ``python -m helpers``; notebook 07)."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return obj
    box = [obj if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shared_tempdir(prefix: str = "workshop-run-") -> str:
    """A new temporary folder, the same path on every process (rank 0 names it, every process creates it)
    (torchrun runs of ``python -m helpers``; notebook 07).

    The trainer's checkpoints go there: rank 0 (on each machine) writes them and
    every rank restores the best one from the same path. The caller removes it.
    """
    if not is_distributed() or _dist() is None:
        return tempfile.mkdtemp(prefix=prefix)
    path = broadcast(tempfile.mkdtemp(prefix=prefix) if is_main_process() else None)
    os.makedirs(path, exist_ok=True)
    return path


def data_parallel_steps(n_examples: int, batch_size: int, grad_accum: int, processes: int) -> int:
    """Optimizer steps per epoch when ``processes`` train together; raises if a process would get no batch
    (the batch arithmetic of notebook 03).

    The trainer drops the last incomplete batch under DDP (sentence-transformers sets
    ``dataloader_drop_last``) and deals whole rounds of one batch per process, so each
    process takes ``n // batch // processes`` batches per epoch (:func:`helpers.batching.steps_per_epoch`).
    """
    per_epoch = steps_per_epoch(n_examples, batch_size, grad_accum, processes)
    if per_epoch < 1:
        raise ConfigError("batch_size", batch_size,
                          f"at most {max(1, n_examples // processes)} for {n_examples} training examples on {processes} "
                          "processes (each process needs one full batch per step)",
                          "Use a smaller batch_size, more data, or fewer processes.")
    return per_epoch


def check_rows(rows: dict, batch_size: int) -> None:
    """Raise ``ValueError`` when a split in ``rows`` (name -> count) cannot give every process a full batch
    (``python -m helpers recipe`` under torchrun; notebook 07).

    The recipe under torchrun checks its search subset and its training data
    against the largest batch of the search space before anything trains.
    """
    n_proc = world_size()
    for name, n in rows.items():
        if n // batch_size // n_proc < 1:
            raise ValueError(f"The {name} has {n} rows: too few for batch_size={batch_size} on {n_proc} processes "
                             f"(each process needs a full batch per step, {batch_size * n_proc} rows). Use a larger "
                             "--subset or more data, or fewer processes.")


def score_once(model, evaluator) -> float:
    """The evaluator's main metric, computed once for all processes and the same on every one
    (torchrun runs of ``python -m helpers``; notebook 07).

    Under torchrun rank 0 runs the evaluator while every rank encodes its share of
    the texts (sentence-transformers' ``distributed_evaluation``, what the trainer
    does for validation); the number is then broadcast. One process: :func:`helpers.evaluation.score`.
    """
    if _dist() is None or world_size() == 1:
        return score(model, evaluator)
    try:
        from sentence_transformers.util.distributed import distributed_evaluation
    except ImportError:  # sentence-transformers before 6.2: rank 0 encodes everything alone
        return broadcast(score(model, evaluator) if is_main_process() else None)

    with distributed_evaluation(model) as run:
        value = score(model, evaluator) if run else None
    return broadcast(value)


__all__ = ["world_size", "rank", "local_rank", "is_distributed", "is_main_process", "local_device", "check_launch",
           "init_process_group", "backend", "barrier", "broadcast", "shared_tempdir", "data_parallel_steps",
           "check_rows", "score_once"]
