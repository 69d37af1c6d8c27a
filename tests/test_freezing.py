"""Freezing, gradual unfreezing, layer-wise rates and the layer picker (notebook 02), on the real model and data."""
import pytest
import torch
from transformers import TrainerCallback

from helpers import models as M
from helpers.freezing import (WeightMovement, check_part_names, lower_layers_rates, part_modules, part_names,
                              step_cost)
from helpers.training import ConfigError, TrainConfig, train, validate
from helpers.widgets import LayerPicker, TrainingDashboard, picker_state


class GrabOptimizer(TrainerCallback):
    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.optimizer = optimizer


def part_of(name: str) -> str:
    if ".embeddings." in name:
        return "embeddings"
    if "encoder.layer." in name:
        return f"layer {name.split('encoder.layer.')[1].split('.')[0]}"
    return "other"


def moved_parts(before, after):
    moved = {}
    for n, p in after.items():
        moved.setdefault(part_of(n), []).append(not torch.equal(before[n], p))
    return {part: any(flags) for part, flags in moved.items()}


@pytest.fixture(scope="module")
def model():
    return M.load_model(device="cpu", max_seq_length=32)


def test_parts_are_read_from_the_model(model):
    assert part_names(model) == ["embeddings"] + [f"layer {i}" for i in range(6)]
    assert list(part_modules(model)) == part_names(model)


@pytest.mark.slow
def test_frozen_parts_stay_bit_identical_and_the_rest_moves(sts_small, fast):
    model = M.load_model(device="cpu", max_seq_length=32)
    before = M.snapshot(model)
    r = train(TrainConfig(frozen_parts=("embeddings", "layer 1", "layer 4"), learning_rate=1e-4, max_steps=2),
              data=sts_small, model=model, **fast)
    moved = moved_parts(before, M.snapshot(model))
    assert not moved["embeddings"] and not moved["layer 1"] and not moved["layer 4"]
    assert all(moved[f"layer {i}"] for i in (0, 2, 3, 5))
    counts = {n: M.count_parameters(m) for n, m in part_modules(model).items()}
    assert r.trainable_params == M.count_parameters(model) - counts["embeddings"] - counts["layer 1"] - counts["layer 4"]


@pytest.mark.slow
def test_static_freeze_bottom_k_after_a_real_run(sts_small, fast):
    model = M.load_model(device="cpu", max_seq_length=32)
    before = M.snapshot(model)
    train(TrainConfig(freeze_layers=5, learning_rate=1e-4, max_steps=2), data=sts_small, model=model, **fast)
    moved = moved_parts(before, M.snapshot(model))
    assert [moved[f"layer {i}"] for i in range(6)] == [False] * 5 + [True] and not moved["embeddings"]


@pytest.mark.slow
def test_gradual_unfreezing_opens_layers_in_order_and_movement_shows_it(sts_small, fast):
    wm = WeightMovement()
    r = train(TrainConfig(gradual_unfreezing=True, unfreeze_start_layers=1, epochs=3, learning_rate=1e-4,
                          train_size=16), data=sts_small, callbacks=[wm], **{**fast, "evals_per_epoch": 0})
    assert r.unfreeze_history == [[5], [4, 5], [3, 4, 5]]
    assert len(wm.epochs) == 3
    for epoch, open_layers in enumerate(r.unfreeze_history):
        row = wm.epochs[epoch]
        assert row["embeddings"] == 0.0
        for i in range(6):
            assert (row[f"layer {i}"] > 0) == (i in open_layers), (epoch, i, row)
    table = wm.table()
    assert list(table.columns) == ["epoch 1", "epoch 2", "epoch 3"] and table.loc["layer 0"].sum() == 0.0


def only(rates):
    assert len(rates) == 1, rates
    return next(iter(rates))


def rates_in_optimizer(model, optimizer):
    names = {id(p): n for n, p in model.named_parameters()}
    seen = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            seen.setdefault(part_of(names[id(p)]), set()).add(group["lr"])
    return seen


@pytest.mark.slow
def test_lower_layers_rate_reaches_the_optimizer(sts_small, fast):
    grab = GrabOptimizer()
    model = M.load_model(device="cpu", max_seq_length=32)
    r = train(TrainConfig(learning_rate=5e-5, lower_layers_lr=1e-5, schedule="constant", warmup_fraction=0.0,
                          max_steps=1), data=sts_small, model=model, callbacks=[grab], **fast)
    seen = rates_in_optimizer(model, grab.optimizer)
    for i in range(6):
        assert only(seen[f"layer {i}"]) == pytest.approx(1e-5 if i < 3 else 5e-5)
    assert only(seen["embeddings"]) == pytest.approx(1e-5)
    assert r.layer_lrs == pytest.approx(lower_layers_rates(model, 5e-5, 1e-5))
    assert r.layer_lrs["layer 2"] == pytest.approx(1e-5) and r.layer_lrs["layer 3"] == pytest.approx(5e-5)


@pytest.mark.slow
def test_lower_layers_count_and_decay_reach_the_optimizer(sts_small, fast):
    grab = GrabOptimizer()
    model = M.load_model(device="cpu", max_seq_length=32)
    r = train(TrainConfig(learning_rate=4e-5, lower_layers_lr=1e-5, lower_layers=5, max_steps=1,
                          schedule="constant", warmup_fraction=0.0),
              data=sts_small, model=model, callbacks=[grab], **fast)
    seen = rates_in_optimizer(model, grab.optimizer)
    assert only(seen["layer 4"]) == pytest.approx(1e-5) and only(seen["layer 5"]) == pytest.approx(4e-5)
    assert r.layer_lrs["layer 4"] == pytest.approx(1e-5)
    grab = GrabOptimizer()
    model = M.load_model(device="cpu", max_seq_length=32)
    r = train(TrainConfig(learning_rate=4e-5, layerwise_decay=0.8, max_steps=1, schedule="constant",
                          warmup_fraction=0.0), data=sts_small, model=model,
              callbacks=[grab], **fast)
    seen = rates_in_optimizer(model, grab.optimizer)
    for i in range(6):
        assert only(seen[f"layer {i}"]) == pytest.approx(4e-5 * 0.8 ** (5 - i))
        assert r.layer_lrs[f"layer {i}"] == pytest.approx(4e-5 * 0.8 ** (5 - i))


@pytest.mark.parametrize("changes, setting", [
    ({"frozen_parts": ("layer 6",)}, "frozen_parts"),
    ({"frozen_parts": ("layer two",)}, "frozen_parts"),
    ({"frozen_parts": "embeddings"}, "frozen_parts"),
    ({"frozen_parts": ("embeddings", *(f"layer {i}" for i in range(6)))}, "frozen_parts"),
    ({"frozen_parts": ("layer 0",), "freeze_layers": 2}, "frozen_parts"),
    ({"freeze_layers": 6}, "freeze_layers"),
    ({"freeze_layers": 7}, "freeze_layers"),
    ({"lower_layers_lr": -1e-5}, "lower_layers_lr"),
    ({"lower_layers_lr": 1e-5, "layerwise_decay": 0.8}, "lower_layers_lr"),
    ({"lower_layers": 2}, "lower_layers"),
    ({"lower_layers_lr": 1e-5, "lower_layers": 7}, "lower_layers"),
    ({"lower_layers_lr": 1e-5, "lower_layers": 0}, "lower_layers"),
])
def test_impossible_freezing_is_a_config_error_before_training(sts_small, fast, changes, setting):
    with pytest.raises(ConfigError, match=setting) as err:
        validate(TrainConfig(**changes).resolved(), layers=6)
    assert err.value.setting == setting
    calls = []

    class Spy(TrainerCallback):
        def on_train_begin(self, *a, **k):
            calls.append(1)

    with pytest.raises(ConfigError):
        train(TrainConfig(**changes), data=sts_small, callbacks=[Spy()], **fast)
    assert calls == []


def test_freezing_all_layers_but_training_embeddings_is_allowed():
    validate(TrainConfig(freeze_layers=6, freeze_embeddings=False).resolved(), layers=6)
    assert check_part_names(["embeddings", "layer 5"], 6) == []


def test_step_cost_model():
    assert step_cost(6, []) == pytest.approx(1.0)
    assert step_cost(6, ["embeddings", "layer 0", "layer 1", "layer 2", "layer 3"]) == pytest.approx(10 / 18)
    # a frozen middle layer still needs its activation gradients, only its weight gradients are saved
    assert step_cost(6, ["embeddings", "layer 2"]) == pytest.approx((6 + 6 + 5) / 18)
    assert step_cost(6, ["layer 0"]) == pytest.approx((6 + 6 + 5) / 18)


def test_layer_picker_updates_counts_without_a_browser(model):
    picker = LayerPicker(model)
    assert list(picker.toggles) == [f"layer {i}" for i in range(5, -1, -1)] + ["embeddings"]
    full = picker.state["trainable_params"]
    assert picker.state["compute"] == pytest.approx(1.0) and "100%" in picker.info.value
    emb = M.count_parameters(part_modules(model)["embeddings"])
    picker.toggles["embeddings"].value = True
    assert picker.state["trainable_params"] == full - emb
    assert picker.state["adamw_mb"] == pytest.approx(8 * (full - emb) / 2**20)
    for i in range(4):
        picker.toggles[f"layer {i}"].value = True
    assert picker.frozen() == ("embeddings", "layer 0", "layer 1", "layer 2", "layer 3")
    assert picker.state["compute"] == pytest.approx(10 / 18) and "56%" in picker.info.value
    assert picker.config().frozen_parts == picker.frozen()
    picker.set_frozen(part_names(model))
    assert picker.state["nothing_trainable"] and "nothing left to train" in picker.info.value
    assert picker_state(model, [])["trainable_params"] == full


@pytest.mark.slow
def test_layer_picker_button_trains_its_choice(model, sts_small):
    picker = LayerPicker(model, frozen=("embeddings", "layer 0", "layer 1", "layer 2", "layer 3", "layer 4"))
    dash = TrainingDashboard(TrainConfig(max_seq_length=32, batch_size=8, max_steps=2, evals_per_epoch=1),
                             data=sts_small)
    button = picker.connect(dash)
    assert button in picker.widget.children and not button.disabled
    button.click()
    result = dash.wait()
    assert result.steps == 2 and tuple(result.config["frozen_parts"]) == picker.frozen()
    assert result.trainable_params == M.count_parameters(part_modules(model)["layer 5"]) + sum(
        M.count_parameters(m) for m in [getattr(M.backbone(result.model), "pooler")])
    picker.set_frozen(part_names(model))
    assert button.disabled
