#!/usr/bin/env bash
# scripts/emulate.sh ARCH BINARY ARGS... — runs a program cross-built by scripts/cross.sh under qemu-user: the
# project's one way to run foreign binaries (ctest, the CLI tests' `ernie`, CI and outside checks all come here).
#   ERNIE_QEMU_CPU  the CPU model and its properties. Defaults: aarch64 "max" (NEON, BF16, SVE, SVE2, dot product,
#                   I8MM; SVE at qemu's default length), riscv64 "rv64,v=true,vext_spec=v1.0,vlen=256".
#                   E.g. ERNIE_QEMU_CPU=max,sve-default-vector-length=16 for 128-bit SVE (the length is in bytes),
#                   =max,sve-default-vector-length=32 for 256-bit, =cortex-a72 for NEON only.
#   ERNIE_CROSS_PREFIX  where scripts/cross.sh put the libraries it could not install system-wide.
# The program's environment passes through; its exit status and signals are the program's (qemu is exec'd).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: scripts/emulate.sh aarch64|riscv64 BINARY [ARGS...]" >&2
  exit 2
fi
arch="$1"
shift
prefix="${ERNIE_CROSS_PREFIX:-/opt/ernie-cross/$arch}"
# A program that re-executes itself (ernie bench's worker processes) must come back through here: the host cannot
# run the foreign binary. It reads the command from ERNIE_REEXEC. ERNIE_EMULATED tells tests that measure the
# process (resident memory) that what they would see is qemu's.
self="$(cd "$(dirname "$0")" && pwd)/emulate.sh"
case "$arch" in
  aarch64)
    # libc6:arm64 and the other multiarch libraries live in the host's root (/lib/ld-linux-aarch64.so.1,
    # /usr/lib/aarch64-linux-gnu), so no -L is needed; sentencepiece is in the private prefix.
    cpu="${ERNIE_QEMU_CPU:-max}"
    exec qemu-aarch64 -cpu "$cpu" -E "LD_LIBRARY_PATH=$prefix/usr/lib/aarch64-linux-gnu" \
      -E "ERNIE_REEXEC=$self $arch" -E "ERNIE_EMULATED=qemu-$arch" "$@"
    ;;
  riscv64)
    # A debootstrapped Debian 13 sysroot holds the loader and every library.
    cpu="${ERNIE_QEMU_CPU:-rv64,v=true,vext_spec=v1.0,vlen=256}"
    exec qemu-riscv64 -cpu "$cpu" -L "$prefix/sysroot" -E "ERNIE_REEXEC=$self $arch" -E "ERNIE_EMULATED=qemu-$arch" "$@"
    ;;
  *)
    echo "emulate: unknown ARCH '$arch' (aarch64 or riscv64)" >&2
    exit 2
    ;;
esac
