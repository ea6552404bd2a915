#!/usr/bin/env bash
# (c)'s matched control of dcd_own: omgd_own (the student's own discriminator without the DCD term) x 3 seeds from
# the (c) teacher, frozen, 3,000 steps, the code copy and command of (c)'s table. Waits for run_chain.sh, then runs
# on core 0, 1 thread; resumable like it: `nohup bash benchmarks/photo/run_controls_c.sh >> $PHOTO/controls_c.log 2>&1 &`
PHOTO=${PHOTO:-/work/photo} REPO=${REPO:-/work/main}
set -u
while pgrep -f "bash .*run_chain.sh" > /dev/null; do sleep 30; done
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 DCDGAN_VGG16=${SHARED:-/work/shared}/weights/vgg16_imagenet_caffe_features.safetensors
bash "$(cd "$(dirname "$0")" && pwd)/restore_weights.sh"
cd $PHOTO/src-a15ea42 || { echo "run run_chain.sh first: it makes the code copy"; exit 1; }
echo "== $(date -u +%T) (c) omgd_own x 3 beside dcd_own, from the (c) teacher"
PYTHONPATH=src taskset -c 0 $REPO/.venv/bin/python benchmarks/quality.py horse2zebra_64 --seeds 3 --budget 3000 \
  --teacher-budget 6000 --frozen-teacher --methods teacher,dcd,dcd_own,omgd_own --runs-dir $PHOTO/runs \
  --name horse2zebra_64 --results-dir $REPO/benchmarks/results data.root=$PHOTO/data/horse2zebra-128 || exit 1
$REPO/.venv/bin/python $REPO/benchmarks/photo/verdicts.py
echo "== $(date -u +%T) done"
