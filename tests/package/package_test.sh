#!/usr/bin/env bash
# tests/package/package_test.sh BUILD_DIR DEB_ARCH — the Debian package of a build works on its own: cpack makes
# the .deb, dpkg -x unpacks it into an empty folder, and the unpacked /usr/bin/ernie (through scripts/emulate.sh for
# arm64) runs the demo model it carries, and `ernie serve` configured by the packaged /etc/default/ernie-serve the
# way the systemd unit runs it answers /health. Registered in ctest (label "package") by CMakeLists.txt.
set -euo pipefail
build="$(cd "$1" && pwd)"
arch="$2"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
tmp="$(mktemp -d)"
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "package test: $*" >&2; exit 1; }

(cd "$build" && cpack -G DEB -B "$tmp/out" >"$tmp/cpack.log" 2>&1) || { cat "$tmp/cpack.log" >&2; fail "cpack failed"; }
deb="$(ls "$tmp"/out/ernie-edge_*_"$arch".deb 2>/dev/null | head -1)"
[ -n "$deb" ] || fail "no ernie-edge_*_$arch.deb in $(ls "$tmp/out")"
[ "$(dpkg-deb --field "$deb" Architecture)" = "$arch" ] || fail "Architecture is not $arch"
dpkg-deb --field "$deb" Depends | grep -q libsentencepiece0 || fail "Depends lacks libsentencepiece0"

root="$tmp/root"
dpkg -x "$deb" "$root"
for f in usr/bin/ernie usr/share/ernie/demo/config.json usr/share/ernie/demo/model.safetensors \
  usr/share/ernie/demo/tokenizer.model usr/lib/systemd/system/ernie-serve.service etc/default/ernie-serve \
  usr/share/man/man1/ernie.1 usr/share/ernie/demo-quatrain-lora/adapter_config.json \
  usr/share/ernie/demo-quatrain-lora/adapter_model.safetensors; do
  [ -f "$root/$f" ] || fail "the package lacks /$f"
done
[ -x "$root/usr/bin/ernie" ] || fail "/usr/bin/ernie is not executable"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/default/ernie-serve ||
  fail "/etc/default/ernie-serve is not a conffile"
grep -q '^ExecStart=/usr/bin/ernie serve' "$root/usr/lib/systemd/system/ernie-serve.service" || fail "unit ExecStart"
grep -q '^EnvironmentFile=/etc/default/ernie-serve' "$root/usr/lib/systemd/system/ernie-serve.service" ||
  fail "unit EnvironmentFile"
if command -v systemd-analyze >/dev/null 2>&1; then
  # Checks the unit's syntax; the binary path it names is checked above (it is not installed here).
  systemd-analyze verify "$root/usr/lib/systemd/system/ernie-serve.service" 2>&1 | grep -v "/usr/bin/ernie" |
    grep -i "error\|invalid\|unknown" && fail "systemd-analyze verify complains about the unit"
fi

runner=()
[ "$arch" = arm64 ] && runner=("$repo/scripts/emulate.sh" aarch64)
ernie=("${runner[@]}" "$root/usr/bin/ernie")
built=("${runner[@]}" "$build/ernie")
prompt="床前明月光，"
# Run away from the source tree, so nothing but the package can supply the model.
cd "$tmp"
"${ernie[@]}" run --prompt "$prompt" --seed 2 --max-tokens 16 >"$tmp/out.txt" 2>"$tmp/err.txt" ||
  { cat "$tmp/err.txt" >&2; fail "the packaged ernie failed on the demo model"; }
grep -q "ernie: loaded $root/usr/share/ernie/demo " "$tmp/err.txt" ||
  { cat "$tmp/err.txt" >&2; fail "the packaged binary did not load the packaged demo model"; }
[ -s "$tmp/out.txt" ] || fail "no text generated"
# Same seed, same weights: the build's own binary on the source tree's demo writes the same text.
"${built[@]}" run --prompt "$prompt" --seed 2 --max-tokens 16 >"$tmp/expected.txt" 2>/dev/null
cmp -s "$tmp/out.txt" "$tmp/expected.txt" || fail "packaged output differs: '$(cat "$tmp/out.txt")' vs '$(cat "$tmp/expected.txt")'"
# And with the packaged adapter, as the source tree's.
lora="$root/usr/share/ernie/demo-quatrain-lora"
"${ernie[@]}" run --prompt "$prompt" --seed 2 --max-tokens 16 --lora "$lora" >"$tmp/out.txt" 2>"$tmp/err.txt" ||
  { cat "$tmp/err.txt" >&2; fail "the packaged ernie failed with the packaged adapter"; }
"${built[@]}" run --prompt "$prompt" --seed 2 --max-tokens 16 --lora "$repo/models/demo-quatrain-lora" \
  >"$tmp/expected.txt" 2>/dev/null
cmp -s "$tmp/out.txt" "$tmp/expected.txt" || fail "packaged adapter output differs: '$(cat "$tmp/out.txt")'"

# The service as systemd starts it: the packaged defaults file's variables in the environment (here with port 0,
# a free port, instead of 8080), then `ernie serve $ERNIE_OPTS`.
(
  set -a
  # shellcheck disable=SC1091
  . "$root/etc/default/ernie-serve"
  ERNIE_PORT=0
  ERNIE_OPTS="--max-batch 2"
  set +a
  exec "${ernie[@]}" serve $ERNIE_OPTS
) 2>"$tmp/serve.txt" &
server=$!
port=""
for _ in $(seq 1 300); do
  port="$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/serve.txt" | head -1)"
  [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/health" >"$tmp/health.txt" 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$tmp/serve.txt" >&2; fail "ernie serve exited"; }
  sleep 0.2
done
grep -q '"ok"' "$tmp/health.txt" 2>/dev/null || { cat "$tmp/serve.txt" >&2; fail "/health never answered ok"; }
# The defaults file's ERNIE_DTYPE=int8 reached the server.
grep -q "parameters, Q8_0, " "$tmp/serve.txt" || { cat "$tmp/serve.txt" >&2; fail "ERNIE_DTYPE=int8 not applied"; }
kill -TERM "$server"
wait "$server" || fail "ernie serve did not exit 0 on SIGTERM"
server=""
echo "package test: $(basename "$deb") unpacked, demo run and service start passed"
