#!/usr/bin/env bash
# Installs every Debian 12 package that building, testing and benchmarking ernie-edge needs, and the npm packages
# of the server's client test. Idempotent: what is already present is left alone. Needs root (or sudo) for apt.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libsentencepiece-dev sentencepiece
  nlohmann-json3-dev
  libhwy-dev
  libgtest-dev libgmock-dev
  libbenchmark-dev
  libcli11-dev
  libcpp-httplib-dev
  prometheus  # promtool, which lints the server's /metrics in the tests
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present" >&2
fi

# The official `openai` npm client, for the server test that drives `ernie serve` with it. npm may be missing or the
# registry unreachable (CI has apt, maybe not npm): then warn and go on; that one test skips and says why.
node_dir="$(dirname "$0")/../tests/server/node"
if [ -d "$node_dir/node_modules/openai" ]; then
  :
elif ! command -v npm >/dev/null 2>&1; then
  echo "setup: warning: npm not found; the openai client test will be skipped" >&2
elif ! (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
  echo "setup: warning: npm ci failed in $node_dir (registry unreachable?); the openai client test will be skipped" >&2
fi
