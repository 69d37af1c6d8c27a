"""Notebook 03's helpers: the scaling arithmetic, accumulation against a true batch and the cached loss on the
real model, activation memory, hard negatives, AdamW's decay groups, and the batch calculator without a browser."""
import math
from types import SimpleNamespace

import pytest

from helpers import batching as B
from helpers.accumulation import chance_loss, compare_ways, gradient_agreement
from helpers.experiments import run_grid
from helpers.measure import ActivationMemory
from helpers.training import TrainConfig, steps_per_epoch, train


# ----------------------------------------------------------------------------- arithmetic


def test_rule_rates_follow_the_rules():
    r = B.rule_rates(2e-5, 16, 64)
    assert r["none"] == 2e-5 and r["sqrt"] == pytest.approx(4e-5) and r["linear"] == pytest.approx(8e-5)
    r = B.rule_rates(2e-5, 16, 8)
    assert r["sqrt"] == pytest.approx(2e-5 / math.sqrt(2)) and r["linear"] == pytest.approx(1e-5)


@pytest.mark.parametrize("n,bs,ga", [(1000, 16, 1), (1000, 16, 4), (1001, 32, 3), (5, 8, 2), (256, 64, 1)])
def test_batch_plan_counts_steps_like_the_runner(n, bs, ga):
    p = B.batch_plan(bs, ga, 1, n, epochs=2)
    assert p["steps_per_epoch"] == steps_per_epoch(n, bs, ga)
    assert p["total_steps"] == 2 * p["steps_per_epoch"]
    assert p["effective_batch"] == bs * ga


@pytest.mark.parametrize("n,bs,ga,one,two", [(100, 16, 1, 7, 3), (1000, 16, 1, 63, 31), (1000, 16, 4, 16, 8),
                                             (37, 8, 2, 3, 1)])
def test_calculator_batch_plan_and_runner_count_the_same_steps_on_1_and_2_devices(n, bs, ga, one, two):
    """One owner of the arithmetic (issue: batch_plan said 4 steps where two processes take 3)."""
    from helpers.distributed import data_parallel_steps
    from helpers.widgets import BatchCalculator

    calc = BatchCalculator(batch_size=bs, grad_accum=ga, data_size=n)
    for devices, expected in ((1, one), (2, two)):
        calc.devices.value = devices
        runner = steps_per_epoch(n, bs, ga) if devices == 1 else data_parallel_steps(n, bs, ga, devices)
        assert B.batch_plan(bs, ga, devices, n)["steps_per_epoch"] == runner == expected
        assert calc.plan["steps_per_epoch"] == expected, (devices, calc.plan)


@pytest.mark.slow
def test_one_process_trains_the_steps_the_plan_shows(sts_small):
    r = train(TrainConfig(epochs=1, batch_size=12, evals_per_epoch=0, max_seq_length=32, final_test=False),
              data=sts_small, progress=False)
    assert r.steps == B.batch_plan(12, 1, 1, len(sts_small.train))["steps_per_epoch"] == 3  # 32 rows: 12 + 12 + 8


def test_batch_plan_refuses_devices_without_a_full_batch():
    with pytest.raises(ValueError, match="no full batch"):
        B.batch_plan(16, devices=4, data_size=40)


def test_batch_plan_with_devices_and_warmup():
    p = B.batch_plan(16, grad_accum=4, devices=2, data_size=1000, epochs=3, base_lr=2e-5, base_batch=16,
                     warmup_fraction=0.1)
    assert p["effective_batch"] == 128
    assert p["steps_per_epoch"] == 8  # 1000 // 16 = 62 full batches (the short one dropped), 31 per device, / 4
    assert p["total_steps"] == 24 and p["warmup_steps"] == 3
    assert p["rates"]["linear"] == pytest.approx(16e-5) and p["rates"]["sqrt"] == pytest.approx(2e-5 * math.sqrt(8))
    assert p["forward_batch"] == 16
    with pytest.raises(ValueError, match="grad_accum"):
        B.batch_plan(16, grad_accum=0)


def test_rate_grid_shares_the_base_arm_and_orders_rules():
    grid = B.rate_grid(2e-5, 16, [8, 16, 64])
    assert len(grid) == 7  # 3 + 1 + 3
    base = [a for a in grid.values() if a["batch_size"] == 16]
    assert len(base) == 1 and base[0]["rules"] == ["none", "sqrt", "linear"]
    rates64 = sorted(a["learning_rate"] for a in grid.values() if a["batch_size"] == 64)
    assert rates64 == pytest.approx([2e-5, 4e-5, 8e-5])
    cfgs = B.grid_configs(TrainConfig(), grid)
    assert all(c.lr_scaling == "none" for c in cfgs.values())
    assert {(c.batch_size, round(c.learning_rate, 12)) for c in cfgs.values()} == \
        {(a["batch_size"], round(a["learning_rate"], 12)) for a in grid.values()}


def test_fitted_exponent_recovers_each_rule():
    batches = [8, 16, 32, 64]
    for rule, p in B.RULE_EXPONENTS.items():
        rates = [B.scaled_learning_rate(2e-5, b, 16, rule) for b in batches]
        assert B.fitted_exponent(batches, rates) == pytest.approx(p, abs=1e-9)
        assert B.nearest_rule(p + 0.1) == rule
    assert math.isnan(B.fitted_exponent([16, 16], [1e-5, 2e-5]))


def test_grid_table_and_best_rates_pick_the_best_mean():
    def run(dev, test):
        return SimpleNamespace(dev_metric=dev, test_metric=test, steps=4, wall_time=1.0, peak_memory_mb=10.0,
                               train_s_per_epoch=0.5, activation_mb=3.0)

    grid = B.rate_grid(2e-5, 16, [16, 64])
    names = list(grid)
    devs = {names[0]: [0.80, 0.82], names[1]: [0.70, 0.71], names[2]: [0.84, 0.86], names[3]: [0.83, 0.83]}
    table = B.grid_table({n: [run(d, d - 0.1) for d in v] for n, v in devs.items()}, grid)
    assert table.loc[names[2], "dev"] == pytest.approx(0.85) and table.loc[names[2], "dev sd"] > 0
    best = B.best_rates(table)
    assert list(best.index) == [16, 64]
    assert best.loc[64, "rate"] == pytest.approx(4e-5) and best.loc[64, "rules"] == "sqrt"


def test_decay_shrink_is_tiny_at_fine_tuning_rates():
    assert B.decay_shrink([2e-5] * 100, 0.01) == pytest.approx(1 - (1 - 2e-7) ** 100)
    assert B.decay_shrink([2e-5] * 100, 0.0) == 0.0
    assert B.decay_shrink([1e-3] * 1000, 0.1) == pytest.approx(1 - (1 - 1e-4) ** 1000)


def test_gradient_agreement_and_chance_loss():
    assert gradient_agreement([1.0, 0.0], [1.0, 0.0]) == {"cosine": 1.0, "rel_diff": 0.0}
    assert gradient_agreement([0.0, 1.0], [1.0, 0.0])["cosine"] == pytest.approx(0.0)
    assert chance_loss(31) == pytest.approx(math.log(32))


# ----------------------------------------------------------------------------- activation memory


def test_activation_memory_counts_saved_activations_not_weights():
    import torch

    lin = torch.nn.Linear(100, 100)

    def peak(n):
        with ActivationMemory(lin) as mem:
            x = torch.randn(n, 100)
            y = torch.relu(lin(x)).sum()
            y.backward()
        return mem

    m32, m64 = peak(32), peak(64)
    weights = sum(p.numel() * 4 for p in lin.parameters())
    assert 0 < m32.peak_bytes < weights + 32 * 100 * 4 * 3  # the input and one activation, not the weights
    assert m64.peak_bytes == 2 * m32.peak_bytes  # activations grow with the batch
    assert m64.live_bytes == 0  # everything saved was freed after backward


# ----------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def model():
    from helpers.models import load_model

    return load_model(device="cpu", max_seq_length=32)


@pytest.fixture(scope="module")
def code_small():
    from helpers.tasks import load_task

    return load_task("codesearch", train_size=32, dev_size=16, test_size=16, seed=0)


@pytest.mark.slow  # training steps' gradients on the real model, without the trainer
def test_accumulation_matches_the_true_batch_for_a_per_example_loss(model, sts_small):
    before = [p.detach().clone() for p in model.parameters()]
    out = compare_ways(model, "cosine", sts_small.train, micro=8)  # 32 at once against 4 x 8
    assert set(out) == {"true batch", "accumulated"}
    assert out["accumulated"]["loss"] == pytest.approx(out["true batch"]["loss"], rel=1e-5)
    assert out["accumulated"]["cosine"] > 0.99999 and out["accumulated"]["rel_diff"] < 1e-4
    assert out["accumulated"]["activation_mb"] < out["true batch"]["activation_mb"]
    assert all((a == b).all() for a, b in zip(before, model.parameters()))  # no weight changed
    assert model.training  # the model's mode is restored


@pytest.mark.slow  # training steps' gradients on the real model, without the trainer
def test_cached_loss_sees_all_negatives_and_accumulation_does_not(model, code_small):
    out = compare_ways(model, "mnrl", code_small.train, micro=8)  # MNRL at 32, 4 x 8 accumulated, cached 32 / 8
    true, acc, cached = out["true batch"], out["accumulated"], out["cached"]
    assert (true["negatives"], acc["negatives"], cached["negatives"]) == (31, 7, 31)
    # the cached loss is the true batch's loss and gradient, at the activation memory of a mini-batch
    assert cached["loss"] == pytest.approx(true["loss"], rel=1e-4, abs=1e-5)
    assert cached["cosine"] > 0.9999 and cached["rel_diff"] < 1e-3
    assert cached["activation_mb"] < true["activation_mb"] / 2
    # accumulation scores each anchor against 7 negatives only: a smaller, different loss and gradient
    assert acc["loss"] < true["loss"] - 1e-3
    assert acc["cosine"] < 0.999 and acc["rel_diff"] > 1e-2


@pytest.mark.slow
def test_grid_runs_measure_speed_and_activation_memory(code_small):
    base = TrainConfig(task="codesearch", loss="mnrl", max_seq_length=32, batch_size=8, evals_per_epoch=1)
    arms = {"mnrl 16": base.replace(batch_size=16), "cached 16/4": base.replace(loss="cached_mnrl", batch_size=16,
                                                                               mini_batch_size=4)}
    res = run_grid(arms, [0], data=code_small, progress=False, divergence_guard=False, speed=True, memory=True)
    for runs in res.values():
        r = runs[0]
        assert r.steps == 2 and r.train_steps_per_sec > 0 and r.train_s_per_epoch > 0 and r.activation_mb > 0
    assert res["cached 16/4"][0].activation_mb < res["mnrl 16"][0].activation_mb
    table = B.run_table(res, {"mnrl 16": {"negatives per anchor": 15}, "cached 16/4": {"negatives per anchor": 15}})
    assert list(table.index) == list(arms) and (table["stop"] == "finished").all()
    assert (table["steps"] == 2).all() and (table["negatives per anchor"] == 15).all()


def test_hard_negatives_are_other_rows_documents(model, code_small):
    hn = B.with_hard_negatives(code_small, model)
    assert hn.train.column_names == ["anchor", "positive", "negative"]
    assert 0 < len(hn.train) <= len(code_small.train) and hn.dev is code_small.dev
    positives = set(code_small.train["positive"])
    for row in hn.train:
        assert row["negative"] != row["positive"] and row["negative"] in positives


@pytest.mark.slow
def test_the_trainer_excludes_bias_and_layernorm_from_weight_decay(sts_small, fast):
    from helpers.training import train

    groups = B.decay_groups_callback()
    train(TrainConfig(weight_decay=0.1, max_steps=1), data=sts_small, callbacks=[groups], **fast)
    decayed = [n for g in groups.groups if g["weight_decay"] > 0 for n in g["names"]]
    plain = [n for g in groups.groups if g["weight_decay"] == 0 for n in g["names"]]
    assert decayed and plain and {g["weight_decay"] for g in groups.groups} == {0.0, 0.1}
    assert {g["lr"] for g in groups.groups} == {2e-5}  # the peak rate, not the warm-up's first value
    assert not [n for n in decayed if "bias" in n or "LayerNorm" in n]
    assert all("bias" in n or "LayerNorm" in n for n in plain)
    table = B.decay_table(groups.groups)
    assert table.loc["yes", "bias or LayerNorm among them"] == 0
    assert table.loc["no (0)", "bias or LayerNorm among them"] == table.loc["no (0)", "tensors"]


# ----------------------------------------------------------------------------- the calculator widget


def test_calculator_updates_live():
    from helpers.widgets import BatchCalculator

    calc = BatchCalculator(batch_size=16, data_size=1000, base_lr=2e-5, base_batch=16)
    png, info = calc.image.value, calc.info.value
    assert calc.plan["effective_batch"] == 16 and calc.plan["steps_per_epoch"] == 63
    calc.grad_accum.value = 8
    assert calc.plan["effective_batch"] == 128 and calc.plan["steps_per_epoch"] == 8
    assert calc.info.value != info and calc.image.value != png
    assert "<b>128</b>" in calc.info.value and "<b>15</b> negatives" in calc.info.value
    assert "batch_size=128 and mini_batch_size=16" in calc.info.value
    calc.devices.value = 2
    assert calc.plan["effective_batch"] == 256 and calc.plan["steps_per_epoch"] == 4
    calc.epochs.value = 5
    assert calc.plan["total_steps"] == 20 and calc.plan["warmup_steps"] == 2
    assert f"{2e-5 * 4:.2e}" in calc.info.value  # sqrt(256 / 16) = 4
    calc.rule.value = "linear"
    cfg = calc.config()
    assert (cfg.batch_size, cfg.grad_accum, cfg.lr_scaling, cfg.base_batch_size, cfg.epochs, cfg.train_size) == \
        (16, 8, "linear", 16, 5, 1000)


def test_calculator_counts_gathered_negatives():
    """With gather_across_devices (the default for MNRL) each anchor meets batch x devices - 1 negatives."""
    from helpers.widgets import BatchCalculator

    assert B.in_batch_negatives(16) == 15 and B.in_batch_negatives(16, 2) == 31 and B.in_batch_negatives(16, 4) == 63
    assert B.in_batch_negatives(16, 4, gather=False) == 15
    assert [B.batch_plan(16, ga, d)["negatives"] for ga, d in ((1, 1), (8, 1), (1, 2), (4, 4))] == [15, 15, 31, 63]
    calc = BatchCalculator(batch_size=16, devices=2, data_size=1000)
    assert "<b>31</b> negatives (16 x 2 devices - 1" in calc.info.value
    assert "batch_size=16 and mini_batch_size=16 gives <b>31</b>" in calc.info.value
    calc.grad_accum.value = 4  # accumulation adds none; CachedMNRL at 64 per device, gathered: 64 x 2 - 1
    assert "<b>31</b> negatives" in calc.info.value and "batch_size=64 and mini_batch_size=16 gives <b>127</b>" in \
        calc.info.value
    calc.devices.value = 1
    assert "<b>15</b> negatives;" in calc.info.value and "gives <b>63</b>" in calc.info.value


@pytest.mark.slow
def test_calculator_button_trains_in_the_dashboard(sts_small):
    from helpers.widgets import BatchCalculator
    from helpers.widgets import TrainingDashboard

    calc = BatchCalculator(batch_size=8, grad_accum=2, data_size=32, base_batch=8, rule="sqrt")
    dash = TrainingDashboard(TrainConfig(max_seq_length=32, evals_per_epoch=1), data=sts_small)
    button = calc.connect(dash)
    assert button in calc.widget.children
    button.click()
    result = dash.wait()
    assert result.steps == 2 and result.effective_batch == 16
    assert result.learning_rate == pytest.approx(calc.base_lr.value * math.sqrt(2))
