"""The live training dashboard (notebooks 01-03): rate, losses and metric of one run as it trains, and Stop.

It draws with matplotlib into an ``ipywidgets.Image`` (PNG bytes), so an
update replaces one image instead of stacking output frames, and updates can
come from the training thread. The dashboard trains in a background thread
so its Stop button is heard while the run goes on; ``wait()`` blocks until the
run ends (and turns a kernel interrupt into a clean stop).
"""
from __future__ import annotations

import threading
import time

import ipywidgets as W
from matplotlib.figure import Figure

from ..callbacks import StopFlag
from ..settings import TrainConfig
from ..training import train
from .common import css_hooks, figure_png


class TrainingDashboard:
    """A live view of one training run: rate, training loss, validation loss and metric, progress, Stop
    (notebooks 01-04).

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
    """Four panels of a (possibly unfinished) run: rate, training loss, validation loss, validation metric
    (notebooks 01-04)."""
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


__all__ = ["TrainingDashboard", "dashboard_figure"]
