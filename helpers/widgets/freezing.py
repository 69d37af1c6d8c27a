"""The layer picker (notebook 02): one toggle per part; trainable weights, compute and AdamW memory follow."""
from __future__ import annotations

import ipywidgets as W

from ..freezing import adamw_state_bytes, part_modules, step_cost
from ..models import count_parameters, load_model, n_layers
from ..settings import TrainConfig
from .common import css_hooks
from .dashboard import TrainingDashboard


def picker_state(model, frozen) -> dict:
    """What the layer picker shows for a set of frozen part names: counts, relative compute, AdamW memory
    (notebook 02)."""
    frozen = set(frozen)
    modules = part_modules(model)
    part_params = {name: count_parameters(m) for name, m in modules.items()}
    shaping = sum(part_params.values()) + sum(count_parameters(m) for i, m in enumerate(model) if i > 0)
    trainable = shaping - sum(part_params[p] for p in frozen)
    full = adamw_state_bytes(shaping)
    return {
        "frozen": [p for p in modules if p in frozen],
        "trainable_params": trainable,
        "total_params": shaping,
        "compute": step_cost(n_layers(model), frozen),
        "adamw_mb": adamw_state_bytes(trainable) / 2**20,
        "adamw_full_mb": full / 2**20,
        "nothing_trainable": trainable == 0,
    }


class LayerPicker:
    """One toggle per part (embeddings, then every transformer layer, read from the model): pressed = frozen
    (notebook 02).

    The trainable parameters, the compute per step relative to full training
    (:func:`helpers.freezing.step_cost`) and the AdamW state (8 bytes per
    trainable parameter) update as you click. ``config()`` gives a
    :class:`TrainConfig` with ``frozen_parts``; ``connect(dashboard)`` adds a
    button that trains that choice in a :class:`TrainingDashboard`.
    """

    def __init__(self, model=None, frozen=()):
        self.model = model if model is not None else load_model(device="cpu")
        self.parts = list(part_modules(self.model))
        counts = {n: count_parameters(m) for n, m in part_modules(self.model).items()}
        self.toggles = {}
        for name in reversed(self.parts):  # top layer first, as the model is usually drawn
            t = W.ToggleButton(value=name in set(frozen), description=name, tooltip=f"{counts[name]:,} parameters",
                               layout=W.Layout(width="260px"))
            t.observe(self._update, names="value")
            css_hooks("picker", toggle=t)
            self.toggles[name] = t
        self.info = W.HTML()
        self.train_button: W.Button | None = None
        self.widget = W.VBox([W.HTML("<b>Press a part to freeze it</b> (top of the model first)"),
                              *self.toggles.values(), self.info])
        css_hooks("picker", widget=self.widget, info=self.info)
        self.state: dict = {}
        self._update()

    def frozen(self) -> tuple[str, ...]:
        """The frozen parts, bottom first."""
        return tuple(p for p in self.parts if self.toggles[p].value)

    def set_frozen(self, parts) -> None:
        for name, t in self.toggles.items():
            t.value = name in set(parts)

    def _update(self, change=None) -> None:
        for t in self.toggles.values():
            t.icon = "snowflake-o" if t.value else "fire"
            t.button_style = "info" if t.value else "warning"
        s = self.state = picker_state(self.model, self.frozen())
        warn = "<br><b style='color:#b00'>nothing left to train</b>" if s["nothing_trainable"] else ""
        self.info.value = (f"trainable: <b>{s['trainable_params']:,}</b> of {s['total_params']:,} parameters "
                           f"({s['trainable_params'] / s['total_params']:.0%})<br>"
                           f"compute per step: <b>{s['compute']:.0%}</b> of full training "
                           f"(at most {1 / s['compute']:.2f}x faster)<br>"
                           f"AdamW state: <b>{s['adamw_mb']:.0f} MB</b> (full training {s['adamw_full_mb']:.0f} MB)"
                           + warn)
        if self.train_button is not None:
            self.train_button.disabled = s["nothing_trainable"]

    def config(self, base: TrainConfig | None = None) -> TrainConfig:
        """The choice as a training configuration (``frozen_parts``; no other freezing)."""
        frozen = self.frozen()
        return (base or TrainConfig()).replace(frozen_parts=frozen or None, freeze_layers=0, freeze_embeddings=False,
                                               gradual_unfreezing=False)

    def connect(self, dashboard: "TrainingDashboard") -> W.Button:
        """Add a "train with this choice" button that starts ``dashboard`` with :meth:`config`."""
        self.train_button = W.Button(description="train with this choice", button_style="primary",
                                     layout=W.Layout(width="220px"))
        self.train_button.on_click(lambda _: dashboard.start(self.config(dashboard.config)))
        css_hooks("picker", train=self.train_button)
        self.widget.children = (*self.widget.children, self.train_button)
        self._update()
        return self.train_button

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


__all__ = ["picker_state", "LayerPicker"]
