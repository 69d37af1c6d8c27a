"""The package's shape: layers that only point down, no cycle, small modules and functions, a lazy facade.

The layers are written once, in ``helpers/__init__.py``'s docstring; :data:`LAYERS`
below is the same list, and a test checks that the two agree.
"""
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "helpers"

LAYERS = {
    1: ["config", "data", "codesearch", "tasks", "models", "schedules", "losses", "evaluation", "measure", "results",
        "devices", "datafetch", "records", "profiling"],
    2: ["settings", "batching", "freezing", "distributed", "callbacks", "training"],
    3: ["experiments", "verdicts", "stopping", "crosseval", "rangetest", "accumulation", "inbatch", "tuning", "transfer",
        "workers", "claims", "refstore", "reference", "target"],
    4: ["plots", "widgets", "search"],
    5: ["recipe", "recipe_report", "cli", "__main__", "__init__"],
}
RANK = {name: rank for rank, names in LAYERS.items() for name in names}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 80


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    return ".".join(parts) if parts != ["__init__"] else "__init__"


def layer_of(module: str) -> int:
    top = module.split(".")[0]
    if top not in RANK:
        pytest.fail(f"helpers/{module.replace('.', '/')}.py has no layer: add it to LAYERS here and to the list in "
                    "helpers/__init__.py's docstring")
    return RANK[top]


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(imported helpers module, line, inside a function)`` for every relative or ``helpers.`` import."""
    me = module_name(path)
    package = me.split(".")[:-1] if path.name != "__init__.py" else me.split(".")[:-1] + ([] if me == "__init__" else [me.split(".")[-1]])
    if me == "__init__":
        package = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function |= {id(n) for n in ast.walk(node) if n is not node}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            if node.module:
                targets = [".".join(base + node.module.split("."))]
            else:  # from . import a, b
                targets = [".".join(base + [a.name]) for a in node.names]
            out += [(t, node.lineno, id(node) in in_function) for t in targets]
        elif isinstance(node, ast.Import):
            out += [(a.name[len("helpers."):], node.lineno, id(node) in in_function) for a in node.names
                    if a.name.startswith("helpers.")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers"):
            out += [(node.module[len("helpers."):] or "__init__", node.lineno, id(node) in in_function)]
    return out


def graph() -> dict[str, set[str]]:
    """Module -> the helpers modules it imports (top level and inside functions), as dotted names under helpers."""
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    g = {}
    for name, path in files.items():
        edges = set()
        for target, _, _ in imports(path):
            while target and target not in files:  # "plots.search" is a file; "plots" is plots/__init__
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name:
                edges.add(target)
        g[name] = edges
    return g


def find_cycle(g: dict[str, set[str]]):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_points_up_a_layer():
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    up = []
    for name, path in files.items():
        for target, line, inside in imports(path):
            if layer_of(target) > layer_of(name):
                up.append(f"helpers/{path.relative_to(PKG)}:{line} ({name}, layer {layer_of(name)}) imports {target} "
                          f"(layer {layer_of(target)}){' inside a function' if inside else ''}")
    assert not up, "imports that point up a layer:\n" + "\n".join(up)


def test_the_layers_here_are_the_ones_the_package_docstring_states():
    import helpers

    doc = helpers.__doc__
    for rank, names in LAYERS.items():
        for name in names:
            if not name.startswith("__"):
                assert f"``{name}" in doc, f"{name} (layer {rank}) is missing from helpers/__init__.py's docstring"
    assert {module_name(p).split(".")[0] for p in PKG.rglob("*.py")} <= set(RANK)


def test_no_module_over_500_lines_and_no_function_over_80():
    big = []
    for path in sorted(PKG.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_MODULE_LINES:
            big.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    big.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}() is {n} lines "
                               f"(at most {MAX_FUNCTION_LINES})")
    assert not big, "\n".join(big)


def test_help_imports_neither_widgets_nor_plots_nor_optuna():
    code = ("import sys, contextlib, io\nimport helpers.cli as c\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n    c.main(['--help'])\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    c.main(['recipe', '--help'])\n"
            "print(sorted(m for m in ('ipywidgets', 'matplotlib', 'optuna', 'helpers.tuning', 'helpers.widgets', "
            "'helpers.plots') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().splitlines()[-1] == "[]", p.stdout
    p = subprocess.run([sys.executable, "-m", "helpers", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0 and "recipe" in p.stdout, p.stderr[-3000:]


def test_import_helpers_loads_nothing_heavy():
    code = ("import sys\nimport helpers as hp\n"
            "print(sorted(m for m in sys.modules if m.startswith('helpers.') or m in ('torch', 'ipywidgets', "
            "'matplotlib', 'optuna', 'transformers')))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == "[]", p.stdout


def notebook_paths() -> set[str]:
    """Every ``hp.a`` and ``hp.a.b`` path the notebooks' code cells use."""
    paths = set()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] == "code":
                paths |= set(re.findall(r"\bhp\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)", "".join(cell["source"])))
    return paths


def test_every_path_the_notebooks_use_resolves_and_is_in_all():
    import helpers as hp

    paths = notebook_paths()
    assert len(paths) > 100
    missing = []
    for path in sorted(paths):
        first, _, rest = path.partition(".")
        if first not in hp.__all__:
            missing.append(f"hp.{first} is not in helpers.__all__")
            continue
        obj = getattr(hp, first)
        if rest and not hasattr(obj, rest) and not isinstance(getattr(type(obj), rest, None), property):
            if not (hasattr(obj, "__dataclass_fields__") or isinstance(obj, type)):  # attributes of instances
                missing.append(f"hp.{path} does not resolve")
        elif rest and hasattr(obj, "__all__") and rest not in obj.__all__:
            missing.append(f"hp.{path}: {rest} is not in {obj.__name__}.__all__")
    assert not missing, "\n".join(missing)


def test_the_command_lines_choices_are_the_searchs():
    from helpers import cli, tuning

    parser = cli.build_parser()
    recipe = next(a for a in parser._actions if a.dest == "command").choices["recipe"]
    actions = {a.dest: a for a in recipe._actions}
    assert tuple(actions["pruner"].choices) == tuning.PRUNERS
    assert tuple(actions["space"].choices) == tuning.SPACES and actions["space"].default == "narrow"
    assert f"{tuning.SUBSET_FRACTION} with --space broad" in actions["subset"].help  # None: the space decides (Recipe)


def test_the_readmes_layout_names_every_module():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = text[text.index("## Layout"):text.index(".ci/run", text.index("## Layout"))]
    missing = [p.name for p in PKG.glob("*.py") if p.name not in layout]
    missing += [f"{p.name}/" for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()
                and f"{p.name}/" not in layout]
    missing += [f"plots/{p.stem}" for p in (PKG / "plots").glob("*.py") if p.stem != "__init__" and p.stem not in layout]
    missing += [f"widgets/{p.stem}" for p in (PKG / "widgets").glob("*.py")
                if p.stem != "__init__" and p.stem not in layout]
    assert not missing, f"README's Layout section does not name: {missing}"


# Lesson links: every public function and class names the notebook that teaches it, "(notebook 03)".
LESSON_LINK = re.compile(r"[Nn]otebooks? \d\d")
# plumbing that no lesson teaches names what uses it instead
NON_LESSON_USERS = ("``make data``", "``python -m helpers``", "tools/gpu_pack.py")
LINKS_EXEMPT: set = set()  # modules not yet checked (none)


def public_definitions(source: str):
    """``(name, line, docstring or "")`` of every public top-level function and class in ``source``."""
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            yield node.name, node.lineno, ast.get_docstring(node) or ""


def names_its_user(doc: str) -> bool:
    return bool(LESSON_LINK.search(doc)) or any(user in doc for user in NON_LESSON_USERS)


def test_every_public_helper_names_its_lesson():
    unlinked = []
    for path in sorted(PKG.rglob("*.py")):
        if module_name(path) in LINKS_EXEMPT:
            continue
        for name, line, doc in public_definitions(path.read_text(encoding="utf-8")):
            if not names_its_user(doc):
                unlinked.append(f"{path.relative_to(ROOT)}:{line} {name}: "
                                + ("no docstring" if not doc else repr(doc.splitlines()[0][:80])))
    assert not unlinked, ("public helpers whose docstring names neither their notebook (\"(notebook 03)\") nor a "
                          f"non-lesson user {NON_LESSON_USERS}:\n" + "\n".join(unlinked))


def test_the_lesson_link_check_finds_a_missing_one():
    src = ('def a():\n    """Taught here (notebook 03)."""\n\ndef b():\n    """No lesson."""\n\ndef c():\n    pass\n\n'
           'class D:\n    """Used by ``make data``."""\n\ndef _private():\n    pass\n')
    found = {name: names_its_user(doc) for name, _, doc in public_definitions(src)}
    assert found == {"a": True, "b": False, "c": False, "D": True}
    assert names_its_user("Notebooks 02 and 05: the tables.") and not names_its_user("notebook 3")
