#!/usr/bin/env bash
# The quickstart's own objective in fp32 and in bf16 (3 seeds, its 300-step schedule, online teacher), core 1:
# does train.mixed_precision=auto's bf16 keep the quickstart's quality on a native-bf16 CPU? (not a pre-registered
# criterion: a safety check beside it)
set -u
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 DCDGAN_VGG16=/work/shared/weights/vgg16_imagenet_caffe_features.safetensors
cd /work/photo/src-a15ea42
for p in no bf16; do
  PYTHONPATH=src taskset -c 1 /work/main/.venv/bin/python benchmarks/quality.py quickstart --seeds 3 --budget 300 \
    --methods dcd --name quickstart_precision_$p --runs-dir /work/photo/runs --results-dir /work/main/benchmarks/results \
    train.mixed_precision=$p || exit 1
done
