"""The widgets' callbacks, driven without a browser: moving a control redraws; the dashboard trains and stops."""
import threading

import pytest

from helpers.schedules import lr_curve
from helpers.training import TrainConfig
from helpers.widgets import ScheduleExplorer, TrainingDashboard, explorer_state


def test_explorer_state_counts_steps():
    s = explorer_state("linear", 2e-5, 0.1, 1e-6, epochs=2, batch_size=16, data_size=1000)
    assert s["steps_per_epoch"] == 63 and s["total_steps"] == 126 and s["warmup_steps"] == 13
    assert s["rates"] == lr_curve("linear", 2e-5, 126, 0.1)


def test_moving_controls_updates_curve_and_numbers():
    ex = ScheduleExplorer(data_size=1000)
    png, info = ex.image.value, ex.info.value
    assert "<b>63</b> optimizer steps" in info
    ex.batch_size.value = 32
    assert "<b>32</b> optimizer steps" in ex.info.value and ex.image.value != png
    ex.schedule.value = "cosine_floor"
    assert not ex.floor.disabled and ex.state["rates"][-1] >= ex.floor.value * 0.999
    ex.warmup.value = 0.0
    assert "<b>0</b> of them warm-up" in ex.info.value
    ex.epochs.value = 3
    assert ex.state["total_steps"] == 96
    cfg = ex.config()
    assert (cfg.schedule, cfg.batch_size, cfg.epochs, cfg.train_size) == ("cosine_floor", 32, 3, 1000)
    assert cfg.floor == pytest.approx(ex.floor.value)


@pytest.mark.slow
def test_explorer_button_starts_the_dashboard(sts_small):
    ex = ScheduleExplorer(data_size=1000, batch_size=8)
    dash = TrainingDashboard(TrainConfig(max_seq_length=32, evals_per_epoch=1), data=sts_small)
    button = ex.connect(dash)
    assert button in ex.widget.children
    # the explorer now counts the steps for the pairs the dashboard will really train on
    assert ex.data_size.value == len(sts_small.train) and ex.data_size.disabled
    assert f"<b>{-(-len(sts_small.train) // 8)}</b> optimizer steps" in ex.info.value
    ex.epochs.value = 1
    button.click()
    result = dash.wait()
    assert result.steps == 4 and result.config["batch_size"] == 8
    assert dash.progress.value == 4 and dash.progress.bar_style == "success" and "finished" in dash.status.value
    assert dash.draws >= 1 and dash.image.value


@pytest.mark.slow
def test_dashboard_stop_keeps_the_partial_result(sts_small):
    dash = TrainingDashboard(TrainConfig(max_seq_length=32, batch_size=8, evals_per_epoch=1, epochs=20),
                             data=sts_small, redraw_every=0.0)
    first_step = threading.Event()
    original = dash._on_update

    def spy(result, state):
        original(result, state)
        if state.global_step >= 1:
            first_step.set()

    dash._on_update = spy
    dash.start()
    assert first_step.wait(300)
    dash.stop_button.click()
    result = dash.wait()
    assert result.stop_reason == "stopped" and 1 <= result.steps < 80
    assert result.train_loss and result.model is not None
    assert dash.progress.bar_style == "warning"
    assert dash.train_button.disabled is False and dash.stop_button.disabled is True


def test_dashboard_shows_errors_and_reraises(sts_small):
    dash = TrainingDashboard(TrainConfig(learning_rate=-1.0), data=sts_small)
    dash.start()
    with pytest.raises(ValueError, match="learning_rate"):
        dash.wait()
    assert "error" in dash.status.value and dash.progress.bar_style == "danger"
