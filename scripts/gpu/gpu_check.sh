#!/usr/bin/env bash
# The GPU measurement as one command (scripts/gpu/README.md, docs/performance.md#gpu-check): on a machine with
# one GPU, in about 8 minutes, one report with
#   1. pytest -m gpu                        the CUDA paths of every method, bf16 and fp16
#   2. scripts.measure.bench_step, paper scale, bf16, the four rows (DAFormer, HRDA, each ± Refign)
#   3. python -m refign.estimate against the measured torch.cuda.max_memory_allocated, two experiments
#   4. 50 steps of experiment=acdc_refign_hrda_star on a full-size tree, with its evaluation and export
#
#   scripts/gpu/gpu_check.sh [--report FILE] [--cpu-dry]    run the checks (report: outputs/gpu_check/report.md)
#   scripts/gpu/gpu_check.sh --fill-wheelhouse [--all]      where the package registry is reachable: fill wheelhouse/
#
# What refign needs beyond the machine's own Python, torch and packages comes from wheelhouse/ (WHEELHOUSE;
# scripts/gpu/README.md). --cpu-dry runs every step at the CPU-sized scale (no install, no GPU) to check the
# script and its report.
set -uo pipefail
case ${1:-} in -h | --help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac
cd "$(dirname "$0")/../.."
ROOT=$PWD
WHEELS=${WHEELHOUSE:-$ROOT/wheelhouse}
REPORT=$ROOT/outputs/gpu_check/report.md
MODE=gpu
TARGET_PY=${TARGET_PYTHON_VERSION:-3.12}
pin() { grep -hE "^$1==" requirements/*.txt | head -1; }
ANTLR=antlr4-python3-runtime==4.9.3  # omegaconf 2.3's grammar runtime

fill_wheelhouse() {
  # Wheels for CPython $TARGET_PY on manylinux x86_64 of what the GPU image lacks (scripts/gpu/wheelhouse.py;
  # all of scripts/gpu/requirements.txt with --all; no torch: the GPU machine has its own), and the sdists that
  # are built there (fetched with this checkout's Python: mmcv's setup.py imports torch and pkg_resources).
  local fetch_py=python3
  [ -x .venv/bin/python ] && fetch_py=.venv/bin/python
  local PIP=("$fetch_py" -m pip --disable-pip-version-check download --no-deps -d "$WHEELS")
  local carried
  carried=$("$fetch_py" scripts/gpu/wheelhouse.py carried ${1:+"$1"}) || return 1
  mkdir -p "$WHEELS"
  # shellcheck disable=SC2086  # one requirement per word
  "${PIP[@]}" --only-binary=:all: --platform manylinux2014_x86_64 --python-version "$TARGET_PY" \
    --implementation cp $carried "setuptools<70" wheel "$(pin mmsegmentation)" || return 1
  "${PIP[@]}" --no-binary=:all: --no-build-isolation "$(pin mmcv)" "$ANTLR" || return 1
  "${PIP[@]}" --no-binary=:all: --no-build-isolation "$(pin spatial-correlation-sampler)" ||
    echo "spatial-correlation-sampler sdist not fetched: the pure-PyTorch correlation will be used"
  du -sh "$WHEELS"
}

while [ $# -gt 0 ]; do
  case $1 in
    --report) REPORT=$(realpath -m "$2"); shift 2 ;;
    --cpu-dry) MODE=cpu-dry; shift ;;
    --fill-wheelhouse) shift; fill_wheelhouse "$@"; exit $? ;;
    *) echo "gpu_check.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

if [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python; else PY=$(command -v python3); fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
WORK=$(dirname "$REPORT")
mkdir -p "$WORK"
: >"$REPORT"
START=$SECONDS
say() { printf '%s\n' "$*" | tee -a "$REPORT"; }
field() { say "$1: $2"; }
# runs "$@" with a time limit, its output in $WORK/<name>.log; sets $rc and $took
step() {
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$WORK/$name.log" 2>&1
  rc=$?
  took=$((SECONDS - t0))
  [ $rc -eq 124 ] && echo "(timed out after ${limit} s)" >>"$WORK/$name.log"
}

say "# refign GPU check"
field date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
field mode "$MODE"
field python "$($PY -c 'import sys; print(sys.version.split()[0])') ($PY)"

# ---- 0. what refign needs beyond torch, from the wheelhouse -----------------------------------------------
install() {
  local PIP=("$PY" -m pip --disable-pip-version-check install --no-index --find-links "$WHEELS")
  [ -d "$WHEELS" ] || { echo "no $WHEELS: fill it with scripts/gpu/gpu_check.sh --fill-wheelhouse"; return 1; }
  local missing
  missing=$("$PY" scripts/gpu/wheelhouse.py missing) || return 1
  # the antlr4 sdist is built with these (an isolated build would look for wheel's own needs in the wheelhouse)
  # shellcheck disable=SC2086  # one requirement per word
  "${PIP[@]}" --no-deps "setuptools<70" wheel &&
    "${PIP[@]}" --no-deps --no-build-isolation "$ANTLR" $missing || {
    echo "installing [$missing] from $WHEELS failed (above); where one is not in the wheelhouse, this machine" \
      "lacks what the GPU image has: fill it with scripts/gpu/gpu_check.sh --fill-wheelhouse --all"
    return 1
  }
  if ! "$PY" -c "import mmcv.ops" 2>/dev/null; then
    local arch
    arch=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())") || return 1
    MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=$(nproc) \
      "${PIP[@]}" --no-build-isolation --no-deps "$WHEELS"/mmcv-*.tar.gz || return 1
  fi
  "${PIP[@]}" --no-deps "$(pin mmsegmentation)" || return 1
  if ! "$PY" -c "import spatial_correlation_sampler" 2>/dev/null && ls "$WHEELS"/spatial_correlation_sampler-* >/dev/null 2>&1; then
    "${PIP[@]}" --no-build-isolation --no-deps "$WHEELS"/spatial_correlation_sampler-* ||
      echo "spatial-correlation-sampler did not build: the pure-PyTorch correlation is used"
  fi
  "$PY" -c "import torchvision, mmcv.ops, mmseg.models, hydra, albumentations" ||
    { echo "torchvision comes with torch on the GPU machine; it is not in the wheelhouse"; return 1; }
}
if "$PY" -c "import torch, torchvision, mmcv.ops, mmseg.models, hydra, albumentations, h5py, pytest" 2>/dev/null; then
  field install "nothing missing"
elif [ "$MODE" = cpu-dry ]; then
  field install "skipped (--cpu-dry)"
else
  step install 1800 install
  field install "$([ $rc -eq 0 ] && echo ok || echo "FAILED, see $WORK/install.log") (${took} s, not counted below)"
  [ $rc -eq 0 ] || exit 1
  START=$SECONDS
fi
field torch "$($PY -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
DEVICE=$($PY -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")')
field device "$DEVICE"
if [ "$MODE" = gpu ] && [ "$DEVICE" = none ]; then
  say "no CUDA device: run with --cpu-dry to check the script itself"
  exit 1
fi

# ---- the scale of each step: the paper's on the GPU, the CPU-sized model in --cpu-dry ---------------------
if [ "$MODE" = gpu ]; then
  PYTEST_ARGS=(-m gpu -q -p no:cacheprovider)
  BENCH=(--scale paper --precision bf16 --steps 10 --warmup 3)
  TREE=(--images 2 --eval-images 1)
  RUN=(--steps 50)
  RUN_OVERRIDES=()
  LIMITS=(120 150 60 240)
else
  PYTEST_ARGS=(-m gpu -q -p no:cacheprovider tests/test_gpu.py)
  BENCH=(--scale small --precision 32 --steps 1 --warmup 0 --clock cpu)
  TREE=(--images 2 --eval-images 1 --size-divisor 8)
  RUN=(--steps 2)
  RUN_OVERRIDES=(debug=tiny_model)  # the CPU-sized network on the /8 tree (conf/debug/tiny_model.yaml)
  LIMITS=(120 300 60 300)
fi

# ---- 1. pytest -m gpu ---------------------------------------------------------------------------------------
step pytest_gpu "${LIMITS[0]}" "$PY" -m pytest "${PYTEST_ARGS[@]}"
field pytest_gpu "$(tail -1 "$WORK/pytest_gpu.log" | tr -d '=' | sed 's/^ *//') (rc $rc, ${took} s)"

# ---- 2. bench_step ---------------------------------------------------------------------------------------------
step bench_step "${LIMITS[1]}" "$PY" -m scripts.measure.bench_step "${BENCH[@]}"
field bench_step "rc $rc, ${took} s"
grep -E '^\|' "$WORK/bench_step.log" | tee -a "$REPORT"

# ---- 3. the estimate against the measured peak -----------------------------------------------------------------
for exp in acdc_refign_daformer acdc_refign_hrda_star; do
  step "estimate_$exp" "${LIMITS[2]}" "$PY" -m refign.estimate "experiment=$exp" trainer.precision=bf16
  field "estimate $exp" "peak $(awk '/^ *peak allocated/ {print $(NF-1), $NF}' "$WORK/estimate_$exp.log") bf16 (rc $rc, ${took} s)"
done
say "measured (bench_step above, bf16): rows daformer_refign = acdc_refign_daformer, hrda_refign = acdc_refign_hrda_star"

# ---- 4. 50 steps of Refign-HRDA* on a full-size tree, with evaluation and export ----------------------------
rm -rf "$WORK/tree" "$WORK/dry_run"
step tree 120 "$PY" scripts/make_dataset_tree.py "$WORK/tree" --datasets cityscapes acdc "${TREE[@]}"
field tree "rc $rc, ${took} s"
step hrda_star "${LIMITS[3]}" "$PY" -m scripts.measure.dry_run acdc_refign_hrda_star --data-root "$WORK/tree" \
  --out "$WORK/dry_run" --random-weights "${RUN[@]}" -- "${RUN_OVERRIDES[@]}"
field hrda_star "rc $rc, ${took} s"
grep -E '^\| ' "$WORK/dry_run/dry_run.md" 2>/dev/null | tee -a "$REPORT"
field train_cuda_peak_gib "$("$PY" - "$WORK/dry_run/acdc_refign_hrda_star/train/metrics.jsonl" <<'EOF'
import json, sys
try:
    peaks = [json.loads(l).get("train/cuda_peak_gib") for l in open(sys.argv[1])]
    print(max(p for p in peaks if p is not None))
except (OSError, ValueError):
    print("none (CPU run)")
EOF
)"
field total_seconds $((SECONDS - START))
echo "report: $REPORT"
