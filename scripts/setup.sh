#!/usr/bin/env bash
# Installs every Debian 12 package that building, testing and benchmarking ernie-edge needs.
# Idempotent: packages already present are left alone. Needs root (or sudo) for apt.
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
