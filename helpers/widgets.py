"""Widgets for live tweaking: the schedule explorer and the live training dashboard (notebook 01 on).

Both draw with matplotlib into an ``ipywidgets.Image`` (PNG bytes), so an
update replaces one image instead of stacking output frames, and updates can
come from the training thread. The dashboard trains in a background thread
so its Stop button is heard while the run goes on; ``wait()`` blocks until the
run ends (and turns a kernel interrupt into a clean stop).
"""
from __future__ import annotations

import io
import threading
import time

import ipywidgets as W
from matplotlib.figure import Figure

from .config import get_scale
from .schedules import SCHEDULE_LABELS, SCHEDULES, lr_curve, warmup_steps
from .training import StopFlag, TrainConfig, steps_per_epoch, train


def figure_png(fig: Figure) -> bytes:
    """Render a matplotlib figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def css_hooks(prefix: str, **parts) -> None:
    """Give widgets stable CSS classes, ``hp-<prefix>-<part>``, that the browser test (tests/browser) finds."""
    for part, widget in parts.items():
        widget.add_class(f"hp-{prefix}-{part.replace('_', '-')}")


def explorer_state(schedule: str, peak: float, warmup: float, floor: float, epochs: int, batch_size: int,
                   data_size: int) -> dict:
    """What the explorer shows for these settings: total and warm-up steps and the rate per step."""
    total = steps_per_epoch(data_size, batch_size) * epochs
    floor = min(floor, peak * 0.999)
    return {
        "total_steps": total,
        "warmup_steps": warmup_steps(total, warmup),
        "steps_per_epoch": steps_per_epoch(data_size, batch_size),
        "rates": lr_curve(schedule, peak, total, warmup, floor=floor),
    }


class ScheduleExplorer:
    """Sliders and dropdowns for a schedule; the curve, total steps and warm-up steps update as they move.

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


class TrainingDashboard:
    """A live view of one training run: rate, training loss, validation loss and metric, progress, Stop.

    ``start()`` trains in a background thread (the Stop button stays live);
    ``wait()`` blocks until it ends; ``run()`` does both. ``result`` holds the
    :class:`helpers.training.TrainResult`, also after a Stop.
    """

    def __init__(self, config: TrainConfig | None = None, data=None, redraw_every: float = 1.0, **train_kwargs):
        self.config = config or TrainConfig()
        self.data = data
        self.train_kwargs = train_kwargs
        self.redraw_every = redraw_every
        self.result = None
        self.error: BaseException | None = None
        self.stop_flag = StopFlag()
        self._thread: threading.Thread | None = None
        self._last_draw = 0.0
        self.progress = W.IntProgress(value=0, min=0, max=1, description="steps", bar_style="info")
        self.status = W.HTML("ready")
        self.stop_button = W.Button(description="Stop", button_style="danger", disabled=True, icon="stop")
        self.train_button = W.Button(description="Train", button_style="primary", icon="play")
        self.stop_button.on_click(lambda _: self.stop())
        self.train_button.on_click(lambda _: self.start())
        self.image = W.Image(format="png", layout=W.Layout(width="900px"))
        self.widget = W.VBox([W.HBox([self.train_button, self.stop_button, self.progress]), self.status, self.image])
        css_hooks("dashboard", widget=self.widget, train=self.train_button, stop=self.stop_button,
                  progress=self.progress, status=self.status, plot=self.image)
        self.draws = 0

    # ----------------------------------------------------------------- control
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, config: TrainConfig | None = None) -> None:
        """Start training ``config`` (or the dashboard's own) in the background."""
        if self.running:
            self.status.value = "a run is already in progress: press Stop first"
            return
        if config is not None:
            self.config = config
        self.stop_flag.clear()
        self.result, self.error = None, None
        self.progress.value, self.progress.bar_style = 0, "info"
        self.train_button.disabled, self.stop_button.disabled = True, False
        self.status.value = "loading the model and data..."
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the run to end cleanly at the next optimizer step (the result so far is kept)."""
        self.stop_flag.set()
        self.status.value = "stopping after this step..."

    def wait(self, timeout: float | None = None):
        """Block until the run ends; a kernel interrupt stops the run cleanly instead of killing it."""
        try:
            while self.running:
                self._thread.join(0.2 if timeout is None else timeout)
                if timeout is not None:
                    break
        except KeyboardInterrupt:
            self.stop()
            self._thread.join()
        if self.error is not None:
            raise self.error
        return self.result

    def run(self, config: TrainConfig | None = None):
        """Start and wait (a notebook cell that should finish before the next one runs)."""
        self.start(config)
        return self.wait()

    # ----------------------------------------------------------------- work
    def _run(self) -> None:
        try:
            self.result = train(self.config, data=self.data, stop=self.stop_flag, on_update=self._on_update,
                                progress=False, **self.train_kwargs)
            self._draw(self.result, force=True)
            r = self.result
            self.progress.bar_style = "success" if r.stop_reason == "finished" else "warning"
            test = "" if r.test_metric != r.test_metric else f", test {r.metric} {r.test_metric:.4f}"
            self.status.value = (f"<b>{r.stop_reason}</b> after {r.steps} steps in {r.wall_time:.0f} s"
                                 f" (dev {r.metric} {r.dev_metric:.4f}{test})")
        except BaseException as exc:  # shown in the dashboard, re-raised by wait()
            self.error = exc
            self.progress.bar_style = "danger"
            self.status.value = f"<b>error</b>: {type(exc).__name__}: {exc}"
        finally:
            self.train_button.disabled, self.stop_button.disabled = False, True

    def _on_update(self, result, state) -> None:
        self.progress.max = max(1, state.max_steps)
        self.progress.value = state.global_step
        loss = f"loss {result.train_loss[-1]['loss']:.3f}" if result.train_loss else ""
        dev = [e for e in result.evals if e.get("metric") is not None]
        dev_s = f", dev {result.metric} {dev[-1]['metric']:.4f}" if dev else ""
        self.status.value = f"step {state.global_step}/{state.max_steps}: {loss}{dev_s}"
        self._draw(result)

    def _draw(self, result, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < self.redraw_every:
            return
        self._last_draw = now
        self.image.value = figure_png(dashboard_figure(result))
        self.draws += 1

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def dashboard_figure(result) -> Figure:
    """Four panels of a (possibly unfinished) run: rate, training loss, validation loss, validation metric."""
    fig = Figure(figsize=(12, 2.8))
    axes = fig.subplots(1, 4)
    axes[0].plot(range(1, len(result.lr) + 1), result.lr)
    axes[0].set(title="learning rate", xlabel="step")
    axes[0].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    axes[1].plot([p["step"] for p in result.train_loss], [p["loss"] for p in result.train_loss], lw=1)
    axes[1].set(title="training loss", xlabel="step")
    ev = [e for e in result.evals if e.get("loss") is not None]
    axes[2].plot([e["step"] for e in ev], [e["loss"] for e in ev], marker="o", color="tab:orange")
    axes[2].set(title="validation loss", xlabel="step")
    ev = [e for e in result.evals if e.get("metric") is not None]
    axes[3].plot([e["step"] for e in ev], [e["metric"] for e in ev], marker="o", color="tab:green")
    axes[3].set(title=f"validation {result.metric}", xlabel="step")
    fig.tight_layout()
    return fig


def picker_state(model, frozen) -> dict:
    """What the layer picker shows for a set of frozen part names: counts, relative compute, AdamW memory."""
    from .freezing import adamw_state_bytes, part_modules, step_cost
    from .models import count_parameters, n_layers

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
    """One toggle per part (embeddings, then every transformer layer, read from the model): pressed = frozen.

    The trainable parameters, the compute per step relative to full training
    (:func:`helpers.freezing.step_cost`) and the AdamW state (8 bytes per
    trainable parameter) update as you click. ``config()`` gives a
    :class:`TrainConfig` with ``frozen_parts``; ``connect(dashboard)`` adds a
    button that trains that choice in a :class:`TrainingDashboard`.
    """

    def __init__(self, model=None, frozen=()):
        from .freezing import part_modules
        from .models import count_parameters, load_model

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
