#!/usr/bin/env bash
# Task (e): the quickstart's teacher trained alone, 3 seeds (context for the table: how far ahead of `none` it is).
set -u
while pgrep -f run_e.sh > /dev/null; do sleep 15; done
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 DCDGAN_VGG16=/work/shared/weights/vgg16_imagenet_caffe_features.safetensors
cd /work/photo/src-a15ea42
PYTHONPATH=src taskset -c 1 /work/main/.venv/bin/python benchmarks/quality.py quickstart --seeds 3 --budget 300 \
  --methods teacher,none,dcd --name fashion_bag_qs --runs-dir /work/photo/runs --results-dir /work/main/benchmarks/results \
  data.root=/work/photo/data/fashion-bag
