#!/usr/bin/env bash
# bf16 quality check on (c): the student trained alone, fp32 (the (c) table's own `none` runs) then bf16, 3 seeds,
# 3,000 steps, core 1 (the foreground of the session of 2026-12-05 afternoon), code df9725a. Only on a CPU with native
# bf16. What it had not finished, run_chain.sh carries on.
PHOTO=${PHOTO:-/work/photo} REPO=${REPO:-/work/main} SHARED=${SHARED:-/work/shared}  # the photo workspace, this checkout, ../shared
set -u
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 DCDGAN_VGG16=$SHARED/weights/vgg16_imagenet_caffe_features.safetensors
grep -q avx512_bf16 /proc/cpuinfo || { echo "no native bf16 on this CPU: not run"; exit 1; }
PY=$REPO/.venv/bin/python
cd $PHOTO/src-df9725a && export PYTHONPATH=$PHOTO/src-df9725a/src
taskset -c 1 $PY benchmarks/quality.py horse2zebra_64 --seeds 3 --budget 3000 --methods none \
  --runs-dir $PHOTO/runs --name horse2zebra_64 --results-dir $REPO/benchmarks/results data.root=$PHOTO/data/horse2zebra-128
taskset -c 1 $PY benchmarks/quality.py horse2zebra_64 --seeds 3 --budget 3000 --methods none \
  --runs-dir $PHOTO/runs --name horse2zebra_64_bf16 --results-dir $REPO/benchmarks/results data.root=$PHOTO/data/horse2zebra-128 \
  train.mixed_precision=bf16
