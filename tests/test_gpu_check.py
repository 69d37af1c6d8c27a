"""tools/gpu_check.sh --dry-run: every step of the GPU check runs its CPU part here and stops before CUDA work."""
import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_goes_end_to_end(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_BUDGET": "900", "PYTHON": os.environ.get(
        "PYTHON_FOR_TESTS", __import__("sys").executable)}
    proc = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    out = tmp_path / "out"
    summary = (out / "summary.txt").read_text()
    assert proc.returncode == 0, summary + proc.stderr
    for name in ("env", "tests", "notebook", "bench", "reference"):
        assert f"{name}: ok" in summary and (out / f"{name}.log").exists()
    assert "stopped before any CUDA work" in summary
    env_report = json.loads((out / "env.json").read_text())
    assert env_report["missing"] == [] and env_report["api_problems"] == []
    assert "test_gpu.py" in (out / "tests.log").read_text()  # the GPU tests were collected
    plan = json.loads((out / "bench_gpu.json").read_text())
    assert plan["dry_run"] and set(plan["train_pairs"]) == {"32", "128", "256"}
    assert "runs stored" in (out / "reference.log").read_text()
    assert not (out / "results.json").exists()  # the dry run writes nothing into benchmarks/results.json
