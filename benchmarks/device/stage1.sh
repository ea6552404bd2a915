#!/usr/bin/env bash
# Lent GPU, call 1 of 3 (prepare.sh fills the carried folders; carry .devx1: VGG16 conv weights to relu4_3, first part of the FID Inception file).
# The environment, a CUDA smoke of the real CLI (CycleGAN and pix2pix objectives, every student method, bf16,
# validation and checkpoints), `dcdgan bench --device cuda`, and the GPU latency table of issue 8.
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 DCDGAN_VGG16=$PWD/.devx1/vgg16_caffe_to_relu4_3.safetensors
python3 -c "import sys, torch, accelerate, torchmetrics; print('python', sys.version.split()[0], 'torch', torch.__version__, 'accelerate', accelerate.__version__, 'torchmetrics', torchmetrics.__version__, torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
mkdir -p .devstate
quiet="train.max_steps=8 eval.every=4 eval.metric=l1 eval.final=false train.checkpoint_every=4 train.sample_every=8 train.log_every=4"
smoke() { label=$1; shift; python3 -m dcdgan distill "$@" --run-dir /tmp/smoke/$label --quiet > "$OUT/smoke_$label.log" 2>&1; echo "smoke $label -> rc $?"; }
smoke u_dcd_gan quickstart_unpaired $quiet distill.student_gan_weight=1 train.mixed_precision=bf16 &
smoke u_none quickstart_unpaired $quiet distill.method=none &
smoke p_dcd quickstart $quiet &
wait
tail -n 3 "$OUT"/smoke_*.log
ls /tmp/smoke/*/ | head -40
python3 -m dcdgan bench mobile_resnet_9blocks --vs resnet_9blocks --device cuda --precision fp16 --runs 20 --json > "$OUT/bench_cli_fp16.json"; echo "bench rc $?"
python3 -m dcdgan bench mobile_resnet_9blocks --vs resnet_9blocks --device cuda --precision fp32 --runs 20 --json > "$OUT/bench_cli_fp32.json"; echo "bench rc $?"
python3 benchmarks/latency.py --device cuda --size 256 --runs 30 --warmup 5 --json "$OUT/gpu_latency.json" 2>"$OUT/gpu_latency.err" | tee "$OUT/gpu_latency.md"
