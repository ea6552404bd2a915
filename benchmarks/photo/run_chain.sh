#!/usr/bin/env bash
# Issue 20's remaining photo runs, in order, on core 0, 1 thread each. Every step resumes where it stopped and skips
# what is finished (run folders under $PHOTO/runs; results committed under $REPO/benchmarks/results).
# Rerun this script after a session ends: `nohup bash benchmarks/photo/run_chain.sh >> $PHOTO/chain.log 2>&1 &`
# On a fresh VM it first makes what it needs: the code copies (git worktrees), the data copy, the teachers' weights.
PHOTO=${PHOTO:-/work/photo} REPO=${REPO:-/work/main} SHARED=${SHARED:-/work/shared}  # the photo workspace, this checkout, ../shared
set -u
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 DCDGAN_VGG16=$SHARED/weights/vgg16_imagenet_caffe_features.safetensors
PY=$REPO/.venv/bin/python
RES=$REPO/benchmarks/results
while pgrep -f "quality.py horse2zebra_64 --seeds 1 --budget 6000 --methods teacher" > /dev/null; do sleep 30; done  # the teacher started alone
HERE=$(cd "$(dirname "$0")" && pwd)
[ -x $PY ] || { echo "no $PY: python3 -m venv $REPO/.venv && $REPO/.venv/bin/pip install -e '$REPO[dev]'"; exit 1; }
CODE=a15ea42  # a fixed copy, so edits to the checkout do not change runs in flight (its src/ is df9725a's: the runs so far)
git -C $REPO worktree prune
[ -d $PHOTO/src-$CODE ] || git -C $REPO worktree add -q --detach $PHOTO/src-$CODE $CODE || exit 1
mkdir -p $PHOTO/data $PHOTO/runs
[ -d $PHOTO/data/horse2zebra-128 ] || cp -r $SHARED/data/horse2zebra-128 $PHOTO/data/ || exit 1
bash $HERE/restore_weights.sh  # teachers kept on branch photo-teachers survive a VM reset
q() { local code=$1; shift; (cd $PHOTO/$code && PYTHONPATH=$PHOTO/$code/src taskset -c 0 $PY benchmarks/quality.py "$@"); }
echo "== $(date -u +%T) (c) teacher (trained by 9f81c7d; finished and committed: with its weights gone, quality.py says so and stops)"
q src-$CODE horse2zebra_64 --seeds 1 --budget 6000 --methods teacher --val-points 6 --val-metric fid \
  --runs-dir $PHOTO/runs --name horse2zebra_64 --results-dir $RES data.root=$PHOTO/data/horse2zebra-128 || exit 1
bash $HERE/save_weights.sh horse2zebra_64/b6000/teacher/seed0/student.safetensors horse2zebra_64/b6000/teacher/seed0/result.json
echo "== $(date -u +%T) (c) students, seeds 0-2, from that teacher, frozen (omgd_own: dcd_own's matched control, run last)"
q src-$CODE horse2zebra_64 --seeds 3 --budget 3000 --teacher-budget 6000 --frozen-teacher \
  --methods teacher,none,omgd,dcd,dcd_own,omgd_own --runs-dir $PHOTO/runs --name horse2zebra_64 --results-dir $RES \
  data.root=$PHOTO/data/horse2zebra-128 || exit 1
echo "== $(date -u +%T) (c) none and dcd_own in bf16 (the bf16 criterion, RESULTS 'Third speed session'; only where bf16 is native)"
if grep -q avx512_bf16 /proc/cpuinfo; then
  q src-$CODE horse2zebra_64 --seeds 3 --budget 3000 --methods none --name horse2zebra_64_bf16 --runs-dir $PHOTO/runs \
    --results-dir $RES data.root=$PHOTO/data/horse2zebra-128 train.mixed_precision=bf16 || exit 1
  q src-$CODE horse2zebra_64 --seeds 3 --budget 3000 --methods dcd_own --name horse2zebra_64_bf16 --runs-dir $PHOTO/runs \
    --results-dir $RES data.root=$PHOTO/data/horse2zebra-128 train.mixed_precision=bf16 \
    model.teacher_weights=$PHOTO/runs/horse2zebra_64/b6000/teacher/seed0/student.safetensors || exit 1
else
  echo "no native bf16 on this CPU: the bf16 runs wait for a host that has it"
fi
echo "== $(date -u +%T) (d) data and a second teacher (the first was lost with the VM)"
[ -d $PHOTO/data/edges2photo-64 ] || (cd $PHOTO/src-$CODE && $PY scripts/build_edges2photo.py $PHOTO/data/horse2zebra-128 $PHOTO/data/edges2photo-64 --size 64) || exit 1
q src-$CODE edges2photo_64 --seeds 1 --budget 8000 --methods teacher --val-points 8 --val-metric fid \
  --runs-dir $PHOTO/runs --name edges2photo_64_teacher2 --results-dir $RES data.root=$PHOTO/data/edges2photo-64 || exit 1
bash $HERE/save_weights.sh edges2photo_64_teacher2/b8000/teacher/seed0/student.safetensors edges2photo_64_teacher2/b8000/teacher/seed0/result.json
# First the six dcd_own runs the quickstart's pre-registered decision reads (RESULTS, "Part 4 for the quickstart"),
# then the omgd_own controls (does DCD add anything to the own discriminator?). Each run is its own folder, so the
# order changes nothing in what a run computes.
d2() { q src-$CODE edges2photo_64 --seeds 3 --budget 3000 --teacher-budget 8000 --frozen-teacher --methods teacher,$1 \
  --runs-dir $PHOTO/runs --name edges2photo_64_teacher2 --results-dir $RES data.root=$PHOTO/data/edges2photo-64; }
qs() { q src-$CODE edges2photo_64 --seeds 3 --budget 3000 --methods $1 --name edges2photo_64_qsobj \
  --runs-dir $PHOTO/runs --results-dir $RES data.root=$PHOTO/data/edges2photo-64 \
  distill.lambda_target=100 distill.lambda_pixel=100 distill.lambda_style=0 distill.lambda_feat=0 \
  model.teacher_weights=$PHOTO/runs/edges2photo_64_teacher2/b8000/teacher/seed0/student.safetensors; }
echo "== $(date -u +%T) (d) dcd_own from the second teacher, then the quickstart's objective as dcd_own"
d2 dcd_own || exit 1
qs dcd_own || exit 1
$PY $REPO/benchmarks/photo/verdicts.py
echo "== $(date -u +%T) (d) the matched controls: omgd_own, and the quickstart's objective as omgd_own"
d2 dcd_own,omgd_own || exit 1
qs omgd_own,dcd_own || exit 1
$PY $REPO/benchmarks/photo/verdicts.py
echo "== $(date -u +%T) done"
