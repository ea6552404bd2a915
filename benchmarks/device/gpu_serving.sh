#!/usr/bin/env bash
# Lent GPU, one call (issue 21): GPU serving. `dcdgan bench STUDENT --vs resnet_9blocks` and `--vs` the ngf-64 teacher
# at batch 1 and 64, per precision (fp32 with TF32 off, tf32, bf16, fp16) and runner (cuda-graph, eager, compile),
# a precision check against fp32, and `dcdgan translate` of a folder per runner. Carries nothing (random weights,
# generated images); the device's own python3 (torch there) runs the tree's src/. Each step has its own timeout
# and appends to $OUT/results.jsonl as it finishes; $OUT/table.md is the table for RESULTS.md. About 7.5 minutes:
#   run(command="bash benchmarks/device/gpu_serving.sh", timeout_s=540)
# Dry run on a CPU machine (tiny sizes, fp32/bf16, cuda-graph recorded as refused): OUT=/tmp/dry bash benchmarks/device/gpu_serving.sh --dry
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
python=$(command -v python3 || command -v python)
out=${OUT:?set OUT to the results folder}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
timeout 470 "$python" benchmarks/device/gpu_serving.py --out "$out" --budget-s "${BUDGET_S:-450}" "$@"
echo "gpu_serving rc $?"
ls -la "$out"
