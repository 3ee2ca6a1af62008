#!/usr/bin/env bash
# bench/cluster_bench.sh MODEL_DIR [CONCURRENCY] [REQUESTS] — requests/s and tokens/s through nginx
# (deploy/local-cluster.sh) with 1 replica x 1 thread, 2 replicas x 1 thread, and 1 replica x 2 threads, each
# measured by `ernie bench --server` in the same run, so the three are comparable as ratios. Prints each bench's
# table; the JSON of each lands in bench-out/cluster-*.json. SERVE_ARGS after `--` go to every replica.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
model="${1:?usage: bench/cluster_bench.sh MODEL_DIR [CONCURRENCY] [REQUESTS] [-- SERVE_ARGS...]}"
concurrency="${2:-8}"
requests="${3:-32}"
shift $(($# < 3 ? $# : 3))
[ "${1:-}" = "--" ] && shift
serve_args=("$@")
ernie="${ERNIE_BIN:-$repo/build/ernie}"
mkdir -p "$repo/bench-out"

run() {  # run NAME REPLICAS THREADS
  local name="$1" replicas="$2" threads="$3" port log cluster=""
  log="$(mktemp)"
  for _ in 1 2 3; do  # a random port; another try if nginx finds it taken
    port=$((30000 + RANDOM % 20000))
    ERNIE_BIN="$ernie" bash "$repo/deploy/local-cluster.sh" --replicas "$replicas" --port "$port" --model "$model" \
      -- --threads "$threads" "${serve_args[@]}" >"$log" 2>&1 &
    cluster=$!
    for _ in $(seq 1200); do grep -qx ready "$log" && break; kill -0 "$cluster" 2>/dev/null || break; sleep 0.1; done
    grep -qx ready "$log" && break
    wait "$cluster" || true
    grep -q "could not start on" "$log" || break
  done
  grep -qx ready "$log" || { cat "$log" >&2; echo "cluster_bench: $name did not start" >&2; exit 1; }
  echo "== $name: $replicas replica(s) x $threads thread(s) behind nginx, concurrency $concurrency"
  "$ernie" bench --server "http://127.0.0.1:$port" --concurrency "$concurrency" --requests "$requests" \
    --json "$repo/bench-out/cluster-$name.json" 2>&1 | grep -v '^ernie:' || true
  kill -TERM "$cluster"
  wait "$cluster" || true
  rm -f "$log"
}
run 1x1 1 1
run 2x1 2 1
run 1x2 1 2
