#!/usr/bin/env bash
# Every GPU measurement of the speed tables (docs/speed.md), in one call of the `device` tool (~6-8 min on an
# H100/H200). Here, once: `make gpu-wheels` (the image there lacks pydantic); then run
#     bash benchmarks/gpu_session.sh
# with carry [".whl"]. Each step's output goes to $OUT (or ./gpu_results); a failing step does
# not stop the others, and the script exits 1 if any failed.
set -uo pipefail
out=${OUT:-gpu_results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
failed=0
step() {  # step NAME COMMAND...: run it, its output on screen and in $out/NAME
  local name=$1
  shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$out/$name" || failed=1
}
step gpu.txt nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step cuda_checks.txt python3 benchmarks/cuda_checks.py
step training.json python3 benchmarks/training.py --preset coco --device cuda --images 8192 \
  --repeats 2
step training_compile.json python3 benchmarks/training.py --preset coco --device cuda \
  --images 8192 --repeats 2 --compile --skip-sat
step feature_extraction.txt python3 benchmarks/feature_extraction.py --device cuda \
  --encoder resnet101 --images 20000
exit $failed
