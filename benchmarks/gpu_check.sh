#!/usr/bin/env bash
# The one prepared check for a session that has an NVIDIA GPU (issue 14), about 8 minutes:
#
#   1. the GPU tests: tests/test_gpu.py, and tests/test_kernels.py's CUDA cases (every cell and
#      form, with and without resets, against the NumPy reference) where hypothesis is installed
#   2. benchmarks/gpu_speed.py --quick: the six configs in both precision columns against cuDNN,
#      and `charlm train` end to end for one shape
#   3. with --quality (or QUALITY=1), or QUALITY=auto (the default) when steps 1-2 took under
#      4 minutes: configs/shakespeare-gpu.yaml for its 3 minutes, target val loss <= 1.45
#
# Run from the repository root: bash benchmarks/gpu_check.sh [--quality | --no-quality]
# Installs nothing (CuPy and a CUDA PyTorch must be there). Logs and a summary go to
# $OUT/gpu_check/ when OUT is set, else to ./gpu_check/. Exit status: 0 when every step ran and
# met its target, else the number of steps that failed.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
DEST="${OUT:-$PWD}/gpu_check"
mkdir -p "$DEST"
QUALITY="${QUALITY:-auto}"
case "${1:-}" in
  --quality) QUALITY=1 ;;
  --no-quality) QUALITY=0 ;;
  "") ;;
  *) echo "usage: bash benchmarks/gpu_check.sh [--quality | --no-quality]" >&2; exit 2 ;;
esac

START=$SECONDS
FAILED=0
SUMMARY="$DEST/summary.txt"
: > "$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME LIMIT_S COMMAND...: run with a time limit, log to $DEST/NAME.log, note the outcome
step() {
  local name=$1 limit=$2
  shift 2
  local begin=$SECONDS
  timeout "$limit" "$@" > "$DEST/$name.log" 2>&1
  local rc=$?
  note "$name: exit $rc after $((SECONDS - begin)) s (log: $DEST/$name.log)"
  tail -n 25 "$DEST/$name.log"
  [ "$rc" -eq 0 ] || FAILED=$((FAILED + 1))
}

note "gpu_check $(date -u +%FT%TZ) on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
"$PY" -c "import cupy, torch; print('cupy', cupy.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$SUMMARY"

step tests 180 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_gpu.py
if "$PY" -c "import hypothesis" 2>/dev/null; then
  step kernels 120 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_kernels.py -k cuda
else
  note "kernels: skipped (hypothesis missing: tests/test_kernels.py's CUDA cases not run)"
fi

step speed 240 "$PY" benchmarks/gpu_speed.py --quick --json "$DEST/gpu_speed.json"

if [ "$QUALITY" = auto ]; then
  if [ $((SECONDS - START)) -lt 240 ]; then QUALITY=1; else QUALITY=0; fi
fi
if [ "$QUALITY" = 1 ]; then
  step quality 230 "$PY" benchmarks/quality.py --config configs/shakespeare-gpu.yaml \
    --set train.device=cuda --target 180:1.45
else
  note "quality: skipped (QUALITY=$QUALITY, $((SECONDS - START)) s spent)"
fi

note "total: $((SECONDS - START)) s, $FAILED step(s) failed"
exit "$FAILED"
