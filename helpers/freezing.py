"""Layer freezing, gradual unfreezing and layer-wise learning rates (notebook 02).

Static freezing happens before the trainer builds its optimizer, so frozen
weights get no optimizer state (less memory). Gradual unfreezing must not:
the trainer only puts ``requires_grad`` weights into AdamW, so a layer frozen
before the optimizer exists would never train after being "unfrozen".
:class:`GradualUnfreezing` therefore freezes in ``on_train_begin`` (after the
optimizer is built) and unfreezes one more layer at each epoch's start.
"""
from __future__ import annotations

import re

from transformers import TrainerCallback

from .models import embeddings, encoder_layers, n_layers


def set_trainable(module, trainable: bool) -> None:
    """Switch ``requires_grad`` for every weight of ``module``."""
    for p in module.parameters():
        p.requires_grad_(trainable)


def freeze_bottom(model, k: int, freeze_embeddings: bool = True) -> list[str]:
    """Freeze the bottom ``k`` transformer layers (and the embeddings); returns the frozen parts' names."""
    layers = encoder_layers(model)
    if not 0 <= k <= len(layers):
        raise ValueError(f"Cannot freeze {k} layers: the model has {len(layers)} (use 0..{len(layers)}).")
    frozen = []
    if freeze_embeddings:
        set_trainable(embeddings(model), False)
        frozen.append("embeddings")
    for i in range(k):
        set_trainable(layers[i], False)
        frozen.append(f"layer {i}")
    return frozen


def unfreeze_all(model) -> None:
    """Make every weight trainable again."""
    set_trainable(model, True)


def trainable_layers(model) -> list[int]:
    """Indices of transformer layers with any trainable weight."""
    return [i for i, layer in enumerate(encoder_layers(model)) if any(p.requires_grad for p in layer.parameters())]


class GradualUnfreezing(TrainerCallback):
    """Start with only the top ``start_layers`` trainable; unfreeze one more layer (downwards) each epoch.

    After every layer is trainable the embeddings follow. ``history`` records,
    per epoch, which layer indices were trainable (notebook 02 draws it).
    """

    def __init__(self, model, start_layers: int = 1):
        self.model = model
        self.start_layers = start_layers
        self.history: list[list[int]] = []

    def _apply(self, epoch: int) -> None:
        layers = encoder_layers(self.model)
        n = len(layers)
        open_layers = min(n, self.start_layers + epoch)
        for i, layer in enumerate(layers):
            set_trainable(layer, i >= n - open_layers)
        set_trainable(embeddings(self.model), self.start_layers + epoch > n)
        self.history.append(trainable_layers(self.model))

    def on_train_begin(self, args, state, control, **kwargs):
        self._apply(0)
        self._epoch_started = 0

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = int(round(state.epoch or 0))
        if epoch > 0:
            self._apply(epoch)


def _module_prefix(model, target) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    raise ValueError("module not found in model")  # pragma: no cover


def layerwise_rates(model, peak: float, decay: float) -> dict[str, float]:
    """Rate per part for layer-wise decay: top layer ``peak``, each layer below x ``decay``, embeddings lowest."""
    n = n_layers(model)
    rates = {f"layer {i}": peak * decay ** (n - 1 - i) for i in range(n)}
    rates["embeddings"] = peak * decay**n
    return rates


def layerwise_lr_mapping(model, peak: float, decay: float) -> dict[str, float]:
    """``learning_rate_mapping`` for the trainer: regex of each layer's parameter names -> its rate.

    Patterns are built from the model's own module paths (``0.model.encoder.layer.3.``),
    so they work for any backbone layout and never match a neighbouring index.
    """
    if decay == 1.0:
        return {}
    rates = layerwise_rates(model, peak, decay)
    mapping = {}
    for i, layer in enumerate(encoder_layers(model)):
        mapping[re.escape(_module_prefix(model, layer)) + r"\."] = rates[f"layer {i}"]
    mapping[re.escape(_module_prefix(model, embeddings(model))) + r"\."] = rates["embeddings"]
    return mapping
