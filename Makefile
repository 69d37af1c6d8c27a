# Two commands on a fresh machine:
#   make lab   - set everything up, then open the workshop in JupyterLab (localhost)
#   make test  - set everything up, then run the whole test suite (pytest + nbval at smoke scale
#                + the widgets in JupyterLab in headless Chromium, skipped with one line when no
#                Chromium can be found or installed here; .ci/run makes them required)
#   make data  - download STS-B and SNLI once into data/ (needs internet), to work offline later
#   make test-fast - the inner loop: pytest without the tests that train a model (-m "not slow")
# Both are idempotent: the set-up reruns only when pyproject.toml or the lock changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.workshop-installed
LOCK   := requirements/constraints.txt
PORT   ?= 8888
TORCH  := torch==2.13.0
KERNEL := sbert-workshop

# Data: the loaders read $WORKSHOP_DATA_DIR, then data/ (`make data` fills it), else the hub.
export TOKENIZERS_PARALLELISM := false
# Browser tests: "auto" skips them with one line when no Chromium can be found or installed;
# "required" (what .ci/run sets) fails instead.
BROWSER_TESTS ?= auto

# Torch: the CPU wheel that lies on this disk when there is one; otherwise PyPI's build
# (CUDA on Linux with an NVIDIA GPU), or the CPU index on a Linux box without a GPU.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_CPU_INDEX := $(if $(HAS_GPU),,$(if $(filter Linux,$(shell uname -s)),--extra-index-url https://download.pytorch.org/whl/cpu,))
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: setup lab data test test-fast test-py test-nb test-browser notebooks reference bench gpu-check gpu-pack lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-index --no-deps "$(TORCH)" 2>/dev/null \
		|| $(BIN)/python -m pip install --quiet -c $(LOCK) "$(TORCH)" $(TORCH_CPU_INDEX)
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (sbert workshop)" >/dev/null
	$(BIN)/python -c "import torch, sentence_transformers as st; print('set up: torch', torch.__version__, '| sentence-transformers', st.__version__, '| cuda', torch.cuda.is_available())"
	touch $(STAMP)

lab: $(STAMP)
	@echo "Opening the workshop; JupyterLab prints the URL to open (localhost only)."
	$(BIN)/jupyter lab --no-browser --ip=127.0.0.1 --port=$(PORT) --ServerApp.root_dir=notebooks $(ALLOW_ROOT)

# STS-B and SNLI from the Hugging Face hub, written once in the local layout (helpers/datafetch.py).
data: $(STAMP)
	$(BIN)/python -m helpers.datafetch

# The tests run offline on the real data: `data` fetches it first when there is no local copy yet
# (a no-op when $WORKSHOP_DATA_DIR or data/ already holds it).
test: $(STAMP) data test-py test-nb test-browser

test-py: $(STAMP)
	WORKSHOP_SCALE=smoke $(BIN)/python -m pytest tests -q --ignore=tests/browser

# The inner loop: every test that does not train a model (-m "not slow"; tests/conftest.py fails a test that
# trains without the marker). No notebooks, no browser; `make test` still runs everything.
test-fast: $(STAMP)
	WORKSHOP_SCALE=smoke $(BIN)/python -m pytest tests -q --ignore=tests/browser -m "not slow"

test-nb: $(STAMP)
	WORKSHOP_SCALE=smoke $(BIN)/python -m pytest --nbval --nbval-current-env \
		--nbval-sanitize-with notebooks/sanitize.cfg --nbval-cell-timeout=1200 notebooks -q

# The widgets as a learner uses them: JupyterLab (loopback, token) driven in headless Chromium by
# Playwright (installed by the test extras; never `playwright install`). tools/install_browser.sh
# finds a Chromium or installs Debian's (exit 3: none here and no way to install one).
# Screenshots: tests/browser/screenshots/.
test-browser: $(STAMP)
	@out=$$(tools/install_browser.sh); status=$$?; \
	if [ $$status -eq 0 ]; then \
		echo "CHROMIUM=$$out WORKSHOP_SCALE=smoke $(BIN)/python -m pytest tests/browser -q -m browser"; \
		CHROMIUM="$$out" WORKSHOP_SCALE=smoke $(BIN)/python -m pytest tests/browser -q -m browser; \
	elif [ $$status -eq 3 ] && [ "$(BROWSER_TESTS)" != required ]; then \
		echo "SKIPPED browser tests (tests/browser): $$out; to run them, install Chromium (Debian/Ubuntu: sudo apt-get install chromium) or set CHROMIUM=/path/to/chromium"; \
	elif [ $$status -eq 3 ]; then \
		echo "ERROR: the browser tests are required here (BROWSER_TESTS=required), but $$out" >&2; exit 1; \
	else exit $$status; fi

# Re-execute every notebook in place at workshop scale (the stored outputs readers see on GitHub).
# Each notebook's wall time goes into benchmarks/results.json (benchmark 5). NB="01 03" runs only those.
notebooks: $(STAMP)
	$(BIN)/python benchmarks/bench_notebooks.py --inplace --scale $${WORKSHOP_SCALE:-workshop} $(if $(NB),--only $(NB),)

# The reference runs behind every notebook's reference verdicts (results/reference/*.jsonl): resumable,
# a rerun skips finished runs. ONLY="01 02" limits it to notebooks, EXPERIMENT="schedule" to experiments;
# BEST_FIRST=1 runs each arm at its best rate so far first (the runs that decide the claims).
reference: $(STAMP)
	nice -n 10 $(BIN)/python -m helpers.reference $(if $(ONLY),--only $(ONLY),) $(if $(EXPERIMENT),--experiment $(EXPERIMENT),) $(if $(BEST_FIRST),--best-first,)

# Speed and memory figures (benchmarks/README.md); BENCH="freezing inbatch" runs only those.
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(BENCH)

# The GPU check (README "GPU notes"): tests, notebook 00 at full, the GPU benchmark and reference runs in about
# 9 minutes, everything into $$OUT (default outputs/gpu-check/). DRY=1: every step's CPU part, no CUDA work.
# No set-up dependency: the GPU machine brings its own torch/sentence-transformers and has no network.
gpu-check:
	tools/gpu_check.sh $(if $(DRY),--dry-run,)

# What travels with the project to a GPU machine without network: gpu-carry/ (fp16 model copy, data).
gpu-pack: $(STAMP)
	$(BIN)/python tools/gpu_pack.py --verify

lock: $(STAMP)
	$(BIN)/python tools/lock.py

clean:
	rm -rf $(VENV) *.egg-info
