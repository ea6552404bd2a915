#!/usr/bin/env bash
# Task (e), the held-out Fashion-MNIST class (bag), 32 px, quickstart recipe and schedule, 3 seeds: none and QS (the
# quickstart's objective, quality.py's dcd on that recipe), then PR (the paper recipes' objective: VGG terms, own D,
# no L1 terms). Pre-registered in RESULTS ("Part 4 for the quickstart"). Core 1.
set -u
while pgrep -f run_qs_bf16.sh > /dev/null; do sleep 20; done
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 DCDGAN_VGG16=/work/shared/weights/vgg16_imagenet_caffe_features.safetensors
cd /work/photo/src-a15ea42
[ -d /work/photo/data/fashion-bag ] || /work/main/.venv/bin/python /work/main/scripts/build_fashion_paired.py /work/photo/data/fashion-bag --classes 8 || exit 1
q() { local methods=$1 name=$2; shift 2; PYTHONPATH=src taskset -c 1 /work/main/.venv/bin/python benchmarks/quality.py quickstart \
  --seeds 3 --budget 300 --methods $methods --name $name --runs-dir /work/photo/runs --results-dir /work/main/benchmarks/results \
  data.root=/work/photo/data/fashion-bag "$@"; }
q none,dcd fashion_bag_qs || exit 1
q dcd fashion_bag_pr distill.lambda_pixel=0 distill.lambda_target=0 distill.lambda_style=10000 distill.lambda_feat=10 || exit 1
