#!/usr/bin/env bash
# Builds the tests with a sanitizer and runs them; any sanitizer report fails its test, and so this script.
#   scripts/sanitize.sh asan   AddressSanitizer (+ leaks) and UndefinedBehaviorSanitizer, the whole suite, build-asan/
#   scripts/sanitize.sh tsan   ThreadSanitizer on the threaded code: the thread pool, the scheduler and the server,
#                              build-tsan/ (only those test programs are built)
# Builds with JOBS parallel jobs (default: the core count); ctest runs $(nproc) tests at a time. Prints the build and
# test times at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:-}"
case "$kind" in
  asan | tsan) ;;
  *)
    echo "usage: $0 asan|tsan" >&2
    exit 2
    ;;
esac
bash scripts/setup.sh

build="build-$kind"
jobs="${JOBS:-$(nproc)}"
# Debug: asserts stay on; CMakeLists.txt compiles sanitized code at -O1 -g.
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DERNIE_SANITIZE="$kind" -DERNIE_BUILD_BENCH=OFF >/dev/null

# Every report is fatal: the first one stops the program with a non-zero status (abort), which fails its test.
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1:strict_init_order=1"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1"
# Each suppression in scripts/tsan.supp says why it is a false report (all from uninstrumented libcpp-httplib).
export TSAN_OPTIONS="halt_on_error=1:abort_on_error=1:second_deadlock_stack=1:suppressions=$PWD/scripts/tsan.supp"

# The soak tests' bounds on resident-memory growth are compiled out here (ERNIE_SANITIZER): they measure the
# allocator, and a sanitizer's is not the program's (ASan's quarantine and fake stacks grow RSS by 25-150 MiB over a
# soak, TSan's shadow ~30 MiB). LeakSanitizer checks leaks instead; the Release suite keeps the bounds.
ctest_args=(--test-dir "$build" --output-on-failure -j "$(nproc)" --timeout 900)
status=0
start=$SECONDS
if [ "$kind" = asan ]; then
  cmake --build "$build" -j "$jobs"
  built=$SECONDS
  # The package test (cpack + dpkg -x) checks packaging and the deploy tests check configuration files and nginx,
  # not memory: the Release suite runs them.
  ctest "${ctest_args[@]}" -LE '^(package|deploy)$' || status=$?
else
  # Only the threaded code: the thread pool, the scheduler and the server.
  cmake --build "$build" -j "$jobs" --target test_core test_engine test_server
  built=$SECONDS
  ctest "${ctest_args[@]}" -R '^(ThreadPool|SchedulerTest)\.' || status=$?
  ctest "${ctest_args[@]}" -L '^server$' || status=$?
fi
echo "sanitize $kind: build $((built - start)) s, tests $((SECONDS - built)) s" >&2
exit "$status"
