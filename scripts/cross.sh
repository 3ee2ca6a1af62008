#!/usr/bin/env bash
# scripts/cross.sh ARCH — cross-builds ernie-edge for ARCH (aarch64 | riscv64) into build-ARCH/: the program is
# build-ARCH/ernie and the test programs lie beside it. Installs what it needs first (like scripts/setup.sh; needs
# root or sudo). Run the results with scripts/emulate.sh ARCH BINARY ARGS..., or the whole suite with
#   ctest --test-dir build-ARCH
# (the toolchain file makes ctest run every test program through scripts/emulate.sh).
# Environment: CROSS_JOBS (build parallelism, default: nproc), ERNIE_CROSS_PREFIX (private library prefix).
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:-}"
case "$arch" in
  aarch64) deb_arch=arm64 ;;
  riscv64) deb_arch=riscv64 ;;
  *) echo "usage: scripts/cross.sh aarch64|riscv64" >&2; exit 2 ;;
esac
prefix="${ERNIE_CROSS_PREFIX:-/opt/ernie-cross/$arch}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "cross: installing ${missing[*]}" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# The host's own build tools and the arch-independent headers come from the native set-up.
bash scripts/setup.sh

if [ "$arch" = aarch64 ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $sudo dpkg --add-architecture arm64
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  fi
  # Multi-Arch: same packages install beside their amd64 twins. libhwy, gtest/gmock, RE2 and cpp-httplib (a shared
  # library in Debian, with its TLS/compression deps) are needed for arm64; nlohmann-json and CLI11 are headers.
  apt_install crossbuild-essential-arm64 qemu-user \
    libhwy-dev:arm64 libgtest-dev:arm64 libgmock-dev:arm64 libcpp-httplib-dev:arm64 libre2-dev:arm64
  # libsentencepiece0/-dev are not Multi-Arch: same (installing the arm64 ones would remove the amd64 ones that the
  # native build needs), so their .debs are unpacked into a private prefix that the toolchain file and
  # scripts/emulate.sh know. Its own dependencies (libc6, libstdc++6, libgcc-s1) are multiarch and already there.
  version="$(apt-cache show libsentencepiece-dev:arm64 | sed -n 's/^Version: //p' | head -1)"
  stamp="$prefix/.sentencepiece-$version"
  if [ ! -e "$stamp" ]; then
    tmp="$(mktemp -d)"
    (cd "$tmp" && apt-get download -q "libsentencepiece0:arm64=$version" "libsentencepiece-dev:arm64=$version")
    $sudo mkdir -p "$prefix"
    for deb in "$tmp"/*.deb; do $sudo dpkg -x "$deb" "$prefix"; done
    # The .pc file names prefix=/usr; point it at the private copy.
    $sudo sed -i "s|^prefix=.*|prefix=$prefix/usr|" "$prefix/usr/lib/aarch64-linux-gnu/pkgconfig/sentencepiece.pc"
    $sudo touch "$stamp"
    rm -rf "$tmp"
  fi
  toolchain=cmake/toolchain-aarch64.cmake
else
  bash scripts/cross-riscv64-sysroot.sh "$prefix"
  toolchain=cmake/toolchain-riscv64.cmake
fi

build="build-$arch"
# Benchmarks are left out (libbenchmark is not needed to test, and qemu timings mean nothing).
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_TOOLCHAIN_FILE="$toolchain" \
  -DERNIE_CROSS_PREFIX="$prefix" -DERNIE_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "${CROSS_JOBS:-$(nproc)}"
