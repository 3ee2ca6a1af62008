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
  libre2-dev
  prometheus  # promtool, which lints the server's /metrics and checks deploy/prometheus in the tests
  nginx curl jq  # deploy/local-cluster.sh and its test (nginx in front of replicas)
  libxml2-utils  # xmllint, which the cli tests parse the SVG figures of `ernie bench --plot` with
  chromium  # headless browser for the chat page's test (tests/server/chat_page_test.cpp, through puppeteer-core)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm for the npm-based tests below, from Debian where the machine has none (a fresh Debian 12 root
# has neither; a machine with its own Node.js, e.g. NodeSource's, keeps it).
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present" >&2
fi

# npm packages of three tests: the official `openai` client, which drives `ernie serve` (tests/server/node), Ajv,
# which validates constrained outputs against their JSON Schemas (tests/server/schema_node), and the Kubernetes
# schema validators for deploy/k8s (tests/deploy/node). npm may be missing or the registry unreachable
# (CI has apt, maybe not npm): then warn and go on; those tests skip and say why.
for node_dir in tests/server/node tests/server/schema_node tests/deploy/node; do
  dir="$(dirname "$0")/../$node_dir"
  # npm writes node_modules/.package-lock.json at each install: newer than the lock file means up to date.
  if [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
    :
  elif ! command -v npm >/dev/null 2>&1; then
    echo "setup: warning: npm not found; the tests in $node_dir will be skipped" >&2
  # puppeteer-core never downloads a browser (the test uses Debian's chromium); the variable makes sure of it.
  elif ! (cd "$dir" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
    echo "setup: warning: npm ci failed in $node_dir (registry unreachable?); its tests will be skipped" >&2
  fi
done
