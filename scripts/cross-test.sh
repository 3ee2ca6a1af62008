#!/usr/bin/env bash
# scripts/cross-test.sh ARCH — cross-builds (scripts/cross.sh ARCH) and runs the whole ctest suite under qemu-user:
# every test program goes through scripts/emulate.sh (the toolchain file's CMAKE_CROSSCOMPILING_EMULATOR), the CLI
# tests' `ernie` too (build-ARCH/ernie-emulated). On aarch64 the kernel tests run at qemu's default SVE length and
# again at 128 and 256 bits where SVE is compiled (ctest labels sve128 / sve256). Prints the build and test times.
# Environment: CROSS_JOBS (build jobs), CTEST_JOBS (tests at a time), both default to the core count.
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:-}"
case "$arch" in
  aarch64 | riscv64) ;;
  *) echo "usage: scripts/cross-test.sh aarch64|riscv64" >&2; exit 2 ;;
esac
start=$SECONDS
bash scripts/cross.sh "$arch"
built=$SECONDS
status=0
# Emulated code runs 10-50x slower than native: generous per-test timeout.
ctest --test-dir "build-$arch" --output-on-failure -j "${CTEST_JOBS:-$(nproc)}" --timeout 1800 || status=$?
# The SIMD targets the kernel tests ran on, for the log (tests/kernels/targets_test.cpp).
for suffix in "" .sve128 .sve256; do
  if ctest --test-dir "build-$arch" -N -R "^SimdTargets\.EveryExpectedTargetRuns${suffix//./\\.}\$" | grep -q "Test *#"; then
    line="$(ctest --test-dir "build-$arch" -V -R "^SimdTargets\.EveryExpectedTargetRuns${suffix//./\\.}\$" 2>&1 |
      grep -o "kernel tests run on SIMD targets: .*" | head -1)"
    echo "cross-test $arch${suffix:+ ($suffix)}: $line" >&2
  fi
done
echo "cross-test $arch: build $((built - start)) s, tests $((SECONDS - built)) s" >&2
exit "$status"
