#!/usr/bin/env bash
# tests/deploy/dockerfile_test.sh — deploy/container/Dockerfile keeps the shape that stops it drifting from the
# documented build, since no Docker engine here can build it: both stages are Debian 12; the build stage runs
# scripts/build.sh (which runs scripts/setup.sh, the one list of packages) and packages with cpack; the run stage
# installs that .deb (its Depends are the runtime libraries) and runs as a non-root user; the build context leaves
# out local build trees. Registered in ctest (label "deploy").
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
file="$repo/deploy/container/Dockerfile"
fail() { echo "dockerfile test: $*" >&2; exit 1; }
[ -f "$file" ] || fail "no $file"

# Instructions, with continuation lines joined and comments dropped.
instructions="$(sed -e '/^[[:space:]]*#/d' "$file" | sed -e ':a' -e '/\\$/N; s/\\\n/ /; ta')"
froms="$(grep -E '^FROM ' <<<"$instructions" | awk '{print $2}')"
[ "$(wc -l <<<"$froms")" -ge 2 ] || fail "not multi-stage"
while read -r image; do
  [[ "$image" =~ ^debian:(12|bookworm)(-slim)?$ ]] || fail "base image '$image' is not Debian 12"
done <<<"$froms"

build_stage="$(awk '/^FROM /{n++} n==1' <<<"$instructions")"
run_stage="$(awk '/^FROM /{n++} n>=2' <<<"$instructions")"
grep -qE '^RUN .*bash scripts/build\.sh' <<<"$build_stage" || fail "the build stage does not run scripts/build.sh"
grep -q 'scripts/setup.sh' "$repo/scripts/build.sh" || fail "scripts/build.sh no longer runs scripts/setup.sh"
grep -qE 'cpack -G DEB' <<<"$build_stage" || fail "the build stage does not make the Debian package"
grep -qE '^COPY --from=build .*ernie-edge_.*\.deb' <<<"$run_stage" || fail "the run stage does not take the .deb"
grep -qE '^RUN .*apt-get install .*ernie-edge_.*\.deb' <<<"$run_stage" || fail "the run stage does not install the .deb"
if grep -qE '^RUN .*(cmake|ninja|g\+\+)' <<<"$run_stage"; then fail "the run stage builds; it should only install"; fi
user="$(grep -E '^USER ' <<<"$run_stage" | tail -n 1 | awk '{print $2}')"
[ -n "$user" ] || fail "no USER: the server would run as root"
[[ "${user%%:*}" != root && "${user%%:*}" != 0 ]] || fail "USER $user is root"
grep -qE '^ENTRYPOINT \["ernie"\]' <<<"$run_stage" || fail "the entrypoint is not ernie"
# The package the run stage installs names its libraries by hand (cmake/packaging.cmake): the ones the program links.
deps="$(sed -n 's/.*CPACK_DEBIAN_PACKAGE_DEPENDS "\(.*\)".*/\1/p' "$repo/cmake/packaging.cmake")"
for lib in libhwy1 libsentencepiece0 libcpp-httplib0.11 libre2-9; do
  grep -q "$lib" <<<"$deps" || fail "the .deb's Depends lack $lib"
done
for ignored in 'build\*/' '\*\*/node_modules/'; do
  grep -qx "$ignored" "$repo/.dockerignore" || fail ".dockerignore does not leave out $ignored"
done
echo "dockerfile test: multi-stage Debian 12, built by scripts/build.sh, installed from its .deb, runs as $user"
