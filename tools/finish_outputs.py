"""Tidy the stored outputs of executed notebooks (``make notebooks`` runs this after executing them).

Progress bars: ``tqdm.auto`` draws a live ipywidgets bar while a learner runs a cell. Saved into the
notebook, that widget shows as a bar framed by broken-link icons in a trusted JupyterLab and as its
first frame ("0%| | 0/24") on GitHub and in an untrusted notebook. This replaces each saved tqdm widget
with its final state as one plain line of text, as tqdm prints it in a terminal:

    runs: 100%|██████████| 24/24 [04:40<00:00, 11.92s/run, test=0.8096]

and drops the widget models nothing shows any more.

Interactive widgets (the explorers, the layer picker, the dashboards) only work while their cell's kernel
runs. Saved, they render with ipywidgets' "disconnected" link icons in a trusted JupyterLab and buttons
that do nothing. Each is replaced by a **snapshot** of what it showed when the notebook was executed: its
text (headings, the values of its controls, its status line) as one output, and each of its plots as a
PNG image, under a line that says to run the cell to use the widget. Nothing is left to click.

Paths: the project folder of the machine that executed the notebook is written relative
("/home/me/workshop/runs/07_recipe/model" -> "runs/07_recipe/model"), and a data folder taken from
$WORKSHOP_DATA_DIR as the project's own "data" folder, the one a learner's ``make data`` fills.

    python tools/finish_outputs.py notebooks/*.ipynb
"""
from __future__ import annotations

import html
import os
import re
import sys
from pathlib import Path

import nbformat

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
BAR_WIDTH = 10


def _state(nb) -> dict:
    return nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def _model(state: dict, ref: str) -> dict | None:
    return state.get(ref.replace("IPY_MODEL_", ""))


def progress_parts(state: dict, model_id: str) -> tuple[str, float, float, str, list[str]] | None:
    """``(left, value, total, right, model ids)`` when ``model_id`` is a tqdm bar (an HBox of HTML,
    FloatProgress/IntProgress and HTML), else None."""
    box = state.get(model_id)
    if not box or box.get("model_name") != "HBoxModel":
        return None
    kids = [_model(state, r) for r in box["state"].get("children", [])]
    names = [k and k.get("model_name") for k in kids]
    if len(kids) != 3 or names[0] != "HTMLModel" or names[2] != "HTMLModel" \
            or names[1] not in ("FloatProgressModel", "IntProgressModel"):
        return None
    text = [html.unescape(k["state"].get("value", "")).replace("\u2007", " ").strip() for k in (kids[0], kids[2])]
    bar = kids[1]["state"]
    ids = [model_id] + [r.replace("IPY_MODEL_", "") for r in box["state"]["children"]]
    return text[0], float(bar.get("value", 0) or 0), float(bar.get("max", 0) or 0), text[1], ids


def progress_line(left: str, value: float, total: float, right: str) -> str:
    """One tqdm-style line: ``left|██████████| right``."""
    filled = int(round(BAR_WIDTH * value / total)) if total else 0
    bar = "\u2588" * filled + " " * (BAR_WIDTH - filled)
    return f"{left}|{bar}| {right}".strip()


def _refs(value) -> list[str]:
    if isinstance(value, str):
        return [value.replace("IPY_MODEL_", "")] if value.startswith("IPY_MODEL_") else []
    if isinstance(value, dict):
        value = list(value.values())
    return [r for v in value for r in _refs(v)] if isinstance(value, list) else []


def _replace_widget_outputs(nb, convert) -> int:
    """Replace each widget output of ``nb`` whose model ``convert(model_id)`` turns into a list of outputs
    (None: keep it as it is); returns how many were replaced."""
    replaced = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outs = []
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW)
            new = convert(view["model_id"]) if view else None
            if new is None:
                outs.append(out)
            else:
                outs.extend(new)
                replaced += 1
        cell.outputs = outs
    return replaced


def finish_progress(nb) -> int:
    """Replace every saved tqdm widget output of ``nb`` by its final line (a stderr stream, as tqdm
    writes); drop the widget models no output reaches any more. Returns how many were replaced."""
    state = _state(nb)
    dropped = set()

    def as_line(model_id):
        parts = progress_parts(state, model_id)
        if parts is None:
            return None
        left, value, total, right, ids = parts
        dropped.update(ids)
        return [nbformat.v4.new_output("stream", name="stderr", text=progress_line(left, value, total, right) + "\n")]

    replaced = _replace_widget_outputs(nb, as_line)
    if dropped:  # the bars' models and their layouts and styles, unless another model still refers to one
        todo, gone = list(dropped), set()
        while todo:
            m = todo.pop()
            if m in gone or m not in state:
                continue
            gone.add(m)
            todo.extend(_refs(state[m]["state"]))
        used = {r for m, v in state.items() if m not in gone for r in _refs(v["state"])}
        for m in gone - used:
            del state[m]
    return replaced


SNAPSHOT_NOTE = "a saved snapshot of an interactive widget: run the cell to use it"
# a toggle's icon says what its state means (the layer picker: a snowflake for frozen, a flame for trainable)
ICON_WORDS = {"snowflake-o": "frozen", "snowflake": "frozen", "fire": "trainable", "check": "on"}
BOXES = ("HBoxModel", "VBoxModel", "BoxModel", "GridBoxModel", "AccordionModel", "TabModel")


def _html_text(value: str) -> str:
    """An HTML widget's value as plain text (``<br>`` and block ends become new lines)."""
    text = re.sub(r"</t[dh]>", " ", re.sub(r"<br\s*/?>|</(p|div|li|tr|h\d)>", "\n", value or ""))
    return html.unescape(re.sub(r"<[^>]+>", "", text)).replace("\u200b", "").strip()


def _value_label(m: dict) -> str:
    """What a control shows: a dropdown's chosen label, a slider's value, a toggle's state."""
    s = m["state"]
    if "_options_labels" in s and s.get("index") is not None:
        return str(s["_options_labels"][s["index"]])
    if "readout_format" in s and isinstance(s.get("value"), (int, float)) and "Log" in m["model_name"]:
        return f"{s['value']:.1e}"
    return str(s.get("value", ""))


def snapshot_items(state: dict, model_id: str) -> list[tuple[str, str, str]]:
    """The parts of a saved widget tree, in display order: ``(kind, text, html)`` with kind ``"text"``
    or ``"png"`` (then ``text`` holds the base64 image). Buttons are left out: a snapshot has nothing
    to press."""
    m = state.get(model_id)
    if m is None:
        return []
    name, s = m.get("model_name", ""), m.get("state", {})
    if name in BOXES:
        return [it for ref in s.get("children", []) for it in snapshot_items(state, ref.replace("IPY_MODEL_", ""))]
    if name == "ImageModel":
        data = next((b["data"] for b in m.get("buffers", []) if b.get("path") == ["value"]), None)
        return [("png", data, "")] if data and s.get("format", "png") == "png" else []
    if name in ("HTMLModel", "HTMLMathModel", "LabelModel"):
        text = _html_text(s.get("value", "")) if name != "LabelModel" else str(s.get("value", ""))
        return [("text", text, s.get("value", "") if name != "LabelModel" else html.escape(text))] if text else []
    if name == "ButtonModel" or "value" not in s and "index" not in s:
        return []
    if name == "ToggleButtonModel":
        word = ICON_WORDS.get(s.get("icon", "")) or ("on" if s.get("value") else "off")
        text = f"{s.get('description', '')} ({word})"
        return [("text", text, html.escape(text))]
    if name.endswith("ProgressModel"):
        text = f"{s.get('description', '')} {s.get('value', 0)}/{s.get('max', 0)}".strip()
        return [("text", text, html.escape(text))]
    text = f"{s.get('description', '')} {_value_label(m)}".strip()
    return [("text", text, html.escape(s.get("description", "")) + f" <b>{html.escape(_value_label(m))}</b>")]


def snapshot_outputs(state: dict, model_id: str) -> list:
    """A saved widget as plain outputs: runs of text as one display (text/plain and text/html), each image
    as an image/png display; :data:`SNAPSHOT_NOTE` heads the first text display (a display of its own when
    the widget starts with an image)."""
    groups: list = []  # ["text", plain lines, html lines] or ["png", data]
    for kind, value, html_value in snapshot_items(state, model_id):
        if kind == "png":
            groups.append(["png", value])
        elif groups and groups[-1][0] == "text":
            groups[-1][1].append(value)
            groups[-1][2].append(html_value)
        else:
            groups.append(["text", [value], [html_value]])
    if not groups or groups[0][0] != "text":
        groups.insert(0, ["text", [], []])
    groups[0][1].insert(0, f"({SNAPSHOT_NOTE})")
    groups[0][2].insert(0, f"<i>({SNAPSHOT_NOTE})</i>")
    return [nbformat.v4.new_output("display_data", data={"image/png": g[1], "text/plain": "<a saved plot>"})
            if g[0] == "png" else
            nbformat.v4.new_output("display_data", data={"text/plain": "\n".join(g[1]), "text/html": "<br>".join(g[2])})
            for g in groups]


def snapshot_widgets(nb) -> int:
    """Replace every saved widget output of ``nb`` (after :func:`finish_progress`) by its snapshot and drop
    the saved widget state nothing shows any more; returns how many widgets were replaced."""
    state = _state(nb)
    replaced = _replace_widget_outputs(nb, lambda m: snapshot_outputs(state, m) if m in state else None)
    if replaced and not any(WIDGET_VIEW in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                            for o in c.get("outputs", [])):
        nb.metadata.pop("widgets", None)
    return replaced


ROOT = Path(__file__).resolve().parent.parent


def relative_paths(nb, root: Path = ROOT, data_dir: str | None = None) -> int:
    """Rewrite absolute paths of this machine in the stored text outputs; returns how many outputs changed."""
    data_dir = data_dir if data_dir is not None else os.environ.get("WORKSHOP_DATA_DIR", "")
    swaps = [(data_dir.rstrip("/"), "data")] if data_dir and not data_dir.startswith(str(root)) else []
    swaps.append((str(root) + "/", ""))
    changed = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            fields = [(out, "text")] if out.get("output_type") == "stream" else \
                [(out.get("data", {}), k) for k in ("text/plain", "text/html") if k in out.get("data", {})]
            for holder, key in fields:
                text = holder[key] if isinstance(holder[key], str) else "".join(holder[key])
                new = text
                for old, rel in swaps:
                    new = new.replace(old, rel)
                if new != text:
                    holder[key] = new
                    changed += 1
    return changed


def main(argv=None) -> int:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    if not paths:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    for p in paths:
        nb = nbformat.read(p, as_version=4)
        n, w, k = finish_progress(nb), snapshot_widgets(nb), relative_paths(nb)
        if n or w or k:
            nbformat.write(nb, p)
        print(f"{p}: {n} progress bar{'s' if n != 1 else ''} stored as text, {w} widget{'s' if w != 1 else ''} "
              f"as snapshots, {k} output{'s' if k != 1 else ''} with local paths made relative")
    return 0


if __name__ == "__main__":
    sys.exit(main())
