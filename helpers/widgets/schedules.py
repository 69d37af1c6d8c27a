"""The schedule explorer (notebook 01): sliders for a schedule; the curve, total and warm-up steps follow."""
from __future__ import annotations

import ipywidgets as W
from matplotlib.figure import Figure

from ..batching import steps_per_epoch
from ..config import get_scale
from ..schedules import SCHEDULE_LABELS, SCHEDULES, lr_curve, warmup_steps
from ..settings import TrainConfig
from .common import css_hooks, figure_png
from .dashboard import TrainingDashboard


def explorer_state(schedule: str, peak: float, warmup: float, floor: float, epochs: int, batch_size: int,
                   data_size: int) -> dict:
    """What the explorer shows for these settings: total and warm-up steps and the rate per step (notebook 01)."""
    total = steps_per_epoch(data_size, batch_size) * epochs
    floor = min(floor, peak * 0.999)
    return {
        "total_steps": total,
        "warmup_steps": warmup_steps(total, warmup),
        "steps_per_epoch": steps_per_epoch(data_size, batch_size),
        "rates": lr_curve(schedule, peak, total, warmup, floor=floor),
    }


class ScheduleExplorer:
    """Sliders and dropdowns for a schedule; the curve, total steps and warm-up steps update as they move
    (notebook 01).

    ``explorer.config()`` turns the current settings into a :class:`TrainConfig`;
    ``connect(dashboard)`` adds a "train with these settings" button.
    """

    def __init__(self, schedule: str = "linear", peak: float = 2e-5, warmup: float = 0.1, floor: float = 1e-6,
                 epochs: int = 1, batch_size: int = 16, data_size: int | None = None):
        data_size = data_size or get_scale().train_size or 5749
        style = {"description_width": "110px"}
        self.schedule = W.Dropdown(options=[(SCHEDULE_LABELS[s], s) for s in SCHEDULES], value=schedule,
                                   description="schedule", style=style)
        self.peak = W.FloatLogSlider(value=peak, base=10, min=-6, max=-3, step=0.05, description="peak rate",
                                     readout_format=".1e", style=style)
        self.warmup = W.FloatSlider(value=warmup, min=0.0, max=0.5, step=0.01, description="warm-up fraction",
                                    style=style)
        self.floor = W.FloatLogSlider(value=floor, base=10, min=-8, max=-4, step=0.1, description="floor",
                                      readout_format=".1e", style=style)
        self.epochs = W.IntSlider(value=epochs, min=1, max=10, description="epochs", style=style)
        self.batch_size = W.Dropdown(options=[8, 16, 32, 64, 128, 256], value=batch_size, description="batch size",
                                     style=style)
        self.data_size = W.IntSlider(value=data_size, min=64, max=5749, step=1, description="training pairs",
                                     style=style)
        self.info = W.HTML()
        self.image = W.Image(format="png", layout=W.Layout(width="640px"))
        self.controls = [self.schedule, self.peak, self.warmup, self.floor, self.epochs, self.batch_size,
                         self.data_size]
        for c in self.controls:
            c.observe(self._update, names="value")
        self.train_button: W.Button | None = None
        self.widget = W.VBox([W.HBox([W.VBox(self.controls[:4]), W.VBox(self.controls[4:])]), self.info, self.image])
        css_hooks("explorer", widget=self.widget, info=self.info, plot=self.image, schedule=self.schedule,
                  peak=self.peak, warmup=self.warmup, floor=self.floor, epochs=self.epochs,
                  batch_size=self.batch_size, data_size=self.data_size)
        self.state: dict = {}
        self._update()

    def values(self) -> dict:
        return {"schedule": self.schedule.value, "peak": self.peak.value, "warmup": self.warmup.value,
                "floor": self.floor.value, "epochs": self.epochs.value, "batch_size": self.batch_size.value,
                "data_size": self.data_size.value}

    def _update(self, change=None) -> None:
        v = self.values()
        self.state = explorer_state(**v)
        self.floor.disabled = v["schedule"] not in ("cosine_floor", "wsd")
        self.info.value = (f"{SCHEDULE_LABELS[v['schedule']]}: <b>{self.state['total_steps']}</b> optimizer steps "
                           f"({self.state['steps_per_epoch']} per epoch x {v['epochs']}), "
                           f"<b>{self.state['warmup_steps']}</b> of them warm-up; "
                           f"rate at the last step: {self.state['rates'][-1]:.2e}")
        fig = Figure(figsize=(7, 2.8))
        ax = fig.add_subplot()
        ax.plot(range(1, len(self.state["rates"]) + 1), self.state["rates"], color="#3b75af")
        if self.state["warmup_steps"]:
            ax.axvspan(0.5, self.state["warmup_steps"] + 0.5, color="orange", alpha=0.15, label="warm-up")
            ax.legend(fontsize=8)
        ax.set(xlabel="optimizer step", ylabel="learning rate", title=SCHEDULE_LABELS[v["schedule"]])
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        fig.tight_layout()
        self.image.value = figure_png(fig)

    def config(self, base: TrainConfig | None = None) -> TrainConfig:
        """The explorer's settings as a training configuration."""
        v = self.values()
        return (base or TrainConfig()).replace(
            schedule=v["schedule"], learning_rate=v["peak"], warmup_fraction=v["warmup"],
            floor=v["floor"] if v["schedule"] in ("cosine_floor", "wsd") else None,
            epochs=v["epochs"], batch_size=v["batch_size"], train_size=v["data_size"])

    def connect(self, dashboard: "TrainingDashboard") -> W.Button:
        """Add a "train with these settings" button that starts ``dashboard`` with :meth:`config`."""
        self.train_button = W.Button(description="train with these settings", button_style="primary",
                                     layout=W.Layout(width="220px"))

        def go(_):
            dashboard.start(self.config(dashboard.config))

        if getattr(dashboard, "data", None) is not None:
            # The dashboard trains on its prepared data: count the steps for exactly that many pairs.
            n = len(dashboard.data.train)
            self.data_size.min = min(self.data_size.min, n)
            self.data_size.value = n
            self.data_size.disabled = True
            self.data_size.description_tooltip = "fixed by the dashboard's prepared data"
        self.train_button.on_click(go)
        css_hooks("explorer", train=self.train_button)
        self.widget.children = (*self.widget.children, self.train_button)
        return self.train_button

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


__all__ = ["explorer_state", "ScheduleExplorer"]
