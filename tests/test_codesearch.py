"""The standard-library code-search task: extraction, split by module, and the real corpus."""
import textwrap

from helpers import codesearch as C


def test_extracts_docstring_summary_and_code_without_docstring(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(textwrap.dedent('''
        class A:
            def area(self, r):
                """Return the area of a circle of radius r.

                Longer text that is not part of the query.
                """
                return 3.14 * r * r

        def short():
            """Too short."""
            return 1
    '''))
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "test_x.py").write_text('def f():\n    """Return something from a test module here."""\n')
    rows = C.extract_functions(tmp_path)
    assert len(rows) == 1
    row = rows[0]
    assert row["query"] == "Return the area of a circle of radius r."
    assert row["code"] == "def area(self, r):\n    return 3.14 * r * r"
    assert row["module"] == "pkg.mod"


def test_split_is_by_top_level_package_and_deterministic():
    assert C.module_split("email.parser") == C.module_split("email.utils")
    splits = [C.module_split(f"module{i}") for i in range(1000)]
    # md5 of the name, bucket % 100: 10% dev and 10% test in expectation; these 1000 names give exactly
    assert (splits.count("train"), splits.count("dev"), splits.count("test")) == (786, 112, 102)
    assert [C.module_split(f"module{i}") for i in range(8)] == [C.module_split(f"module{i}.sub") for i in range(8)]


def test_real_stdlib_task_has_unseen_test_modules():
    task = C.load_codesearch(train_size=None)
    assert len(task["train"]) > 2000
    assert len(task["test"]["queries"]) > 100 and len(task["dev"]["queries"]) > 100
    rows = C._functions(300)
    train_mods = {r["module"].split(".")[0] for r in rows if C.module_split(r["module"]) == "train"}
    test_mods = {r["module"].split(".")[0] for r in rows if C.module_split(r["module"]) == "test"}
    assert train_mods and test_mods and not train_mods & test_mods
    small = C.load_codesearch(train_size=20, eval_queries=10, seed=1)
    assert len(small["train"]) == 20 and len(small["test"]["queries"]) == 10 == len(small["test"]["corpus"])
