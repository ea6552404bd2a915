#!/usr/bin/env bash
# Issue 20 part 5: photo task (c), horse -> zebra at 128 px, in ONE call of a lent GPU: the teacher trained first,
# alone, then frozen for the four students (none, omgd, dcd, dcd_own) x 3 seeds, at most 6 processes at once.
# The FID Inception file (87 MB) cannot travel with the data in one call (64 MiB), so the GPU trains only and selects
# on validation L1 to the frozen teacher (a fixed reference); each finished run's deliverable and curves are copied
# under $OUT at once (a call that dies still returns what finished), and the test scores (FID/KID) are computed back
# here on CPU by quality.py from those files.
#
#   here:     bash benchmarks/device/photo_c128.sh prepare ../shared/weights/vgg16_imagenet_caffe_features.safetensors ../shared/data/horse2zebra-128
#   device:   run(command="bash benchmarks/device/photo_c128.sh run", carry=[".devphoto"], timeout_s=590)
#   here:     bash benchmarks/device/photo_c128.sh score <files_at>/runs      (FID/KID on the test split, the table)
#   CPU proof (tiny budget): DEVICE=cpu TEACHER_BUDGET=4 BUDGET=2 SEEDS=1 OUT=/tmp/out EXTRA="model.teacher_ngf=8 ..." bash ... run
#                            then RESULTS=/tmp/out/scored EXTRA="... eval.inception=STAND_IN.pt" ... bash ... score /tmp/out/runs
set -uo pipefail
cd "$(dirname "$0")/../.."
TEACHER_BUDGET=${TEACHER_BUDGET:-2400}; BUDGET=${BUDGET:-1500}; SEEDS=${SEEDS:-3}; JOBS=${JOBS:-6}; DEVICE=${DEVICE:-cuda}
LIMIT=${LIMIT:-530}                       # seconds for the whole training, inside the call's 590
METHODS=teacher,none,omgd,dcd,dcd_own
NAME=horse2zebra_128_gpu
COMMON=(horse2zebra_128 --seeds "$SEEDS" --budget "$BUDGET" --teacher-budget "$TEACHER_BUDGET" --frozen-teacher --methods "$METHODS"
        --val-points 3 --val-metric l1 --name "$NAME" distill.schedule=interleaved distill.task_every=1)

case "${1:-}" in
prepare)  # the carried folder: horse2zebra-128 as one tar (2,661 small files weigh more on disk) + VGG16 up to relu4_3
  vgg=$2; data=$3
  mkdir -p .devphoto
  tar cf .devphoto/horse2zebra-128.tar -C "$(dirname "$data")" "$(basename "$data")"
  python - "$vgg" <<'PY'
import sys
from safetensors import safe_open
from safetensors.torch import save_file
with safe_open(sys.argv[1], "pt") as f:  # features.0 .. features.22 (relu4_3): the layers the losses read, and the metadata
    state = {k: f.get_tensor(k) for k in f.keys() if int(k.split(".")[-2]) <= 22}
    save_file(state, ".devphoto/vgg16_caffe_to_relu4_3.safetensors", metadata=f.metadata())
PY
  du -sh .devphoto ;;
run)
  : "${OUT:?set OUT (the device tool sets it)}"
  mkdir -p /tmp/photo && tar xf .devphoto/horse2zebra-128.tar -C /tmp/photo || exit 3
  export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 DCDGAN_VGG16=$PWD/.devphoto/vgg16_caffe_to_relu4_3.safetensors
  python3 -c "import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())" | tee "$OUT/device.txt"
  RUNS=/tmp/photo/runs
  copy_finished() {  # each finished run's deliverable and curves, as soon as it exists
    for d in "$RUNS"/"$NAME"/b*/*/seed*; do
      [ -f "$d/student.safetensors" ] || continue
      dest="$OUT/runs/$NAME/${d#"$RUNS/$NAME/"}"
      [ -f "$d/train_wall.json" ] && mkdir -p "$dest" && cp "$d/train_wall.json" "$dest"/   # written just after the run ends
      [ -f "$dest/student.safetensors" ] && continue
      mkdir -p "$dest" && cp "$d"/{student.safetensors,student.json,config.yaml,metrics.jsonl} "$dest"/ 2>/dev/null
    done
  }
  ( while sleep 10; do copy_finished; done ) & copier=$!
  timeout "$LIMIT" python3 benchmarks/quality.py "${COMMON[@]}" --device "$DEVICE" --jobs "$JOBS" --threads 1 --train-only \
      --runs-dir "$RUNS" --results-dir "$OUT/results" data.root=/tmp/photo/horse2zebra-128 ${EXTRA:-} 2>&1 | tee "$OUT/quality.log"
  echo "quality rc ${PIPESTATUS[0]}" | tee -a "$OUT/quality.log"
  sleep 1; kill $copier 2>/dev/null; copy_finished
  find "$OUT" -type f | sort ;;
score)  # here, on CPU, from what came back: the deliverables are scored on the test split (FID/KID, papers' protocol)
  returned=$2
  # RESULTS: where the result JSONs go; a proof with a stand-in Inception sets it, so its numbers never mix with real ones
  python benchmarks/quality.py "${COMMON[@]}" --runs-dir "$returned" --results-dir "${RESULTS:-benchmarks/results}" \
      data.root="${DATA:-../shared/data/horse2zebra-128}" ${EXTRA:-} ;;
*)
  echo "usage: $0 prepare VGG16_FILE HORSE2ZEBRA_128 | run | score RETURNED_RUNS_DIR" >&2; exit 2 ;;
esac
