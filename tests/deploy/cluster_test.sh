#!/usr/bin/env bash
# tests/deploy/cluster_test.sh ERNIE_BIN — deploy/local-cluster.sh with 2 replicas of the demo model behind nginx:
#  1. 16 concurrent greedy requests through nginx get the same text as the same requests sent one at a time, and
#     least_conn spread them over both replicas;
#  2. one replica killed while 12 streams run: the streams in flight on it end with a clean error (a truncated SSE
#     stream, no [DONE]; never a hang), the others finish, every request after the kill succeeds on the survivor,
#     and /health through nginx answers 200 throughout;
#  3. SIGINT stops the cluster (the signal a shell's background job starts ignoring, so the harder one): the script
#     exits 0, every process it started is gone, its temporary files too.
# Loopback only; every wait is bounded. Registered in ctest (label "deploy").
set -euo pipefail
ernie="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
model="$repo/models/demo"
command -v curl >/dev/null || { echo "SKIP: curl not installed (scripts/setup.sh)"; exit 77; }
command -v jq >/dev/null || { echo "SKIP: jq not installed (scripts/setup.sh)"; exit 77; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "SKIP: nginx not installed (scripts/setup.sh)"; exit 77; }

tmp="$(mktemp -d)"
cluster=""
cleanup() {
  [ -n "$cluster" ] && kill -TERM "$cluster" 2>/dev/null && wait "$cluster" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "cluster test: $*" >&2
  [ -f "$tmp/cluster.err" ] && { echo "--- local-cluster stderr" >&2; tail -n 30 "$tmp/cluster.err" >&2; }
  exit 1
}

# A port nothing listens on (nginx binds it; a clash is reported by local-cluster.sh and retried here).
free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
  return 1
}

mkdir -p "$tmp/cluster-tmp"
for attempt in 1 2 3; do
  port="$(free_port)"
  TMPDIR="$tmp/cluster-tmp" ERNIE_BIN="$ernie" bash "$repo/deploy/local-cluster.sh" --replicas 2 --port "$port" \
    --model "$model" -- --threads 1 >"$tmp/cluster.out" 2>"$tmp/cluster.err" &
  cluster=$!
  for _ in $(seq 600); do
    grep -qx ready "$tmp/cluster.out" && break
    kill -0 "$cluster" 2>/dev/null || break
    sleep 0.1
  done
  grep -qx ready "$tmp/cluster.out" && break
  wait "$cluster" 2>/dev/null || true
  cluster=""
  grep -q "could not start on" "$tmp/cluster.err" || fail "the cluster did not start"
done
[ -n "$cluster" ] || fail "no free port for nginx after 3 tries"
url="http://127.0.0.1:$port"
mapfile -t replica_pids < <(awk '/^replica /{print $4}' "$tmp/cluster.out")
mapfile -t replica_urls < <(awk '/^replica /{print $5}' "$tmp/cluster.out")
nginx_pid="$(awk '/^nginx /{print $3}' "$tmp/cluster.out")"
((${#replica_pids[@]} == 2)) || fail "expected 2 replicas, got: $(cat "$tmp/cluster.out")"

completion() {  # completion PROMPT_INDEX OUT: one greedy request, its text in OUT
  local body
  body="$(jq -cn --arg p "$(printf '第%d首：床前明月光，' "$1")" '{prompt: $p, max_tokens: 24, temperature: 0}')"
  curl -sS --max-time 60 -o "$2.json" -w '%{http_code}' "$url/v1/completions" -H 'Content-Type: application/json' \
    -d "$body" >"$2.status" || true
  jq -r '.choices[0].text' "$2.json" >"$2" 2>/dev/null || true
}
metrics() {  # metrics REPLICA_URL: its /metrics text (read whole: a reader that stops early would fail under pipefail)
  curl -sf --max-time 5 "$1/metrics" || true
}
served() {  # served REPLICA_URL: completions that replica answered 200
  metrics "$1" | awk '/^ernie_http_requests_total\{endpoint="\/v1\/completions",status="200"\}/{print $2}'
}

# 1. Concurrent through nginx = alone.
mkdir -p "$tmp/alone" "$tmp/together"
for i in $(seq 16); do completion "$i" "$tmp/alone/$i"; done
for i in $(seq 16); do completion "$i" "$tmp/together/$i" & done
wait $(jobs -p | grep -vx "$cluster") 2>/dev/null || true
for i in $(seq 16); do
  [ "$(cat "$tmp/alone/$i.status")" = 200 ] || fail "request $i alone: HTTP $(cat "$tmp/alone/$i.status")"
  [ "$(cat "$tmp/together/$i.status")" = 200 ] || fail "request $i concurrent: HTTP $(cat "$tmp/together/$i.status")"
  [ -s "$tmp/alone/$i" ] || fail "request $i alone: no text"
  cmp -s "$tmp/alone/$i" "$tmp/together/$i" ||
    fail "request $i: concurrent text '$(cat "$tmp/together/$i")' differs from alone '$(cat "$tmp/alone/$i")'"
done
a="$(served "${replica_urls[0]}")" b="$(served "${replica_urls[1]}")"
((${a:-0} > 0 && ${b:-0} > 0)) || fail "least_conn did not use both replicas (served $a and $b)"
((${a:-0} + ${b:-0} == 32)) || fail "the replicas served $a + $b completions, not 32"
echo "cluster test: 16 concurrent greedy requests equal alone; replicas served $a and $b"

# nginx's own answers: /metrics is the replicas', not the public port's; a body over the server's 1 MiB limit is
# refused by nginx itself (never sent on), in the JSON shape the replicas use; a replica's /metrics is reachable.
status="$(curl -s -o "$tmp/metrics.json" -w '%{http_code}' --max-time 10 "$url/metrics")"
[ "$status" = 404 ] && jq -e '.error.code == 404' "$tmp/metrics.json" >/dev/null || fail "public /metrics answered $status"
head -c 1100000 /dev/zero | tr '\0' 'a' >"$tmp/big.txt"
status="$(curl -s -D "$tmp/big.head" -o "$tmp/big.json" -w '%{http_code}' --max-time 30 "$url/v1/completions" \
  -H 'Content-Type: application/json' --data-binary @"$tmp/big.txt")"
[ "$status" = 413 ] && jq -e '.error.type == "payload_too_large"' "$tmp/big.json" >/dev/null ||
  fail "an 1.1 MB body answered $status: $(head -c 200 "$tmp/big.json")"
! grep -qi '^x-ernie-replica: [0-9]' "$tmp/big.head" || fail "the 1.1 MB body was sent on to a replica"
grep -q '^ernie_num_requests_running' <<<"$(metrics "${replica_urls[0]}")" || fail "a replica's /metrics is not reachable"
echo "cluster test: public /metrics 404, 1.1 MB body 413 from nginx, replicas' /metrics reachable"

# 2. Kill a replica during a run.
health_log="$tmp/health.log"
(while :; do curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 "$url/health" >>"$health_log"; sleep 0.05; done) &
health_loop=$!
mkdir -p "$tmp/streams"
stream() {  # stream I: a long greedy SSE stream; headers, body and curl's exit code in files
  local body
  body="$(jq -cn --arg p "$(printf '第%d首：' "$1")" '{prompt: $p, max_tokens: 200, temperature: 0, ignore_eos: true, stream: true}')"
  local rc=0
  curl -sS -N --max-time 90 -D "$tmp/streams/$1.head" -o "$tmp/streams/$1.body" "$url/v1/completions" \
    -H 'Content-Type: application/json' -d "$body" 2>"$tmp/streams/$1.err" || rc=$?
  echo "$rc" >"$tmp/streams/$1.rc"
}
stream_pids=()
for i in $(seq 12); do
  stream "$i" &
  stream_pids+=($!)
done
victim="${replica_urls[0]#http://}"
# Wait until every stream has its headers (it is generating on a replica) and the victim has some of them.
for _ in $(seq 300); do
  heads="$(cat "$tmp"/streams/*.head 2>/dev/null | grep -ci '^x-ernie-replica:' || true)"
  on_victim="$(cat "$tmp"/streams/*.head 2>/dev/null | grep -ci "^x-ernie-replica: $victim" || true)"
  ((heads == 12 && on_victim > 0)) && break
  sleep 0.02
done
((heads == 12)) || fail "only $heads of 12 streams started"
# Freeze the victim first, so none of its streams can finish between this snapshot and the kill.
kill -STOP "${replica_pids[0]}"
in_flight=()
for i in $(seq 12); do
  if grep -qi "^x-ernie-replica: $victim" "$tmp/streams/$i.head" && ! grep -q '^data: \[DONE\]' "$tmp/streams/$i.body"; then
    in_flight+=("$i")
  fi
done
kill -KILL "${replica_pids[0]}"
((${#in_flight[@]} > 0)) || fail "every stream on the victim had finished before the kill; nothing was tested"
wait "${stream_pids[@]}" || true
failed=0 finished=0
for i in $(seq 12); do
  rc="$(cat "$tmp/streams/$i.rc")"
  if [[ " ${in_flight[*]} " == *" $i "* ]]; then
    # A clean error: curl reports the truncated chunked stream (18) or the reset (56), and [DONE] never came.
    [[ "$rc" == 18 || "$rc" == 56 ]] || fail "stream $i in flight on the killed replica: curl exit $rc, not a clean error"
    ! grep -q '^data: \[DONE\]' "$tmp/streams/$i.body" || fail "stream $i on the killed replica claims to have finished"
    failed=$((failed + 1))
  else
    [ "$rc" = 0 ] || fail "stream $i (not on the killed replica) failed: curl exit $rc: $(cat "$tmp/streams/$i.err")"
    grep -q '^data: \[DONE\]' "$tmp/streams/$i.body" || fail "stream $i did not finish"
    finished=$((finished + 1))
  fi
done
survivor="${replica_urls[1]#http://}"
after_ok=0
mkdir -p "$tmp/after"
for i in $(seq 16); do completion "$i" "$tmp/after/$i" & done
wait $(jobs -p | grep -vx -e "$cluster" -e "$health_loop") 2>/dev/null || true
for i in $(seq 16); do
  [ "$(cat "$tmp/after/$i.status")" = 200 ] || fail "request $i after the kill: HTTP $(cat "$tmp/after/$i.status")"
  cmp -s "$tmp/alone/$i" "$tmp/after/$i" || fail "request $i after the kill: text differs from before"
  after_ok=$((after_ok + 1))
done
kill "$health_loop" 2>/dev/null || true
wait "$health_loop" 2>/dev/null || true
health_checks="$(wc -l <"$health_log")"
bad_health="$(grep -cvx 200 "$health_log" || true)"
((bad_health == 0)) || fail "/health through nginx answered non-200 $bad_health of $health_checks times"
grep -q "replica 1 (pid ${replica_pids[0]}) exited" "$tmp/cluster.err" || sleep 1.5
echo "cluster test: kill: ${#in_flight[@]} streams in flight on the killed replica failed cleanly, $finished others" \
  "finished, $after_ok/16 requests after the kill succeeded on $survivor, /health 200 in $health_checks/$health_checks checks"

# 3. Stop.
kill -INT "$cluster"
deadline=$((SECONDS + 60))
while kill -0 "$cluster" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
kill -0 "$cluster" 2>/dev/null && fail "local-cluster.sh did not stop within 60 s of SIGINT"
rc=0
wait "$cluster" || rc=$?
cluster=""
((rc == 0)) || fail "local-cluster.sh exited $rc after SIGINT"
for pid in "${replica_pids[@]}" "$nginx_pid"; do
  ! kill -0 "$pid" 2>/dev/null || fail "pid $pid still runs after the cluster stopped"
done
[ -z "$(ls -A "$tmp/cluster-tmp")" ] || fail "temporary files left: $(ls -A "$tmp/cluster-tmp")"
echo "cluster test: stopped cleanly"
