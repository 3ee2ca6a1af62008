#!/usr/bin/env bash
# scripts/cross-riscv64-sysroot.sh PREFIX — the riscv64 libraries for scripts/cross.sh riscv64. Debian 12 has no
# riscv64 port, Debian 13 "trixie" does (official since 13), so PREFIX/sysroot is a trixie riscv64 tree: apt, with
# a private state folder (PREFIX/apt) that points it at trixie's riscv64 packages, resolves and downloads the -dev
# packages the project links and their dependencies from the Debian archive (signatures checked with
# debian-archive-keyring's trixie keys), and dpkg -x unpacks each; nothing is run, so no binfmt or chroot is needed.
# (Debian 12's debootstrap 1.0.128 stops on trixie's merged-/usr packages: "file already exists".)
# qemu-riscv64 -L PREFIX/sysroot then finds the loader and every library (scripts/emulate.sh). Idempotent: a
# finished sysroot (its stamp file) is kept.
set -euo pipefail
prefix="${1:?usage: scripts/cross-riscv64-sysroot.sh PREFIX}"
sysroot="$prefix/sysroot"
mirror="${ERNIE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
packages=(qemu-user clang-16 binutils-riscv64-linux-gnu debian-archive-keyring)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
packages=(libc6-dev libstdc++-14-dev libhwy-dev libsentencepiece-dev libgtest-dev libgmock-dev libcpp-httplib-dev
  nlohmann-json3-dev libcli11-dev libre2-dev
  libprotobuf-dev)  # trixie's sentencepiece.pc requires protobuf-lite
# The stamp holds the package list, so that a sysroot made before a package joined the list is made again.
stamp="$sysroot/.ernie-sysroot-done"
[ -e "$stamp" ] && [ "$(cat "$stamp")" = "${packages[*]}" ] && exit 0
state="$prefix/apt"
$sudo rm -rf "$sysroot" "$state"
$sudo mkdir -p "$sysroot" "$state/lists/partial" "$state/cache/archives/partial" "$state/preferences.d"
$sudo touch "$state/status"
echo "deb [arch=riscv64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" |
  $sudo tee "$state/sources.list" >/dev/null
apt_opts=(-o "Dir::State=$state" -o "Dir::State::Lists=$state/lists" -o "Dir::State::status=$state/status"
  -o "Dir::Cache=$state/cache" -o "Dir::Etc::SourceList=$state/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::Etc::PreferencesParts=$state/preferences.d" -o "APT::Architecture=riscv64" -o "APT::Architectures::=riscv64"
  -o "APT::Install-Recommends=false" -o "Debug::NoLocking=true")
$sudo apt-get "${apt_opts[@]}" update -q
$sudo apt-get "${apt_opts[@]}" install -y -q --download-only "${packages[@]}"
for deb in "$state"/cache/archives/*.deb; do $sudo dpkg -x "$deb" "$sysroot"; done
# Trixie keeps everything in /usr; the loader is looked up as /lib/ld-linux-riscv64-lp64d.so.1.
for dir in lib bin sbin; do
  [ -e "$sysroot/$dir" ] || $sudo ln -s "usr/$dir" "$sysroot/$dir"
done
# Absolute symlinks must resolve inside the sysroot for the linker.
$sudo find "$sysroot/usr/lib" -type l -lname '/*' | while read -r link; do
  $sudo ln -sfn "$sysroot$(readlink "$link")" "$link"
done
echo "${packages[*]}" | $sudo tee "$stamp" >/dev/null
