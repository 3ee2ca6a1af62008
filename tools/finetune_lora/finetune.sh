#!/usr/bin/env bash
# Rebuilds models/demo-quatrain-lora from Debian packages and models/demo: the base model's corpus (for replay,
# tools/train_demo/corpus.py) -> the quatrain data set (data.py) -> the adapter and its training log
# (finetune.py) -> its reference outputs (reference.py). Extra arguments go to finetune.py (e.g. --steps 20 for a
# quick try). WORK=dir keeps the intermediate files there (default: a fresh temporary directory); OUT=dir writes
# the adapter elsewhere than models/demo-quatrain-lora; BASE=dir trains on another checkpoint of our format.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
base=${BASE:-$here/../../models/demo}
out=${OUT:-$here/../../models/demo-quatrain-lora}
work=${WORK:-$(mktemp -d)}
mkdir -p "$work/base" "$out"
out=$(cd "$out" && pwd)

/usr/bin/python3 "$here/../train_demo/corpus.py" "$work/base" >/dev/null
/usr/bin/python3 "$here/data.py" "$work" "$base/heldout.txt"
# One thread for training (the result depends on the thread count only through float summation order); the
# float32 evaluation products go through OpenBLAS with as many threads as torch uses.
export OPENBLAS_NUM_THREADS=1
/usr/bin/python3 "$here/finetune.py" --work "$work" --base "$base" --out "$out" "$@"
/usr/bin/python3 "$here/reference.py" "$base" "$out"
echo "finetune.sh: done in $SECONDS s (work files in $work)"
