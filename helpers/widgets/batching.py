"""The batch calculator (notebook 03): batch, accumulation, devices, data and base rate in; steps and rates out, live.

Drawn like the other widgets (:mod:`helpers.widgets.common`): matplotlib into an
``ipywidgets.Image``, so every change replaces one picture, and every
callback can be driven without a browser (``tests/test_batching.py``).
"""
from __future__ import annotations

import ipywidgets as W
import numpy as np
from matplotlib.figure import Figure

from ..batching import RULE_EXPONENTS, batch_plan, in_batch_negatives
from ..settings import TrainConfig
from .common import css_hooks, figure_png


def gathered(batch_size: int, devices: int) -> str:
    """The calculator's note on how MNRL's negatives add up over several devices (notebook 03): the devices'
    embeddings are gathered (``TrainConfig.gather_across_devices``, the default)."""
    if devices == 1:
        return ""
    return f" ({batch_size} x {devices} devices - 1: the devices' embeddings are gathered)"


RULE_LABELS = {"none": "keep the rate", "sqrt": "square root (Adam)", "linear": "linear (SGD)"}


class BatchCalculator:
    """Per-device batch, accumulation steps, devices, data size, epochs and base rate in; out, as they move:
    the effective batch, optimizer steps per epoch, total and warm-up steps, and the rate under each rule
    (notebook 03).

    ``calc.plan`` holds the numbers (:func:`helpers.batching.batch_plan`);
    ``calc.config()`` turns the settings into a :class:`TrainConfig` (one
    process: ``devices`` is for planning only); ``connect(dashboard)`` adds a
    "train with these settings" button.
    """

    def __init__(self, batch_size: int = 16, grad_accum: int = 1, devices: int = 1, data_size: int = 1000,
                 epochs: int = 1, base_lr: float = 2e-5, base_batch: int = 16, warmup: float = 0.1,
                 rule: str = "sqrt"):
        style = {"description_width": "130px"}
        sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
        self.batch_size = W.Dropdown(options=sizes, value=batch_size, description="batch per device", style=style)
        self.grad_accum = W.IntSlider(value=grad_accum, min=1, max=64, description="accumulation steps", style=style)
        self.devices = W.IntSlider(value=devices, min=1, max=16, description="devices", style=style)
        self.data_size = W.BoundedIntText(value=data_size, min=1, max=100_000_000, description="training examples",
                                          style=style)
        self.epochs = W.IntSlider(value=epochs, min=1, max=20, description="epochs", style=style)
        self.base_lr = W.FloatLogSlider(value=base_lr, base=10, min=-6, max=-3, step=0.05, readout_format=".1e",
                                        description="base rate", style=style)
        self.base_batch = W.Dropdown(options=sizes, value=base_batch, description="chosen at batch", style=style)
        self.warmup = W.FloatSlider(value=warmup, min=0.0, max=0.5, step=0.01, description="warm-up fraction",
                                    style=style)
        self.rule = W.Dropdown(options=[(RULE_LABELS[r], r) for r in RULE_EXPONENTS], value=rule,
                               description="rule to train with", style=style)
        self.controls = [self.batch_size, self.grad_accum, self.devices, self.data_size, self.epochs,
                         self.base_lr, self.base_batch, self.warmup, self.rule]
        for c in self.controls:
            c.observe(self._update, names="value")
        self.info = W.HTML()
        self.image = W.Image(format="png", layout=W.Layout(width="520px"))
        self.train_button: W.Button | None = None
        self.widget = W.VBox([W.HBox([W.VBox(self.controls[:5]), W.VBox(self.controls[5:])]),
                              W.HBox([self.info, self.image])])
        css_hooks("calculator", widget=self.widget, info=self.info, plot=self.image, batch_size=self.batch_size,
                  grad_accum=self.grad_accum, devices=self.devices, data_size=self.data_size, epochs=self.epochs,
                  base_lr=self.base_lr, base_batch=self.base_batch, warmup=self.warmup, rule=self.rule)
        self.plan: dict = {}
        self._update()

    def values(self) -> dict:
        return {"batch_size": self.batch_size.value, "grad_accum": self.grad_accum.value,
                "devices": self.devices.value, "data_size": self.data_size.value, "epochs": self.epochs.value,
                "base_lr": self.base_lr.value, "base_batch": self.base_batch.value,
                "warmup_fraction": self.warmup.value}

    def _update(self, change=None) -> None:
        v = self.values()
        try:
            p = self.plan = batch_plan(**v)
        except ValueError as exc:  # e.g. more devices than full batches: say so instead of a traceback
            self.info.value = f"<p style='max-width:430px'><b>No plan:</b> {exc}</p>"
            return
        eff, chosen = p["effective_batch"], self.rule.value
        rates = "".join(
            f"<tr><td>{RULE_LABELS[r]}</td><td><b>{lr:.2e}</b>{' &larr; used' if r == chosen else ''}</td></tr>"
            for r, lr in ((r, p["rates"][r]) for r in RULE_EXPONENTS))
        cached_batch = eff // v["devices"]
        self.info.value = (
            f"<table>"
            f"<tr><td>effective batch</td><td><b>{eff}</b> = {v['batch_size']} x {v['grad_accum']} x {v['devices']}</td></tr>"
            f"<tr><td>optimizer steps per epoch</td><td><b>{p['steps_per_epoch']}</b></td></tr>"
            f"<tr><td>total steps</td><td><b>{p['total_steps']}</b>, of them warm-up <b>{p['warmup_steps']}</b></td></tr>"
            f"{rates}</table>"
            f"<p style='max-width:430px'>In-batch losses (MNRL): each anchor meets <b>{p['negatives']}</b> negatives"
            f"{gathered(v['batch_size'], v['devices'])}; accumulation adds none. CachedMNRL with batch_size={cached_batch} "
            f"and mini_batch_size={v['batch_size']} gives <b>{in_batch_negatives(cached_batch, v['devices'])}</b> at "
            f"the memory of a batch of {v['batch_size']}.</p>")
        fig = Figure(figsize=(5.2, 3.0))
        ax = fig.add_subplot()
        xs = np.geomspace(1, max(1024, eff * 2), 60)
        for r, e in RULE_EXPONENTS.items():
            ax.plot(xs, v["base_lr"] * (xs / v["base_batch"]) ** e, label=RULE_LABELS[r],
                    lw=2.2 if r == chosen else 1.0)
        ax.scatter([eff], [p["rates"][chosen]], color="tab:red", zorder=3, s=40)
        ax.axvline(v["base_batch"], color="grey", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set(xlabel="effective batch", ylabel="peak rate", title="rate under each rule")
        ax.legend(fontsize=7)
        fig.tight_layout()
        self.image.value = figure_png(fig)

    def config(self, base: TrainConfig | None = None) -> TrainConfig:
        """The settings as a training configuration (the chosen rule scales ``base_lr`` from ``base_batch``)."""
        v = self.values()
        return (base or TrainConfig()).replace(
            batch_size=v["batch_size"], grad_accum=v["grad_accum"], learning_rate=v["base_lr"],
            base_batch_size=v["base_batch"], lr_scaling=self.rule.value, warmup_fraction=v["warmup_fraction"],
            epochs=v["epochs"], train_size=v["data_size"])

    def connect(self, dashboard) -> W.Button:
        """Add a "train with these settings" button that starts ``dashboard`` with :meth:`config`."""
        self.train_button = W.Button(description="train with these settings", button_style="primary",
                                     layout=W.Layout(width="220px"))
        self.train_button.on_click(lambda _: dashboard.start(self.config(dashboard.config)))
        css_hooks("calculator", train=self.train_button)
        self.widget.children = (*self.widget.children, self.train_button)
        return self.train_button

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


__all__ = ["RULE_LABELS", "BatchCalculator"]
