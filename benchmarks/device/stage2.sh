#!/usr/bin/env bash
# Lent GPU, call 2 of 3 (carry .devx2: horse2zebra-128, second part of the FID Inception file).
# Sizes the quality benchmark's step budget: one step-rate probe per (method, seed), all 15 at once on the GPU as
# benchmarks/quality.py --jobs 15 will run them, at the same overrides; writes .devstate/rate.json (kept for call 3).
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 DCDGAN_VGG16=$PWD/.devx1/vgg16_caffe_to_relu4_3.safetensors OMP_NUM_THREADS=1
mkdir -p .devstate
(cd .devx2/horse2zebra-128 && sha256sum -c --quiet SHA256SUMS && echo "horse2zebra-128 checksums OK")
for seed in 0 1 2; do for m in teacher none omgd dcd dcd_gan; do
  python3 benchmarks/device/step_rate.py horse2zebra_128 --method $m --seed $seed --device cuda --warmup 5 --steps 30 \
      data.root=.devx2/horse2zebra-128 distill.schedule=interleaved > .devstate/rate_${m}_$seed.json 2> .devstate/rate_${m}_$seed.err &
done; done
wait
for f in .devstate/rate_*.err; do echo "== $f"; tail -n 2 "$f"; done > "$OUT/rate_errors.txt"
grep -h "^{" .devstate/rate_*.json | tee "$OUT/rates.jsonl"
python3 - <<'PY'
import json, pathlib
rates = [json.loads(l) for p in pathlib.Path(".devstate").glob("rate_*.json") for l in p.read_text().splitlines() if l.startswith("{")]
slowest = min(r["steps_per_s"] for r in rates)
pathlib.Path(".devstate/rate.json").write_text(json.dumps({"slowest_steps_per_s": slowest, "probes": len(rates)}))
print(f"{len(rates)} probes; slowest {slowest:.2f} steps/s")
PY
