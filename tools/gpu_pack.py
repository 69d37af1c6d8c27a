"""Prepare what travels to a GPU machine with the project (README "GPU notes"): ``python tools/gpu_pack.py``.

The GPU machine has no network and takes at most 64 MiB of project files. This writes
``gpu-carry/`` (ignored by git; give it to the run as a carried path):

- ``model/``: the embedded all-MiniLM-L6-v2 with fp16 weights (about 45 MB instead of 90;
  :func:`helpers.models.write_half_copy`), upcast to fp32 when loaded;
- ``wheels/`` (``--wheels``): the modules the GPU image lacks, at this environment's versions, installed
  there by ``tools/gpu_check.sh`` without network;
- ``data/``: the STS-B and SNLI files from ``$WORKSHOP_DATA_DIR`` (the code-search task is
  built from Python's standard library on the machine itself);
- ``manifest.json``: sizes, and with ``--verify`` the untuned STS-B test Spearman of the fp32
  model and of the fp16 copy on the whole test split (they must agree to four decimals).

It fails when the tracked project files and ``gpu-carry/`` together exceed ``--max-mib``.
``tools/gpu_check.sh`` uses ``gpu-carry/`` when it is there.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
DATA_FOLDERS = ("stsbenchmark", "snli")


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tracked_bytes(root: Path = ROOT) -> int:
    """Bytes of the files git tracks (what the GPU run copies besides the carried folders)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout.split(b"\0")
    return sum((root / n.decode()).stat().st_size for n in names if n and (root / n.decode()).is_file())


def copy_data(dest: Path) -> list[str]:
    """Copy the local STS-B and SNLI folders into ``dest``; returns the folders copied."""
    from helpers.data import find_local

    copied = []
    for name in DATA_FOLDERS:
        probe = find_local(f"{name}/LICENSE.txt") or find_local(f"{name}/sts-test.csv") or \
            find_local(f"{name}/s1.test")
        if probe is None:
            continue
        shutil.copytree(probe.parent, dest / name, dirs_exist_ok=True)
        copied.append(name)
    return copied


def stsb_test_spearman(model_dir: str | None) -> float:
    """The untuned model's Spearman on the whole STS-B test split (1379 pairs), fp32 on the CPU."""
    import helpers as hp

    task = hp.prepare_task(hp.TrainConfig(task="stsb", train_size=16, dev_size=16, test_size="all", scale="full"))
    model = hp.load_model(model_dir, device="cpu", max_seq_length=256)
    return hp.score(model, task.test_evaluator)


# Distributions the GPU image lacks (seen there 2026-11-30: no datasets, no Jupyter kernel stack), at the versions
# this project's environment has. Optional pieces (debugpy, jedi, optuna's SQL stack, the lab extensions) are left
# out to stay under the size limit: the check runs no debugger, completion, search or browser there.
WHEELS = ("datasets", "dill", "multiprocess", "nbclient", "nbformat", "fastjsonschema", "jsonschema",
          "jsonschema-specifications", "referencing", "rpds-py", "jupyter_client", "jupyter_core", "ipykernel",
          "ipython", "ipython_pygments_lexers", "traitlets", "pyzmq", "tornado", "comm", "matplotlib-inline",
          "nest-asyncio2", "platformdirs", "prompt_toolkit", "wcwidth", "pexpect", "ptyprocess", "stack-data",
          "executing", "asttokens", "pure_eval", "ipywidgets")


def download_wheels(dest: Path, python: str = "3.12") -> list[str]:
    """Download, for the GPU machine's Python, the wheels of :data:`WHEELS` at the versions installed here.

    Needs a package index (run it where pip works); ``tools/gpu_check.sh`` installs them there without network.
    """
    from importlib.metadata import version

    pins = [f"{name}=={version(name)}" for name in WHEELS]
    platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_26_x86_64",
                                                "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
                                                "manylinux2014_x86_64", "manylinux1_x86_64")]
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    f"--python-version={python}", "--implementation=cp", *platforms, "-d", str(dest), *pins],
                   check=True)
    return pins


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "gpu-carry")
    p.add_argument("--verify", action="store_true", help="score fp32 and fp16 on the STS-B test split (about a minute)")
    p.add_argument("--max-mib", type=float, default=64.0)
    p.add_argument("--wheels", action="store_true", help="also download the wheels of the modules the GPU image "
                                                         "lacks (datasets, the Jupyter kernel) into wheels/")
    a = p.parse_args(argv)
    from helpers.models import write_half_copy

    a.out.mkdir(parents=True, exist_ok=True)
    write_half_copy(a.out / "model")
    data = copy_data(a.out / "data")
    if a.wheels:
        download_wheels(a.out / "wheels")
    manifest = {"model": "all-MiniLM-L6-v2, fp16 weights (upcast to fp32 on load)",
                "model_mib": folder_bytes(a.out / "model") / 2**20, "data": data,
                "data_mib": folder_bytes(a.out / "data") / 2**20 if data else 0.0,
                "wheels_mib": folder_bytes(a.out / "wheels") / 2**20 if (a.out / "wheels").is_dir() else 0.0}
    if a.verify:
        fp32, fp16 = stsb_test_spearman(None), stsb_test_spearman(str(a.out / "model"))
        manifest["stsb_test_spearman"] = {"fp32": fp32, "fp16_copy": fp16, "difference": fp16 - fp32,
                                          "same_to_4_decimals": round(fp32, 4) == round(fp16, 4)}
        print(f"untuned STS-B test Spearman: fp32 {fp32:.6f}, fp16 copy {fp16:.6f} (difference {fp16 - fp32:+.2e})")
    (a.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = (tracked_bytes() + folder_bytes(a.out)) / 2**20
    manifest["total_mib"] = total
    (a.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{a.out}: model {manifest['model_mib']:.1f} MiB, data {manifest['data_mib']:.1f} MiB ({', '.join(data) or 'none'}); "
          f"with the tracked files {total:.1f} MiB of {a.max_mib:g}")
    if total > a.max_mib:
        print(f"error: {total:.1f} MiB exceeds the {a.max_mib:g} MiB that can be copied to the GPU machine", file=sys.stderr)
        return 1
    if a.verify and not manifest["stsb_test_spearman"]["same_to_4_decimals"]:
        print("error: the fp16 copy does not score like the fp32 model to four decimals", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
