#!/usr/bin/env bash
# The package as a user installs it: build the wheel, install it with its base
# dependencies only (no test, book or vision extras) into a fresh venv, and from a folder
# outside the checkout run every CLI command. Each must exit with the code expected and
# print no traceback. Run by .ci/run (`make base-install-check`); ~2 min.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"                                   # nothing below sees the checkout

"$PYTHON" -m venv venv
py=$work/venv/bin/python
$py -m pip install --quiet --disable-pip-version-check "$TORCH"
$py -m pip wheel --quiet --disable-pip-version-check --no-deps -w dist "$root"
$py -m pip install --quiet --disable-pip-version-check dist/diffusion_lib-*.whl
for extra in pytest nbval papermill jupyter_book torchvision diffusers; do
  if $py -c "import $extra" 2>/dev/null; then echo "FAIL: $extra is in the base install"; exit 1; fi
done

failures=0
# check EXPECTED_EXIT DESCRIPTION -- COMMAND...: the exit code, and no traceback in the output
check() {
  local expected=$1 what=$2; shift 3
  local code=0
  "$@" >out.log 2>&1 || code=$?
  if [ "$code" != "$expected" ] || grep -q "Traceback" out.log; then
    echo "FAIL: $what: exit $code (expected $expected)"; sed 's/^/    /' out.log | tail -20
    failures=$((failures + 1))
  else
    echo "ok:   $what (exit $code)${expected:+}"; [ "$expected" = 0 ] || sed 's/^/    /' out.log | tail -1
  fi
}
dl() { $py -m diffusion_lib "$@" --threads 1; }

check 0 "--help" -- $py -m diffusion_lib --help
for cmd in train sample evaluate; do check 0 "$cmd --help" -- $py -m diffusion_lib $cmd --help; done
check 0 "the diffusion-lib script" -- "$work/venv/bin/diffusion-lib" --help

# a 2-D .npy no test knows: three rings
$py - <<'PY'
import numpy as np
rng = np.random.default_rng(7)
k = rng.integers(0, 3, 6000)
angle = rng.uniform(0, 2 * np.pi, 6000)
centres = np.array([[-2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
pts = centres[k] + np.stack([np.cos(angle), np.sin(angle)], 1) + 0.05 * rng.normal(size=(6000, 2))
np.save("rings.npy", pts.astype(np.float32))
PY
check 0 "train on a 2-D .npy, crossing two previews" -- \
  dl train --dataset rings.npy --out run --steps 60 --checkpoint-every 30 --sample-every 30 --no-progress
for png in run/samples/step-00000030.png run/samples/step-00000060.png; do
  if [ -s "$png" ]; then echo "ok:   $png written"; else echo "FAIL: no $png"; failures=$((failures + 1)); fi
done
check 0 "sample to .npy" -- dl sample --run run --num-samples 200 --out s.npy --no-progress
check 0 "sample to .png (DDIM)" -- dl sample --run run --num-samples 200 --out s.png --sampler ddim --steps 20 --no-progress
check 0 "evaluate" -- dl evaluate --run run --num-samples 500 --sampler ddim --steps 20 --no-progress
test -s run/eval.json || { echo "FAIL: no run/eval.json"; failures=$((failures + 1)); }
check 0 "train on the bundled digits (scikit-learn), image preview" -- \
  dl train --dataset digits --out digits --steps 2 --model tiny --no-progress
test -s digits/samples/step-00000002.png || { echo "FAIL: no digits preview"; failures=$((failures + 1)); }
# the shipped MNIST model (book/models/mnist, issue 13): the README's command, then a
# short evaluate with its reference classifier (no MNIST files anywhere here)
check 0 "sample sevens from the shipped MNIST model" -- \
  dl sample --run "$root/book/models/mnist" --label 7 --guidance 2 --num-samples 64 \
  --out sevens.png --no-progress
test -s sevens.png || { echo "FAIL: no sevens.png"; failures=$((failures + 1)); }
check 0 "evaluate the shipped MNIST model" -- \
  dl evaluate --run "$root/book/models/mnist" --num-samples 50 --steps 10 --no-progress
grep -q '"class_accuracy"' eval.json || { echo "FAIL: no class accuracy"; failures=$((failures + 1)); }
# optional features and mistakes: one line, exit 2, nothing written
check 2 "--download without torchvision names the extra" -- \
  dl train --dataset mnist --data-dir nodata --download --out m --no-progress
grep -q 'diffusion_lib\[vision\]' out.log || { echo "FAIL: no extra named"; failures=$((failures + 1)); }
check 2 "an unknown dataset" -- dl train --dataset nope --out x --no-progress
check 2 "sample from a folder without a run" -- dl sample --run nowhere --num-samples 2 --out a.npy
test ! -e m -a ! -e x -a ! -e a.npy || { echo "FAIL: a refused command wrote something"; failures=$((failures + 1)); }

if [ "$failures" -ne 0 ]; then echo "base install check: $failures failure(s)"; exit 1; fi
echo "base install check: all passed"
