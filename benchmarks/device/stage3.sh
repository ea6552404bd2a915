#!/usr/bin/env bash
# Lent GPU, call 3 of 3 (carry .devx3: last part of the FID Inception file): issue 10 task (c), horse2zebra at
# 128 px, every method x 3 seeds at once on the GPU, for the step budget the probe of call 2 allows in TRAIN_S
# seconds of training (argument 1). Results, logs and the students come back under $OUT.
set -uo pipefail
TRAIN_S=${1:-300}; LIMIT=${2:-480}; FALLBACK_BUDGET=${3:-1200}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 DCDGAN_VGG16=$PWD/.devx1/vgg16_caffe_to_relu4_3.safetensors DCDGAN_INCEPTION=/tmp/inception.pt
cat .devx1/inc.part1 .devx2/inc.part2 .devx3/inc.part3 > /tmp/inception.pt
echo "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34  /tmp/inception.pt" | sha256sum -c || exit 3
BUDGET=$(python3 -c "import json; r = json.load(open('.devstate/rate.json'))['slowest_steps_per_s']; print(max(${MIN_BUDGET:-300}, int(r * $TRAIN_S * 0.8 / 30) * 30))" || echo $FALLBACK_BUDGET)
echo "budget $BUDGET steps (training target $TRAIN_S s, limit $LIMIT s)"
timeout $LIMIT python3 benchmarks/quality.py horse2zebra_128 --device cuda --seeds 3 --budget $BUDGET --jobs 15 --threads 1 --name h2z128_gpu \
    --runs-dir bench-runs/quality data.root=.devx2/horse2zebra-128 distill.schedule=interleaved 2>&1 | tee "$OUT/quality.log"
echo "quality rc ${PIPESTATUS[0]}"
cd bench-runs/quality/h2z128_gpu && tar czf "$OUT/results.tgz" --exclude='*.ckpt' --exclude='*.safetensors' --exclude='*.npz' --exclude=samples --exclude=tb . \
    && tar czf "$OUT/students.tgz" $(find ./b*/{none,omgd,dcd,dcd_gan} \( -name 'student.safetensors' -o -name 'student.json' -o -name 'config.yaml' \)) \
    && tar czf "$OUT/teacher_seed0.tgz" ./b*/teacher/seed0/student.safetensors ./b*/teacher/seed0/student.json ./b*/teacher/seed0/config.yaml; ls -la "$OUT"
