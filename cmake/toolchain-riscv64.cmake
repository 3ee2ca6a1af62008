# Cross toolchain for 64-bit RISC-V: Debian 12's clang-16 (which targets riscv64 and knows the vector extension)
# with GNU ld, against a Debian 13 "trixie" riscv64 sysroot made by scripts/cross-riscv64-sysroot.sh (Debian 12 has no
# riscv64 port). Written for scripts/cross.sh riscv64.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR riscv64)
set(ERNIE_CROSS_PREFIX "/opt/ernie-cross/riscv64" CACHE PATH "Where scripts/cross.sh put the riscv64 sysroot")
set(CMAKE_SYSROOT "${ERNIE_CROSS_PREFIX}/sysroot")
set(CMAKE_C_COMPILER clang-16)
set(CMAKE_CXX_COMPILER clang++-16)
set(CMAKE_C_COMPILER_TARGET riscv64-linux-gnu)
set(CMAKE_CXX_COMPILER_TARGET riscv64-linux-gnu)
set(CMAKE_LIBRARY_ARCHITECTURE riscv64-linux-gnu)
# rv64gc is Debian's riscv64 baseline (the Allwinner D1's C906 and every RVA20 board run it).
set(CMAKE_C_FLAGS_INIT "-march=rv64gc")
set(CMAKE_CXX_FLAGS_INIT "-march=rv64gc")
# Linked by GNU ld (binutils-riscv64-linux-gnu): lld 16 cannot do RISC-V linker relaxation (R_RISCV_ALIGN).

set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(ENV{PKG_CONFIG_LIBDIR} "${CMAKE_SYSROOT}/usr/lib/riscv64-linux-gnu/pkgconfig:${CMAKE_SYSROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${CMAKE_SYSROOT}")
set(ENV{PKG_CONFIG_PATH} "")

set(CMAKE_CROSSCOMPILING_EMULATOR "${CMAKE_CURRENT_LIST_DIR}/../scripts/emulate.sh;riscv64")
