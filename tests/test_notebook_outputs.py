"""What nbval guards, and what a learner sees in the stored outputs (notebooks/README.md, "How they are tested").

- nbval's markers are cell tags, out of a learner's sight, never comments in the code;
- a share of the code cells is compared that cannot quietly fall (counted per notebook);
- every reference-verdict cell is compared;
- saved progress bars are finished lines of text, not widgets (tools/finish_outputs.py).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
IGNORE = {"nbval-ignore-output", "nbval-skip"}
# compared code cells per notebook when this test was written: more is welcome, fewer fails
MIN_COMPARED = {"00": 9, "01": 9, "02": 14, "03": 12, "04": 7, "05": 8, "06": 5, "07": 5}
MIN_SHARE = 0.40

spec = importlib.util.spec_from_file_location("finish_outputs", ROOT / "tools" / "finish_outputs.py")
finish_outputs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(finish_outputs)


def code_cells(path: Path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def compared(cell) -> bool:
    return not IGNORE & set(cell.metadata.get("tags", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem[:2] for p in NOTEBOOKS])
def test_nbval_markers_are_tags_not_comments(path):
    marked = [c.source.splitlines()[0] for c in code_cells(path)
              if any(line.strip().lstrip("#").strip().startswith("NBVAL_") for line in c.source.splitlines())]
    assert not marked, f"{path.name}: use the cell tag (e.g. nbval-ignore-output), not a comment: {marked}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem[:2] for p in NOTEBOOKS])
def test_compared_cells_do_not_fall(path):
    cells = code_cells(path)
    n = sum(map(compared, cells))
    assert n >= MIN_COMPARED[path.name[:2]], (f"{path.name}: {n} of {len(cells)} code cells compared by nbval, "
                                              f"fewer than {MIN_COMPARED[path.name[:2]]}")
    unexecuted = [c.source.splitlines()[0] for c in cells if compared(c) and c.execution_count is None]
    assert not unexecuted, f"{path.name}: compared cells without a stored run (nbval skips them): {unexecuted}"


def test_at_least_40_percent_of_code_cells_are_compared():
    cells = [c for p in NOTEBOOKS for c in code_cells(p)]
    share = sum(map(compared, cells)) / len(cells)
    assert share >= MIN_SHARE, f"nbval compares {share:.0%} of the code cells; the floor is {MIN_SHARE:.0%}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem[:2] for p in NOTEBOOKS])
def test_every_reference_verdict_cell_is_compared(path):
    ref = [c for c in code_cells(path) if "reference" in c.metadata.get("tags", [])]
    assert all(map(compared, ref)), f"{path.name}: a reference cell is ignored by nbval"
    if path.name[:2] <= "05":
        assert ref, f"{path.name}: no reference-verdict cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem[:2] for p in NOTEBOOKS])
def test_saved_progress_bars_are_text(path):
    nb = nbformat.read(path, as_version=4)
    state = finish_outputs._state(nb)
    bars = [o["data"][finish_outputs.WIDGET_VIEW]["model_id"] for c in nb.cells if c.cell_type == "code"
            for o in c.outputs if finish_outputs.WIDGET_VIEW in o.get("data", {})
            if finish_outputs.progress_parts(state, o["data"][finish_outputs.WIDGET_VIEW]["model_id"])]
    assert not bars, f"{path.name}: {len(bars)} saved tqdm widgets; run tools/finish_outputs.py {path.name}"


def _widget(state, mid, name, **kw):
    state[mid] = {"model_name": name, "model_module": "@jupyter-widgets/controls", "state": kw}


def test_finish_progress_turns_a_bar_into_its_last_line_and_keeps_other_widgets():
    nb = nbformat.v4.new_notebook()
    state = {}
    _widget(state, "left", "HTMLModel", value="runs:\u2007100%", layout="IPY_MODEL_lay")
    _widget(state, "bar", "FloatProgressModel", value=24.0, max=24.0, layout="IPY_MODEL_lay")
    _widget(state, "right", "HTMLModel", value="\u200724/24\u2007[04:40&lt;00:00]")
    _widget(state, "lay", "LayoutModel")
    _widget(state, "box", "HBoxModel", children=["IPY_MODEL_left", "IPY_MODEL_bar", "IPY_MODEL_right"])
    _widget(state, "btn", "ButtonModel", layout="IPY_MODEL_lay2")
    _widget(state, "lay2", "LayoutModel")
    nb.metadata["widgets"] = {finish_outputs.WIDGET_STATE: {"state": state}}
    view = lambda m: nbformat.v4.new_output("display_data", data={finish_outputs.WIDGET_VIEW: {"model_id": m},  # noqa: E731
                                                                  "text/plain": "x"})
    nb.cells = [nbformat.v4.new_code_cell("x", outputs=[view("box"), view("btn")])]
    assert finish_outputs.finish_progress(nb) == 1
    out = nb.cells[0].outputs
    assert out[0]["output_type"] == "stream" and out[0]["name"] == "stderr"
    assert out[0]["text"] == "runs: 100%|" + "\u2588" * 10 + "| 24/24 [04:40<00:00]\n"
    assert out[1]["data"][finish_outputs.WIDGET_VIEW]["model_id"] == "btn"
    assert set(finish_outputs._state(nb)) == {"btn", "lay2"}
    assert finish_outputs.finish_progress(nb) == 0  # idempotent


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem[:2] for p in NOTEBOOKS])
def test_saved_interactive_widgets_are_snapshots(path):
    """A saved widget shows "disconnected" icons and dead buttons; stored notebooks keep snapshots instead."""
    nb = nbformat.read(path, as_version=4)
    views = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if finish_outputs.WIDGET_VIEW in o.get("data", {})]
    assert not views, f"{path.name}: {len(views)} saved widget outputs; run tools/finish_outputs.py {path.name}"
    assert not finish_outputs._state(nb), f"{path.name}: saved widget state that no output shows"


def test_snapshot_keeps_text_values_and_plots_and_drops_buttons():
    nb = nbformat.v4.new_notebook()
    state = {}
    _widget(state, "title", "HTMLModel", value="<b>Press a part</b> (top first)")
    _widget(state, "t5", "ToggleButtonModel", description="layer 5", icon="fire", value=False)
    _widget(state, "t4", "ToggleButtonModel", description="layer 4", icon="snowflake-o", value=True)
    _widget(state, "dd", "DropdownModel", description="schedule", index=1, _options_labels=["linear", "cosine"])
    _widget(state, "go", "ButtonModel", description="Train")
    _widget(state, "img", "ImageModel", format="png")
    state["img"]["buffers"] = [{"data": "iVBORw0KGgo=", "encoding": "base64", "path": ["value"]}]
    _widget(state, "status", "HTMLModel", value="<b>finished</b> after 4 steps")
    _widget(state, "box", "VBoxModel", children=[f"IPY_MODEL_{m}" for m in ("title", "t5", "t4", "dd", "go", "img", "status")])
    nb.metadata["widgets"] = {finish_outputs.WIDGET_STATE: {"state": state}}
    nb.cells = [nbformat.v4.new_code_cell("x", outputs=[nbformat.v4.new_output(
        "display_data", data={finish_outputs.WIDGET_VIEW: {"model_id": "box"}, "text/plain": "VBox(...)"})])]
    assert finish_outputs.snapshot_widgets(nb) == 1
    out = nb.cells[0].outputs
    assert [list(o["data"]) for o in out] == [["text/plain", "text/html"], ["image/png", "text/plain"],
                                              ["text/plain", "text/html"]]
    assert out[0]["data"]["text/plain"].splitlines() == [f"({finish_outputs.SNAPSHOT_NOTE})", "Press a part (top first)",
                                                         "layer 5 (trainable)", "layer 4 (frozen)", "schedule cosine"]
    assert "Train" not in str(out)
    assert out[1]["data"]["image/png"] == "iVBORw0KGgo="
    assert out[2]["data"]["text/plain"] == "finished after 4 steps"
    assert "widgets" not in nb.metadata
    assert finish_outputs.snapshot_widgets(nb) == 0  # idempotent


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem[:2] for p in NOTEBOOKS])
def test_stored_outputs_name_no_local_folder(path):
    text = "".join(str(o) for c in code_cells(path) for o in c.outputs)
    for folder in (str(ROOT) + "/", str(ROOT.parent / "shared")):
        assert folder not in text, f"{path.name}: a stored output names {folder}; run tools/finish_outputs.py"


def test_relative_paths_rewrites_the_project_and_data_folders():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="model: /home/me/ws/runs/m\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "{'data': '/mnt/sts'}"}, execution_count=1)])]
    assert finish_outputs.relative_paths(nb, root=Path("/home/me/ws"), data_dir="/mnt/sts/") == 2
    assert nb.cells[0].outputs[0]["text"] == "model: runs/m\n"
    assert nb.cells[0].outputs[1]["data"]["text/plain"] == "{'data': 'data'}"


def test_snapshot_of_a_widget_that_starts_with_a_plot_still_carries_the_note():
    state = {}
    _widget(state, "img", "ImageModel", format="png")
    state["img"]["buffers"] = [{"data": "iVBORw0KGgo=", "encoding": "base64", "path": ["value"]}]
    _widget(state, "box", "VBoxModel", children=["IPY_MODEL_img"])
    out = finish_outputs.snapshot_outputs(state, "box")
    assert out[0]["data"]["text/plain"] == f"({finish_outputs.SNAPSHOT_NOTE})" and "image/png" in out[1]["data"]
