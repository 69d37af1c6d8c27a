"""What the GPU check runs on (the first step of ``tools/gpu_check.sh``): versions, GPU, missing modules, APIs.

Prints one JSON object and exits 1 when a module or API the helpers need is missing (the
check then stops with that list instead of failing later in the middle of a step). Safe on a
CPU machine: it only asks torch whether CUDA is there and, when it is, the GPU's name.
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import sys

NEEDED = ["torch", "transformers", "sentence_transformers", "accelerate", "datasets", "safetensors", "numpy",
          "scipy", "pandas", "psutil", "tqdm", "matplotlib", "ipywidgets"]
FOR_NOTEBOOK = ["nbclient", "nbformat", "ipykernel"]
FOR_SEARCH = ["optuna"]  # notebooks 06-07 and the recipe; the check itself runs no search (reported, not a failure)
APIS = {  # what the helpers import from the libraries, checked against the installed versions
    "sentence_transformers.base.sampler": ["BatchSamplers"],
    "sentence_transformers.sentence_transformer.training_args": ["SentenceTransformerTrainingArguments"],
    "sentence_transformers.sentence_transformer.trainer": ["SentenceTransformerTrainer"],
    "transformers": ["EarlyStoppingCallback", "TrainerCallback"],
}
OPTIONAL = {  # used when present, with a fallback otherwise
    "sentence_transformers.util.distributed": ["distributed_evaluation"],  # torchrun test scores (before 6.2: rank 0)
}


def report() -> dict:
    out = {"python": platform.python_version(), "executable": sys.executable, "missing": [], "missing_for_notebook": [],
           "missing_for_search": [],
           "api_problems": [], "versions": {}}
    for name in NEEDED + FOR_NOTEBOOK + FOR_SEARCH:
        try:
            mod = importlib.import_module(name)
            out["versions"][name] = getattr(mod, "__version__", "?")
        except Exception as exc:  # noqa: BLE001 - any import failure is reported
            kind = "missing" if name in NEEDED else "missing_for_notebook" if name in FOR_NOTEBOOK else "missing_for_search"
            out[kind].append(f"{name} ({type(exc).__name__})")
    for module, names in APIS.items():
        try:
            mod = importlib.import_module(module)
            out["api_problems"] += [f"{module}.{n}" for n in names if not hasattr(mod, n)]
        except Exception as exc:  # noqa: BLE001
            out["api_problems"].append(f"{module} ({type(exc).__name__}: {exc})")
    out["optional_missing"] = []
    for module, names in OPTIONAL.items():
        try:
            mod = importlib.import_module(module)
            out["optional_missing"] += [f"{module}.{n}" for n in names if not hasattr(mod, n)]
        except Exception:  # noqa: BLE001
            out["optional_missing"].append(module)
    try:
        from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments as A

        fields = getattr(A, "__dataclass_fields__", {})
        out["api_problems"] += [f"training argument {f}" for f in ("learning_rate_mapping", "batch_sampler")
                                if f not in fields]
    except Exception:  # noqa: BLE001 - reported above
        pass
    try:
        import torch

        out["cuda"] = bool(torch.cuda.is_available())
        out["gpu"] = torch.cuda.get_device_name(0) if out["cuda"] else None
        out["gpus"] = torch.cuda.device_count() if out["cuda"] else 0
        out["torch_cuda"] = torch.version.cuda
    except Exception as exc:  # noqa: BLE001
        out["cuda"], out["gpu"] = False, f"torch failed: {exc}"
    out["env"] = {k: os.environ.get(k) for k in ("WORKSHOP_MODEL_DIR", "WORKSHOP_DATA_DIR", "WORKSHOP_SCALE",
                                                 "CUDA_VISIBLE_DEVICES", "PYTHONPATH")}
    return out


def main() -> int:
    r = report()
    print(json.dumps(r, indent=1))
    return 1 if r["missing"] or r["api_problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
