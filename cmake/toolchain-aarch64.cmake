# Cross toolchain for 64-bit ARM (Debian's crossbuild-essential-arm64 against the arm64 -dev packages installed next
# to the amd64 ones by multiarch). Written for scripts/cross.sh aarch64; usable directly with
#   cmake -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64.cmake ...
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

# libsentencepiece-dev is not Multi-Arch: same in Debian 12 (its arm64 build would replace the amd64 one), so
# scripts/cross.sh unpacks it into a private prefix instead; everything else is in /usr/lib/aarch64-linux-gnu.
set(ERNIE_CROSS_PREFIX "/opt/ernie-cross/aarch64" CACHE PATH "Private prefix of the arm64 libraries not co-installable")
list(APPEND CMAKE_PREFIX_PATH "${ERNIE_CROSS_PREFIX}/usr")

# pkg-config must see only arm64 .pc files (and the arch-independent ones), never the host's.
set(ENV{PKG_CONFIG_LIBDIR}
    "${ERNIE_CROSS_PREFIX}/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# Foreign programs (tests, gtest discovery, the CLI tests' `ernie`) run through the project's one emulator entry.
set(CMAKE_CROSSCOMPILING_EMULATOR "${CMAKE_CURRENT_LIST_DIR}/../scripts/emulate.sh;aarch64")
