#!/usr/bin/env bash
# Creates .venv (Python 3.11) with the pinned stack. Idempotent: a step whose result is already importable
# is skipped, so re-running after an interruption only does what is missing.
set -euo pipefail
case ${1:-} in -h | --help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
step() { printf '\n==> [install] %s\n' "$*"; }
pin() { grep -E "^$1==" requirements/*.txt | head -1 | cut -d: -f2; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
has() { "$VENV/bin/python" -c "$1" >/dev/null 2>&1; }

step "build tools (setuptools<70 keeps pkg_resources for mmcv's setup.py)"
"${PIP[@]}" install -q "setuptools<70" wheel ninja

if ! has "import torch, torchvision; assert torch.__version__.startswith('$(pin torch | cut -d= -f3)')"; then
  step "torch + torchvision (large download, a few minutes)"
  "${PIP[@]}" install --progress-bar on -r requirements/torch.txt
fi

step "python dependencies"
"${PIP[@]}" install -q -r requirements/base.txt -c requirements/torch.txt

if ! has "import mmcv, mmcv.ops; assert mmcv.__version__ == '$(pin mmcv | cut -d= -f3)'"; then
  step "mmcv with CPU ops from source (about 12-15 minutes on 2 cores; compiler output follows)"
  MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} "${PIP[@]}" install -v --no-build-isolation \
    -c requirements/torch.txt "$(pin mmcv)" 2>&1 | grep --line-buffered -E "Building|building|Compiling|\.cpp|Successfully|error|Error" || true
  has "import mmcv.ops" || { echo "mmcv ops failed to build, see the log above" >&2; exit 1; }
fi

if ! has "import mmseg.models"; then
  step "mmsegmentation"
  "${PIP[@]}" install -q --no-deps "$(pin mmsegmentation)"
fi

if ! has "import spatial_correlation_sampler"; then
  # Its setup.py always builds the CUDA kernel: it needs a real toolkit dir (the nvcc on PATH may be a
  # wrapper) and explicit target archs (no GPU here to detect). Without nvcc the project falls back to
  # its pure-PyTorch correlation, so a failure here is a warning, not an error.
  cuda_home=${CUDA_HOME:-$(ls -d /usr/local/cuda 2>/dev/null || true)}
  if [ -n "$cuda_home" ] && [ -f "$cuda_home/include/cuda_runtime.h" ]; then
    step "spatial-correlation-sampler (about 1 minute) with CUDA_HOME=$cuda_home"
    CUDA_HOME=$cuda_home TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0"} GPU_ARCH=${GPU_ARCH:-"80 90"} \
      "${PIP[@]}" install -q --no-build-isolation -c requirements/torch.txt "$(pin spatial-correlation-sampler)" \
      || echo "WARNING: spatial-correlation-sampler did not build; the pure-PyTorch correlation will be used" >&2
  else
    echo "WARNING: no CUDA toolkit found; skipping spatial-correlation-sampler (pure-PyTorch correlation is used)" >&2
  fi
fi

step "refign (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import torch, mmcv, mmseg, hydra; print('[install] ok: torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmseg', mmseg.__version__)"
