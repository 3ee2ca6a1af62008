#!/usr/bin/env bash
# deploy/local-cluster.sh --replicas N --port P --model DIR [-- SERVE_ARGS...]
#
# N `ernie serve` replicas on free loopback ports behind nginx on 127.0.0.1:P, with deploy/nginx/ernie.conf as the
# site config (least connections, SSE-safe, connect failures retried on another replica). No root and no system
# nginx service: nginx runs from a generated config in a temporary directory. Each replica gets --threads so that
# together they do not oversubscribe the cores this script may use (unless SERVE_ARGS set --threads).
# Runs until SIGINT or SIGTERM, then stops every process it started (replicas finish what they are generating,
# for up to ERNIE_CLUSTER_STOP_TIMEOUT seconds, default 30) and removes its temporary files.
#
# `ernie` comes from ERNIE_BIN, else PATH; nginx from NGINX_BIN, else PATH, else /usr/sbin/nginx.
# Lines on stdout, for scripts:  replica I pid PID http://127.0.0.1:PORT   then   nginx pid PID http://127.0.0.1:P
# and finally  ready . A replica's /metrics is at its own address.
set -euo pipefail
# A shell starts a background job with SIGINT ignored, and bash cannot trap a signal ignored at its start: run
# again with the default dispositions, so that `kill -INT` stops the cluster however this script was started.
if [ -z "${ERNIE_CLUSTER_SIGNALS_RESET:-}" ]; then
  ERNIE_CLUSTER_SIGNALS_RESET=1 exec env --default-signal=INT,TERM "$BASH" "$0" "$@"
fi

usage() {
  echo "usage: $0 --replicas N --port P --model DIR [-- SERVE_ARGS...]" >&2
  exit 2
}
die() {
  echo "local-cluster: error: $*" >&2
  exit 1
}

replicas="" port="" model=""
while (($#)); do
  case "$1" in
    --replicas) replicas="${2:-}"; shift 2 || usage ;;
    --port) port="${2:-}"; shift 2 || usage ;;
    --model) model="${2:-}"; shift 2 || usage ;;
    --) shift; break ;;
    -h | --help) usage ;;
    *) echo "local-cluster: unknown argument '$1'" >&2; usage ;;
  esac
done
serve_args=("$@")
[[ "$replicas" =~ ^[1-9][0-9]*$ ]] && ((replicas <= 64)) || die "--replicas must be 1..64"
[[ "$port" =~ ^[1-9][0-9]*$ ]] && ((port <= 65535)) || die "--port must be 1..65535"
[ -n "$model" ] || die "--model DIR is required"
[ -e "$model" ] || die "no model at '$model'"
model="$(cd "$(dirname "$model")" && pwd)/$(basename "$model")"

ernie="${ERNIE_BIN:-$(command -v ernie || true)}"
[ -n "$ernie" ] && [ -x "$ernie" ] || die "no ernie program: put it on PATH or set ERNIE_BIN"
nginx="${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}"
[ -x "$nginx" ] || die "no nginx (Debian package nginx): set NGINX_BIN"
site="$(cd "$(dirname "$0")" && pwd)/nginx/ernie.conf"
[ -f "$site" ] || die "missing $site"

# Fail before loading N models if something already listens on the port (nginx would also refuse to bind it).
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  die "nginx could not start on 127.0.0.1:$port: something is listening there"
fi

# Threads: the CPUs this process may run on (nproc honours affinity and cpusets), shared out; at least one each.
threads_given=0
for a in "${serve_args[@]}"; do
  case "$a" in -t | --threads | --threads=* | -t[0-9]*) threads_given=1 ;; esac
done
cores="$(nproc)"
threads=$((cores / replicas))
((threads >= 1)) || threads=1
if ((threads_given == 0 && replicas > cores)); then
  echo "local-cluster: warning: $replicas replicas on $cores CPUs: one thread each, the cores are oversubscribed" >&2
fi
thread_args=()
((threads_given)) || thread_args=(--threads "$threads")

tmp="$(mktemp -d "${TMPDIR:-/tmp}/ernie-cluster.XXXXXX")"
chmod 755 "$tmp"  # nginx's workers run as nobody when it is started as root, and keep their temp paths here
pids=()
nginx_pid=""
stopping=0
cleanup() {
  ((stopping)) && return
  stopping=1
  trap '' INT TERM
  local all=("${pids[@]}")
  [ -n "$nginx_pid" ] && all+=("$nginx_pid")
  ((${#all[@]})) && kill -TERM "${all[@]}" 2>/dev/null || true
  local deadline=$((SECONDS + ${ERNIE_CLUSTER_STOP_TIMEOUT:-30}))
  for pid in "${all[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "local-cluster: pid $pid did not stop in time; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo "local-cluster: stopping" >&2; exit 0' INT TERM

show_log() {
  echo "--- $1" >&2
  awk '!seen[$0]++' "$1" | tail -n 20 >&2 || true  # nginx writes its start-up errors to stderr and its log alike
}

# Replicas on free ports: each binds port 0 and names the port it got, so no two processes race for one.
declare -a replica_port
for ((i = 1; i <= replicas; i++)); do
  : >"$tmp/replica-$i.log"  # before the fork: the wait below reads it at once
  "$ernie" serve --model "$model" --host 127.0.0.1 --port 0 "${thread_args[@]}" "${serve_args[@]}" \
    >"$tmp/replica-$i.log" 2>&1 &
  pids+=($!)
done
start_deadline=$((SECONDS + ${ERNIE_CLUSTER_START_TIMEOUT:-300}))
for ((i = 1; i <= replicas; i++)); do
  pid="${pids[$((i - 1))]}" log="$tmp/replica-$i.log" p=""
  while :; do
    kill -0 "$pid" 2>/dev/null || { show_log "$log"; die "replica $i exited while starting"; }
    ((SECONDS < start_deadline)) || { show_log "$log"; die "replica $i not healthy in time"; }
    [ -n "$p" ] || p="$(sed -n 's|^ernie: listening on http://127\.0\.0\.1:\([0-9]*\) .*|\1|p' "$log" | head -n 1 || true)"
    if [ -n "$p" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$p/health")" = 200 ]; then
      break
    fi
    sleep 0.2
  done
  replica_port[i]="$p"
  echo "replica $i pid $pid http://127.0.0.1:$p"
done

# nginx, from a generated main config that includes the shipped site file unchanged.
for ((i = 1; i <= replicas; i++)); do
  echo "server 127.0.0.1:${replica_port[i]} max_fails=1 fail_timeout=10s;"
done >"$tmp/ernie-replicas.conf"
echo "listen 127.0.0.1:$port;" >"$tmp/ernie-listen.conf"
cat >"$tmp/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    # Which replica answered (handy when trying the cluster, and what tests/deploy/cluster_test.sh checks).
    # The shipped site file leaves it out: on a public port it would tell clients the internal addresses.
    add_header X-Ernie-Replica \$upstream_addr always;
    client_body_temp_path $tmp/client_body;
    proxy_temp_path $tmp/proxy;
    fastcgi_temp_path $tmp/fastcgi;
    uwsgi_temp_path $tmp/uwsgi;
    scgi_temp_path $tmp/scgi;
    include $site;
}
EOF
"$nginx" -t -q -p "$tmp" -c "$tmp/nginx.conf" 2>"$tmp/nginx-test.log" || { show_log "$tmp/nginx-test.log"; die "nginx rejected its config"; }
"$nginx" -p "$tmp" -c "$tmp/nginx.conf" 2>>"$tmp/nginx-error.log" &
nginx_pid=$!
while [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/health")" != 200 ]; do
  kill -0 "$nginx_pid" 2>/dev/null || { show_log "$tmp/nginx-error.log"; nginx_pid=""; die "nginx could not start on 127.0.0.1:$port"; }
  ((SECONDS < start_deadline)) || { show_log "$tmp/nginx-error.log"; die "nginx not healthy in time"; }
  sleep 0.2
done
echo "nginx pid $nginx_pid http://127.0.0.1:$port"
echo "ready"
per_replica="$threads threads each"
((threads_given)) && per_replica="the threads SERVE_ARGS set"
echo "local-cluster: $replicas replica(s), $per_replica, behind http://127.0.0.1:$port; Ctrl-C stops them" >&2

# Run until signalled; a replica that dies is reported once, and nginx routes around it.
declare -A reported
while :; do
  for ((i = 1; i <= replicas; i++)); do
    pid="${pids[$((i - 1))]}"
    if [ -z "${reported[$i]:-}" ] && ! kill -0 "$pid" 2>/dev/null; then
      reported[$i]=1
      echo "local-cluster: replica $i (pid $pid) exited; nginx sends its share to the others" >&2
    fi
  done
  kill -0 "$nginx_pid" 2>/dev/null || { show_log "$tmp/nginx-error.log"; nginx_pid=""; die "nginx exited"; }
  sleep 1 &
  wait $! || true
done
