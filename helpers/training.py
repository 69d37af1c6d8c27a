"""The training runner (notebook 00 onwards): one configuration, one call, a result with everything measured.

Runner layer. Every notebook trains through :func:`train`. It runs the
library's ``SentenceTransformerTrainer`` (its arguments, losses, evaluators,
callbacks, ``learning_rate_mapping`` and ``EarlyStoppingCallback``); the
workshop only adds what the libraries lack: rate scaling for the batch size
(:mod:`helpers.batching`), freezing and gradual unfreezing at the right moment
(:mod:`helpers.freezing`), one scheduler factory shared with the plots
(:mod:`helpers.schedules`), and a recorder that keeps the rate at every
optimizer step, the training loss, and the validation loss and metric at every
evaluation (:mod:`helpers.callbacks`). The settings are :class:`helpers.TrainConfig`
(:mod:`helpers.settings`); the result is :class:`helpers.TrainResult` (:mod:`helpers.results`).

Nothing is left on disk unless ``output_dir`` is set (checkpoints for
early stopping live in a temporary folder that is removed; on CUDA the best
weights stay in memory, :mod:`helpers.devices`), and the same seed on the same
machine gives the same numbers.
"""
from __future__ import annotations

import gc
import math
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, replace

from transformers import EarlyStoppingCallback

from .batching import effective_batch, scaled_learning_rate, steps_per_epoch
from .callbacks import ProgressBar, Recorder, SkippedStartEval, StopFlag, quiet_trainer, trainer_class
from .config import mixed_precision, pick_device, pick_precision, seed_everything
from .data import SubsetTooLarge
from .devices import (BestWeights, best_weights_place, check_one_gpu, check_trainer_batch, loader_settings,
                      logging_steps, sync_free_guard)
from .distributed import (backend, barrier, data_parallel_steps, init_process_group, is_main_process, local_device,
                          score_once, shared_tempdir, world_size)
from .freezing import (GradualUnfreezing, freeze_bottom, freeze_parts, layerwise_lr_mapping, part_rates,
                       rates_lr_mapping, shaping_trainable)
from .losses import default_loss, is_inbatch, make_loss
from .measure import PeakMemory
from .models import count_parameters, load_model, n_layers
from .results import TrainResult, save_model_atomically
from .schedules import warmup_steps
from .settings import ALL, ConfigError, TrainConfig, validate
from .tasks import load_task


class TrainingOOMError(RuntimeError):
    """Training ran out of accelerator memory; the message lists settings that need less (notebook 00; used by all).

    Raised by :func:`train` after the memory of the failed run was released,
    so the next call in the same process (notebook kernel) starts clean.
    ``suggestions`` holds the ways out, one per item.
    """

    def __init__(self, message: str, suggestions: list[str], device: str = "cuda"):
        self.suggestions, self.device = suggestions, device
        super().__init__(message)


def prepare_task(cfg: TrainConfig | None = None, **overrides):
    """Load the data a config asks for once, to share across many runs (``train(cfg, data=task)``, notebooks 01-06)."""
    base = (cfg or TrainConfig()).replace(**overrides)
    cfg = base.resolved()
    validate(cfg)
    return _load_task_checked(cfg, explicit_train_size=base.train_size not in (None, ALL))


def _load_task_checked(cfg: TrainConfig, explicit_train_size: bool):
    """Load the task; a ``train_size`` the data cannot fill is a :class:`ConfigError` (before any training).

    Only a size the learner asked for is checked: the scale's default sizes
    quietly take everything when a task is smaller.
    """
    try:
        task = load_task(cfg.task, cfg.train_size, cfg.dev_size, cfg.test_size, seed=cfg.seed,
                         score_range=cfg.score_range)
    except SubsetTooLarge as exc:
        validate(cfg, n_train=exc.available)
        raise
    if explicit_train_size:
        validate(cfg, n_train=len(task.train))
    return task


def train(cfg: TrainConfig | None = None, *, model=None, data=None, progress: bool = True, stop: StopFlag | None = None,
          on_update=None, callbacks=(), divergence_guard: bool = True, start_eval: dict | None = None,
          **overrides) -> TrainResult:
    """Fine-tune once with ``cfg`` (plus keyword overrides) and return a :class:`TrainResult` (notebook 00 onwards).

    ``model``: train this already-loaded model in place instead of loading
    ``cfg.model``. ``data``: a prepared :class:`helpers.tasks.Task` (else built
    from the config; pass one to reuse loaded data across many runs). ``stop``: a :class:`StopFlag` that ends the run cleanly.
    ``on_update(result, state)`` is called at every log (live dashboards).
    ``divergence_guard=False`` lets the loss explode (the rate range test wants that).
    ``start_eval``: the untuned model's step-0 evaluation (``{"metric": ..., "loss": ...}``)
    measured by an earlier run on the same model, data and loss; it is recorded
    instead of evaluating again (:func:`helpers.run_grid` shares it across a grid).
    Under ``torchrun`` / ``accelerate launch`` every process calls it with the same
    config: the trainer trains data-parallel, every process returns the same result,
    and only rank 0 saves (:mod:`helpers.distributed`, README "Scaling out").
    """
    base = (cfg or TrainConfig()).replace(**overrides)
    cfg = base.resolved()
    for note in validate(cfg):
        warnings.warn(note, stacklevel=2)
    device, world = _join_processes(cfg)
    cfg = replace(cfg, precision=pick_precision(device, cfg.precision))  # recorded as what was used
    check_one_gpu(device)  # one process trains on one GPU (helpers.devices); torchrun for several
    seed_everything(cfg.seed)
    task = data if data is not None else _load_task_checked(cfg, base.train_size not in (None, ALL))
    loss_name = cfg.loss or default_loss(task.columns)
    own_model = model is None
    if own_model:
        model = load_model(cfg.model, device=device, max_seq_length=cfg.max_seq_length)
    validate(cfg, layers=n_layers(model), columns=task.columns)
    trainable = _freeze(model, cfg)
    plan = _plan(cfg, model, len(task.train), world, start_eval, device)
    result = TrainResult(config=asdict(cfg), metric=task.metric, device=device, precision=cfg.precision,
                         learning_rate=plan.lr,
                         effective_batch=effective_batch(cfg.batch_size, cfg.grad_accum, world), world_size=world,
                         train_examples=len(task.train), total_params=count_parameters(model),
                         layer_lrs=part_rates(model, plan.lr, cfg.layerwise_decay, cfg.lower_layers_lr,
                                              cfg.lower_layers))
    loss = make_loss(loss_name, model, scale=cfg.loss_scale, mini_batch_size=cfg.mini_batch_size)
    if world > 1 and is_inbatch(loss_name):
        loss.gather_across_devices = cfg.gather_across_devices
    tmp = shared_tempdir("workshop-run-")  # the same folder on every process: all restore the same checkpoint
    try:
        args = _arguments(cfg, plan, tmp, device, world, is_inbatch(loss_name), task.dev_metric_key)
        recorder = Recorder(result, task.dev_metric_key, stop=stop, on_update=on_update)
        if not divergence_guard:
            recorder.explode_factor, recorder.collapse_drop = float("inf"), float("inf")
        if plan.reuse_start:
            result.evals.append({"step": 0, "epoch": 0.0, "loss": start_eval.get("loss") if cfg.eval_loss else None,
                                 "metric": start_eval["metric"]})
        cbs, unfreezer, keeper = _callbacks(cfg, plan, model, recorder, callbacks,
                                            f"{task.name} {loss_name} lr={plan.lr:.1e}" if progress else None,
                                            task.dev_metric_key)
        trainer = trainer_class()(model=model, args=args, train_dataset=task.train,
                                  eval_dataset=task.dev if plan.evaluate and cfg.eval_loss else None, loss=loss,
                                  evaluator=task.dev_evaluator if plan.evaluate else None, callbacks=cbs)
        trainer.schedule_spec = {"schedule": cfg.schedule, "warmup_fraction": cfg.warmup_fraction,
                                 "floor": cfg.floor, "decay_fraction": cfg.decay_fraction}
        check_trainer_batch(trainer.args, cfg.batch_size)  # no nn.DataParallel multiplying the batch
        trainer.sync_free_guard = sync_free_guard(device)
        quiet_trainer(trainer)
        initial = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()} if plan.use_best else None
        mem, oom = _fit(trainer, result, cbs, device)
        if oom is not None:
            # Drop every reference to the trainer, its optimizer state and the gradients *before*
            # raising: the traceback keeps this frame (and its locals) alive in a notebook.
            _release(trainer, model, unfreezer)
            trainer = loss = recorder = cbs = unfreezer = initial = keeper = None
            if own_model:
                model = None
            _free_accelerator_memory()
            raise _oom_error(cfg, loss_name, device, oom)
        _finish(cfg, trainer, model, result, mem, unfreezer, initial, trainable, plan.use_best, task, keeper)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


# --------------------------------------------------------------------------- the steps of train()


def _join_processes(cfg: TrainConfig) -> tuple[str, int]:
    """This process's device and the number of processes; joins torchrun's process group when there are several."""
    device = local_device(pick_device(cfg.device))  # cuda:LOCAL_RANK under torchrun
    world = world_size()
    if world > 1:
        if cfg.gradual_unfreezing:
            raise ConfigError("gradual_unfreezing", True, f"False when {world} processes train together",
                              "DistributedDataParallel fixes the trainable weights when it starts; "
                              "use freeze_layers, or train in one process.")
        init_process_group(device)
    return device, world


def _freeze(model, cfg: TrainConfig) -> int:
    """Freeze what the config asks (before the optimizer exists); returns the trainable parameters left."""
    if cfg.freeze_layers or cfg.freeze_embeddings:
        freeze_bottom(model, cfg.freeze_layers,
                      cfg.freeze_layers > 0 if cfg.freeze_embeddings is None else cfg.freeze_embeddings)
    if cfg.frozen_parts:
        freeze_parts(model, cfg.frozen_parts)
    trainable = count_parameters(model, trainable_only=True)
    if trainable == 0:
        raise ConfigError("freeze_layers", cfg.freeze_layers, "a setting that leaves something trainable",
                          "Every weight is frozen; freeze fewer layers.")
    if shaping_trainable(model) == 0:
        raise ConfigError("freeze_layers", cfg.freeze_layers, "a setting that leaves a layer or the embeddings trainable",
                          "Every weight that shapes the embeddings is frozen (only weights the output never uses, "
                          "such as BERT's pooler, are trainable); freeze fewer layers.")
    return trainable


@dataclass
class _Plan:
    """What a run will do, decided before the trainer exists: rate, steps, evaluations, rates per layer."""

    lr: float
    per_epoch: int
    eval_steps: int
    total: int
    evaluate: bool
    reuse_start: bool
    use_best: bool
    mapping: dict
    keep_best: str  # where early stopping keeps the best weights: "disk" (checkpoints) or memory (CUDA)

    @property
    def on_disk(self) -> bool:
        """Early stopping with checkpoints in the temporary folder (the trainer restores the best)."""
        return self.use_best and self.keep_best == "disk"


def _plan(cfg: TrainConfig, model, n_train: int, world: int, start_eval: dict | None, device: str) -> _Plan:
    """Several processes: the rule scales by batch x accumulation x processes; each sees 1/world of the data."""
    lr = scaled_learning_rate(cfg.learning_rate, cfg.batch_size, cfg.base_batch_size, cfg.lr_scaling,
                              cfg.grad_accum * world)
    per_epoch = steps_per_epoch(n_train, cfg.batch_size, cfg.grad_accum) if world == 1 else \
        data_parallel_steps(n_train, cfg.batch_size, cfg.grad_accum, world)
    evaluate = cfg.evals_per_epoch > 0
    if cfg.lower_layers_lr is not None:
        low = part_rates(model, lr, low=cfg.lower_layers_lr, lower_layers=cfg.lower_layers)
        mapping = rates_lr_mapping(model, low, lr)
    else:
        mapping = layerwise_lr_mapping(model, lr, cfg.layerwise_decay)
    return _Plan(lr=lr, per_epoch=per_epoch, evaluate=evaluate,
                 eval_steps=max(1, round(per_epoch / cfg.evals_per_epoch)) if evaluate else per_epoch,
                 total=cfg.max_steps or math.ceil(per_epoch * cfg.epochs),
                 reuse_start=evaluate and start_eval is not None and start_eval.get("metric") is not None,
                 use_best=cfg.early_stopping_patience is not None, mapping=mapping,
                 keep_best=best_weights_place(device, _weight_bytes(model), world=world)
                 if cfg.early_stopping_patience is not None else "disk")


def _arguments(cfg: TrainConfig, plan: _Plan, output_dir: str, device: str, world: int, inbatch: bool,
               metric_key: str):
    """The library's training arguments for this run (early stopping keeps checkpoints in ``output_dir``)."""
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    use_best, on_disk = plan.use_best, plan.on_disk
    return SentenceTransformerTrainingArguments(
        output_dir=output_dir,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=plan.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=warmup_steps(plan.total, cfg.warmup_fraction),
        learning_rate_mapping=plan.mapping,
        eval_strategy="steps" if plan.evaluate else "no",
        eval_steps=plan.eval_steps,
        eval_on_start=plan.evaluate and not plan.reuse_start,
        logging_steps=logging_steps(device, plan.total),  # 1 on a CPU; every few steps on CUDA
        logging_nan_inf_filter=False,
        save_strategy="steps" if on_disk else "no",
        save_steps=plan.eval_steps,
        save_only_model=True,
        save_total_limit=2 if on_disk else None,
        load_best_model_at_end=on_disk,
        metric_for_best_model=("loss" if cfg.early_stopping_metric == "loss" else metric_key) if use_best else None,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        disable_tqdm=True,
        use_cpu=device == "cpu",
        **loader_settings(device),  # CPU: none; CUDA: persistent workers tokenise ahead
        **({"ddp_backend": backend(device), "save_on_each_node": True} if world > 1 else {}),
        batch_sampler=BatchSamplers.NO_DUPLICATES if inbatch else BatchSamplers.BATCH_SAMPLER,
        **mixed_precision(device, cfg.precision),
    )


def _callbacks(cfg: TrainConfig, plan: _Plan, model, recorder: Recorder, extra, bar_desc: str | None, metric_key: str):
    """The run's trainer callbacks (recorder first), the gradual unfreezer and the in-memory best weights, if any."""
    cbs = [recorder, *extra]
    if plan.reuse_start:
        cbs.append(SkippedStartEval())
    unfreezer = None
    if cfg.gradual_unfreezing:
        unfreezer = GradualUnfreezing(model, cfg.unfreeze_start_layers)
        cbs.append(unfreezer)
    keeper = None
    if plan.use_best:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
        if not plan.on_disk:
            by_loss = cfg.early_stopping_metric == "loss"
            keeper = BestWeights(model, "eval_loss" if by_loss else f"eval_{metric_key}", not by_loss, plan.keep_best)
            cbs.append(keeper)
    if bar_desc is not None and is_main_process():
        cbs.append(ProgressBar(bar_desc, metric_key))
    return cbs, unfreezer, keeper


def _close_bars(trainer, cbs) -> None:
    for cb in cbs:  # on_train_end never came: close the progress bar
        if isinstance(cb, ProgressBar):
            cb.on_train_end(trainer.args, trainer.state, trainer.control)


def _fit(trainer, result: TrainResult, cbs, device: str):
    """Train, timing the run and its peak memory; Ctrl-C ends it as "interrupted". Returns (memory, OOM text or None)."""
    oom = None
    with PeakMemory(device) as mem:
        start = time.perf_counter()
        try:
            trainer.train()
        except KeyboardInterrupt:
            result.stop_reason = "interrupted"
            _close_bars(trainer, cbs)
        except RuntimeError as exc:  # torch.OutOfMemoryError is a RuntimeError
            if not _is_oom(exc):
                raise
            oom = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
            _close_bars(trainer, cbs)
        result.wall_time = time.perf_counter() - start
    return mem, oom


def _release(trainer, model, unfreezer) -> None:
    """After an out-of-memory error: unfreeze, drop gradients and the optimizer state."""
    if unfreezer is not None:
        for p in model.parameters():
            p.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    trainer.optimizer = trainer.lr_scheduler = None


def _finish(cfg: TrainConfig, trainer, model, result: TrainResult, mem, unfreezer, initial, trainable: int,
            use_best: bool, task, keeper=None) -> None:
    """Fill the result after training: best weights back, speed, memory, test score; save (rank 0)."""
    if result.stop_reason == "finished" and use_best and trainer.state.global_step < trainer.state.max_steps:
        result.stop_reason = "early stopping"
    if use_best:
        result.best_step = _restore_best(trainer, model, result, initial, cfg.early_stopping_metric == "loss",
                                         memory=keeper)
    result.trainable_params = max(trainable, count_parameters(model, trainable_only=True))
    result.steps = trainer.state.global_step
    result.steps_per_sec = result.steps / result.wall_time if result.wall_time else 0.0
    result.examples_per_sec = result.steps * result.effective_batch / result.wall_time if result.wall_time else 0.0
    result.peak_memory_mb, result.memory_delta_mb = mem.peak_mb, mem.delta_mb
    if unfreezer is not None:
        result.unfreeze_history = unfreezer.history
        for p in model.parameters():
            p.requires_grad_(True)
    model.eval()
    if cfg.final_test:
        result.test_metric = score_once(model, task.test_evaluator)  # computed once, the same on every process
    result.model = model
    if cfg.output_dir and is_main_process():
        save_model_atomically(model, cfg.output_dir)
    barrier()  # several processes: the model is written and every checkpoint read before any goes on


def _restore_best(trainer, model, result: TrainResult, initial: dict, by_loss: bool, memory=None) -> int | None:
    """Make sure ``model`` holds the best evaluation's weights; return that evaluation's step.

    The trainer restores its best checkpoint itself, but it never counts the
    evaluation before training (step 0, no checkpoint) and it restores nothing
    after an interrupt. When the untrained model was best, its weights come
    back from ``initial``. ``memory``: a :class:`helpers.devices.BestWeights` holding the
    best weights in memory (CUDA), used instead of checkpoints.
    """
    key = "loss" if by_loss else "metric"
    evals = [e for e in result.evals if e.get(key) is not None]
    if not evals:
        return None
    best = (min if by_loss else max)(evals, key=lambda e: e[key])
    if best["step"] == 0:
        model.load_state_dict(initial)
    elif memory is not None:
        if not memory.restore(model, best["step"]):  # no copy of that evaluation: keep the last weights
            return evals[-1]["step"]
    elif result.stop_reason == "interrupted" or trainer.state.best_global_step != best["step"]:
        ckpt = os.path.join(trainer.args.output_dir, f"checkpoint-{best['step']}")
        loaded = False
        if os.path.isdir(ckpt):
            try:
                trainer._load_from_checkpoint(ckpt)
                loaded = True
            except Exception as exc:  # e.g. a checkpoint half-written when the run was interrupted
                warnings.warn(f"Could not restore the best checkpoint ({type(exc).__name__}: {exc}); "
                              "keeping the last weights.", stacklevel=3)
        if not loaded:  # no checkpoint of the best evaluation: keep the last weights and say so
            last = evals[-1]
            return last["step"]
    return best["step"]


def _weight_bytes(model) -> int:
    """Bytes of the model's parameters and buffers (what a copy of its weights takes)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


# --------------------------------------------------------------------------- out of memory


def _is_oom(exc: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors (``torch.OutOfMemoryError`` or its older RuntimeError form)."""
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_accelerator_memory() -> None:
    """Collect the failed run's tensors and hand cached CUDA blocks back."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        try:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        except RuntimeError:  # pragma: no cover - a broken context: nothing more to free
            pass
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        mps.empty_cache()


def _oom_error(cfg: TrainConfig, loss_name: str, device: str, original: str) -> TrainingOOMError:
    """The error for an out-of-memory run, with the settings that need less memory for this loss."""
    bs, ga = cfg.batch_size, cfg.grad_accum
    half = max(1, bs // 2)
    ways = [f"a smaller batch: batch_size={half}"]
    if is_inbatch(loss_name):
        if loss_name == "cached_mnrl":
            ways.append(f"a smaller chunk for cached_mnrl: mini_batch_size={max(1, min(cfg.mini_batch_size, bs) // 2)} "
                        f"(the whole batch of {bs} still supplies the negatives)")
        else:
            ways.append(f"keep batch_size={bs} with loss='cached_mnrl', mini_batch_size={max(1, half // 2)}: "
                        "every example of the batch stays a negative at the memory of a mini-batch "
                        "(grad_accum does not help in-batch losses such as mnrl: each micro-batch "
                        "only sees its own negatives)")
        ways.append(f"for per-example losses (cosent, cosine, angle) grad_accum keeps the effective batch: "
                    f"batch_size={half}, grad_accum={ga * 2}")
    else:
        ways.append(f"keep the effective batch of {bs * ga} with gradient accumulation: batch_size={half}, "
                    f"grad_accum={ga * 2} (exact for per-example losses such as {loss_name})")
        ways.append("for in-batch losses (mnrl) use loss='cached_mnrl' with a small mini_batch_size instead of grad_accum")
    ways.append("freeze the bottom layers: freeze_layers=3 (frozen layers keep no gradients or optimizer state)")
    ways.append(f"shorter inputs: max_seq_length={max(8, (cfg.max_seq_length or 128) // 2)}")
    message = (
        f"Training ran out of {device} memory (batch_size={bs}, grad_accum={ga}, loss={loss_name!r}, "
        f"max_seq_length={cfg.max_seq_length}). Ways out:\n"
        + "\n".join(f"  - {w}" for w in ways)
        + f"\nThe failed run's memory was released; the next train() call starts clean. (Original error: {original})"
    )
    return TrainingOOMError(message, ways, device)


__all__ = ["TrainingOOMError", "prepare_task", "train", "steps_per_epoch"]
