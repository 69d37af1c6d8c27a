"""Notebook 07's bar (helpers.target): the tuned recipe against the common default and the library's example,
computed from records built here (nothing trains)."""
import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from helpers import claims as C  # noqa: E402
from helpers import reference as R  # noqa: E402
from helpers import target as T  # noqa: E402
from helpers.plots import plot_epoch_transfer, plot_recipe_bar  # noqa: E402

EXP = C.experiment(T.EXPERIMENT)


def records_of(scores: dict[str, tuple]) -> dict:
    """Stored-looking records of the real ``recipe_target`` arms, one per seed, with a 3-point dev curve."""
    records = {}
    for arm, tests in scores.items():
        for seed, test in enumerate(tests):
            key = R.exp_run_key(EXP, R.run_config(EXP, arm, None, seed))
            evals = [{"epoch": e, "step": int(e * 360), "metric": test + 0.02 * e / 4, "loss": None} for e in (0, 2, 4)]
            records[key] = {"key": key, "kind": "run", "seed": seed, "metric": "Spearman", "device": "cpu",
                            "metrics": {"dev": test + 0.02, "test": test}, "wall_s": 780.0 + seed, "versions": {},
                            "evals": evals}
    return records


def test_the_bar_names_real_arms_of_the_experiment():
    assert T.TUNED in EXP.arms and set(T.BASELINES) <= set(EXP.arms)
    for arm in EXP.arms:  # every arm trains 4 epochs on all of STS-B, scored on the whole test split
        cfg = R.run_config(EXP, arm, None, 0)
        assert (cfg.epochs, cfg.train_size, cfg.test_size, cfg.task) == (4, "all", "all", "stsb")


def test_a_tuned_arm_above_target_and_both_baselines_clears_the_bar():
    runs = T.bar_runs(records_of({"common default": (0.866, 0.865, 0.867, 0.866),
                                  "library example": (0.864, 0.866, 0.865, 0.864),
                                  T.TUNED: (0.872, 0.873, 0.874, 0.873)}))
    check = T.bar_check(runs, {"dev": 0.8672, "test": 0.8203})
    assert check["cleared"] and check["reaches_target"] and check["seeds"] == 4
    assert check["beats"] == {"common default": True, "library example": True}
    assert check["mean"] == pytest.approx(0.873)
    assert "clears the bar" in check["verdict"] and "goal" in check["verdict"]
    assert [c.b for c in check["comparisons"]] == list(T.BASELINES)
    assert all(c.paired and c.n == 3 for c in check["comparisons"])  # seed 0 left out: the arm was picked on it


def test_a_tuned_arm_below_target_does_not_clear_it_even_when_it_wins():
    runs = T.bar_runs(records_of({"common default": (0.860, 0.861, 0.859, 0.860),
                                  "library example": (0.858, 0.857, 0.859, 0.858),
                                  T.TUNED: (0.866, 0.867, 0.868, 0.867)}))
    check = T.bar_check(runs)
    assert check["beats"] == {"common default": True, "library example": True}
    assert not check["reaches_target"] and not check["cleared"]
    assert "below the 0.87 target" in check["verdict"]


def test_an_interval_that_reaches_zero_is_not_a_win():
    runs = T.bar_runs(records_of({"common default": (0.871, 0.878, 0.869, 0.874),
                                  "library example": (0.860, 0.861, 0.862, 0.860),
                                  T.TUNED: (0.875, 0.872, 0.874, 0.873)}))
    check = T.bar_check(runs)
    assert check["reaches_target"] and not check["cleared"]
    assert check["beats"] == {"common default": False, "library example": True}
    assert "not shown to beat the common default" in check["verdict"]


def test_missing_runs_are_named():
    runs = T.bar_runs(records_of({"common default": (0.866, 0.865), T.TUNED: (0.872, 0.873)}))
    check = T.bar_check(runs)
    assert not check["cleared"] and "the library example has no paired runs yet" in check["verdict"]
    assert "No runs of" in T.bar_check(T.bar_runs({}))["verdict"]


def test_table_curves_and_plot_come_from_the_records():
    runs = T.bar_runs(records_of({"common default": (0.866, 0.865, 0.867), T.TUNED: (0.872, 0.873, 0.874)}))
    table = T.bar_table(runs)
    assert table.loc[T.TUNED, "seeds"] == 3 and table.loc["library example", "seeds"] == 0
    assert table.loc["common default", "test"] == pytest.approx(0.866)
    assert table.loc[T.TUNED, "minutes per run"] == pytest.approx(13.0167, abs=1e-3)
    curves = T.dev_curves(runs)
    assert set(curves) == {"common default", T.TUNED}
    assert list(curves[T.TUNED].index) == [0, 2, 4] and curves[T.TUNED].shape[1] == 3
    axes = plot_recipe_bar(runs, curves, {"dev": 0.8672, "test": 0.8203})
    assert len(axes[0].lines) == 3  # two arms and the untuned line
    dots = [len(c.get_offsets()) for c in axes[1].collections if type(c).__name__ == "PathCollection"]
    assert dots == [3, 0, 3, 0]  # a dot per seed, per arm


def test_show_bar_says_how_to_run_it_with_no_records(tmp_path, capsys):
    table = T.show_bar(store=tmp_path)
    assert "make reference EXPERIMENT=recipe_target" in capsys.readouterr().out
    assert (table["seeds"] == 0).all()


def test_show_bar_leaves_out_the_seed_an_added_arm_was_chosen_on(tmp_path, capsys, monkeypatch):
    records = records_of({"common default": (0.860, 0.861, 0.862), "one-epoch pick @ 1e-4": (0.858, 0.859, 0.857),
                          T.TUNED: (0.900, 0.863, 0.865)})
    monkeypatch.setattr(T, "load_records", lambda store=None: records)
    T.show_bar(store=tmp_path)
    out = capsys.readouterr().out.splitlines()
    line = next(x for x in out if x.startswith(T.TUNED))
    assert "(2 paired seeds" in line and "is 0.0025 higher" in line and line.endswith("(seed 0 left out: the arm "
                                                                                      "was chosen on it)")
    other = next(x for x in out if x.startswith("one-epoch pick @ 1e-4"))  # never picked: every seed counts
    assert "(3 paired seeds" in other and "left out" not in other


def test_dev_test_table_ranks_one_epoch_configurations_by_dev_and_says_where_the_dev_pick_lands_on_test():
    from helpers import transfer

    exp = sorted(transfer.TRANSFER_SOURCES)[0]
    scores = {("a", 1e-4): [(0.90, 0.850), (0.89, 0.852)], ("b", 1e-4): [(0.88, 0.862)], ("c", 5e-5): [(0.87, 0.858)],
              ("d", 2e-5): [(0.86, 0.840)]}
    records = {}
    for (arm, rate), runs in scores.items():
        for seed, (dev, test) in enumerate(runs):
            cfg = {"task": "stsb", "train_size": "all", "epochs": 1, "learning_rate": rate, "seed": seed, "loss": arm}
            key = f"{arm}-{rate}-{seed}"
            records[key] = {"key": key, "kind": "run", "experiment": exp, "arm": arm, "rate": rate, "seed": seed,
                            "config": cfg, "metrics": {"dev": dev, "test": test}}
    records["4 epochs"] = dict(records["b-0.0001-0"], key="4 epochs", config={**records["b-0.0001-0"]["config"],
                                                                              "epochs": 4})
    table = transfer.dev_test_table(records=records)
    assert list(table["configuration"].str.split(": ").str[1]) == ["a", "b", "c", "d"]  # best on dev first
    assert table.loc[0, "seeds"] == 2 and table.loc[0, "test"] == pytest.approx(0.851)
    assert list(table["rank on test"]) == [3, 1, 2, 4]
    assert table.attrs["rho"] == pytest.approx(0.4)
    text = transfer.dev_test_summary(table)
    assert "is 3 of 4 on test" in text and "best on test is" in text and ": b at 0.0001" in text


def test_epoch_table_pairs_each_four_epoch_setting_with_its_one_epoch_run_and_ranks_them():
    from helpers.refstore import exp_run_key

    four = {(T.EXPERIMENT, "common default"): (0.880, 0.866), (T.EXPERIMENT, "one-epoch pick @ 1e-4"): (0.886, 0.858),
            ("epoch_transfer", "constant @ 2e-5"): (0.870, 0.860), ("epoch_transfer", "OneCycleLR @ 1e-4"): (0.884, 0.861)}
    one = {(T.EXPERIMENT, "common default"): (0.861, 0.834), (T.EXPERIMENT, "one-epoch pick @ 1e-4"): (0.880, 0.867),
           ("epoch_transfer", "constant @ 2e-5"): (0.877, 0.856), ("epoch_transfer", "OneCycleLR @ 1e-4"): (0.875, 0.862),
           (T.EXPERIMENT, "library example"): (0.897, 0.857)}  # no four-epoch run: left out
    records = {}
    for (epochs, scores) in ((4, four), (1, one)):
        for (exp_key, arm), (dev, test) in scores.items():
            exp = C.experiment(exp_key)
            key = exp_run_key(exp, R.run_config(exp, arm, None, 0).replace(epochs=epochs))
            records[key] = {"key": key, "kind": "run", "seed": 0, "device": "cpu",
                            "metrics": {"dev": dev, "test": test, "steps": 360 * epochs}}
    table = T.epoch_table(records)
    assert list(table.index) == ["one-epoch pick @ 1e-4", "constant @ 2e-5", "OneCycleLR @ 1e-4", "common default"]
    assert list(table["rank: 4 epochs test"]) == [4, 3, 2, 1]  # one-epoch dev's order is reversed on test
    assert table.attrs["rho"] == pytest.approx(-1.0) and table.attrs["compute"] == pytest.approx(0.25)
    assert table.attrs["rho_dev"] == pytest.approx(0.4) and table.attrs["rho_final"] == pytest.approx(-0.4)
    text = T.epoch_summary(table)
    assert "rank correlation of -1.00" in text and "The best on one-epoch dev (one-epoch pick @ 1e-4) is 4 of 4" in text
    assert "the best there is common default (0.8660, 4 of 4" in text
    assert "at least 3 are needed" in T.epoch_summary(T.epoch_table({}))
    axes = plot_epoch_transfer(table)
    assert len(axes[0].collections) == 4 and len(axes[1].lines) == 4  # a dot and a line per setting
    assert [t.get_text() for t in axes[0].texts] == list(table.index) and "-1.00" in axes[0].get_title()


def test_grid_table_keeps_the_rate_best_on_dev_once_every_rate_is_in():
    """Notebook 07's narrow grid: the recipe's --space narrow keeps the best dev score, whatever test says."""
    from helpers.refstore import exp_run_key

    exp = C.experiment(T.GRID_EXPERIMENT)
    assert [R.run_config(exp, arm, None, 0).learning_rate for arm in exp.arms] == [2e-5, 3e-5, 5e-5]
    scores = dict(zip(exp.arms, [(0.880, 0.864), (0.883, 0.866), (0.885, 0.865)]))
    records = {}
    for arm, (dev, test) in scores.items():
        key = exp_run_key(exp, R.run_config(exp, arm, None, 0))
        records[key] = {"key": key, "kind": "run", "seed": 0, "device": "cpu", "wall_s": 600.0,
                        "metrics": {"dev": dev, "test": test}}
    table = T.grid_table(records)
    assert list(table["rank: dev"]) == [3, 2, 1] and list(table["rank: test"]) == [3, 1, 2]
    assert table.attrs["pick"] == "CoSENT @ 5e-5" and table.attrs["best_test"] == "CoSENT @ 3e-5"
    assert table["minutes"].tolist() == [10.0, 10.0, 10.0]
    del records[next(iter(records))]  # a rate not trained yet: no pick
    assert T.grid_table(records).attrs["pick"] is None
