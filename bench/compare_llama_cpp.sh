#!/usr/bin/env bash
# Side-by-side speed of ernie-edge and llama.cpp on the same checkpoint, threads and lengths, in one run.
#
#   bench/compare_llama_cpp.sh LLAMA_BIN_DIR [MODEL_DIR] [THREADS] [REPS]
#
# LLAMA_BIN_DIR holds llama.cpp's llama-bench and llama-quantize, built from source beside the project (never part
# of it). MODEL_DIR (default: a random-weights checkpoint with the official 0.3B shapes, made here with
# `ernie make-random`) is written once as a BF16 GGUF by `ernie quantize`; llama-quantize makes Q8_0 and Q4_0 from
# it. Each weight type then runs in both engines back to back, alternating, so that the machine's drift hits both:
# llama-bench (pp32, pp512, tg128) and `ernie bench` (the same lengths, converting the safetensors at load).
# Prints one table with each engine's medians and ours / llama.cpp; raw JSON stays in $OUT (default /tmp/ernie-vs-llama).
set -euo pipefail
cd "$(dirname "$0")/.."

llama_bin=${1:?usage: bench/compare_llama_cpp.sh LLAMA_BIN_DIR [MODEL_DIR] [THREADS] [REPS]}
out=${OUT:-/tmp/ernie-vs-llama}
model=${2:-$out/ernie-0.3b-random}
threads=${3:-2}
reps=${4:-5}
ernie=build/ernie
mkdir -p "$out"

if [ ! -f "$model/config.json" ]; then
  "$ernie" make-random --config configs/ernie-4.5-0.3b.json --out "$model"
fi
[ -f "$out/ernie-bf16.gguf" ] || "$ernie" quantize --model "$model" --type bf16 --out "$out/ernie-bf16.gguf"
for t in Q8_0 Q4_0; do
  [ -f "$out/llq-$t.gguf" ] || "$llama_bin/llama-quantize" "$out/ernie-bf16.gguf" "$out/llq-$t.gguf" "$t" >/dev/null 2>&1
done

# ours-dtype:llama-file pairs
pairs=("bf16:ernie-bf16.gguf" "int8:llq-Q8_0.gguf" "int4:llq-Q4_0.gguf")
for pair in "${pairs[@]}"; do
  dtype=${pair%%:*} file=${pair#*:}
  echo "== $dtype vs llama.cpp $file" >&2
  "$llama_bin/llama-bench" -m "$out/$file" -t "$threads" -p 32,512 -n 128 -r "$reps" -o json >"$out/llama-$dtype.json" 2>/dev/null
  "$ernie" bench --model "$model" --dtype "$dtype" --threads "$threads" --prompt-len 32,512 --gen 128 \
    --reps "$reps" --json "$out/ernie-$dtype.json" >/dev/null 2>&1
done

python3 - "$out" "$threads" "${pairs[@]}" <<'EOF'
import json, statistics, sys
out, threads, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
print(f"{threads} threads, medians; llama.cpp = llama-bench on the GGUF, ours = ernie bench on the safetensors")
print(f"{'type':6} {'metric':8} {'llama.cpp':>10} {'ours':>10} {'ours/llama':>11}")
for pair in pairs:
    dtype, file = pair.split(":")
    llama = {}
    for run in json.load(open(f"{out}/llama-{dtype}.json")):
        key = f"pp{run['n_prompt']}" if run["n_gen"] == 0 else f"tg{run['n_gen']}"
        llama[key] = statistics.median(run["samples_ts"])
    ours_run = json.load(open(f"{out}/ernie-{dtype}.json"))["results"][0]
    ours = {f"pp{p['prompt_tokens']}": p["tokens_per_second"]["median"] for p in ours_run["prefill"]}
    ours["tg128"] = ours_run["decode"]["tokens_per_second"]["median"]
    for key in ("pp32", "pp512", "tg128"):
        print(f"{dtype:6} {key:8} {llama[key]:10.1f} {ours[key]:10.1f} {ours[key] / llama[key]:10.2f}x")
EOF
