#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang-16 in build-fuzz/ and runs each for a while over a copy of its
# seed corpus, so that runs never write into the repository.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 20 seconds, every target
#
# Fails (non-zero exit) when any target finds a crash, leak, undefined behaviour, timeout or out-of-memory; the
# reproducer is left in build-fuzz/findings/<target>/ and the log in build-fuzz/logs/<target>.log. Ends with one
# summary line per target: executions, executions per second, result. Environment: FUZZ_JOBS (build jobs, default 1),
# FUZZ_ARGS (extra libFuzzer flags).
set -euo pipefail

seconds="${1:-20}"
shift || true
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build-fuzz"
all_targets=(safetensors_fuzz safetensors_index_fuzz gguf_fuzz config_fuzz lora_adapter_fuzz tokenizer_fuzz
             chat_template_fuzz request_fuzz stop_strings_fuzz utf8_fuzz)
targets=("$@")
((${#targets[@]})) || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $t "* ]] || { echo "fuzz: unknown target $t (known: ${all_targets[*]})" >&2; exit 2; }
done

# clang-16 with libFuzzer and the sanitizer runtimes, as scripts/setup.sh installs the rest.
packages=(clang-16 libclang-rt-16-dev libfuzzer-16-dev cmake ninja-build pkg-config)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "fuzz: installing ${missing[*]}" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

build_start=$SECONDS
if [ ! -f "$build/build.ninja" ]; then
  CC=clang-16 CXX=clang++-16 cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DERNIE_BUILD_FUZZERS=ON -DERNIE_BUILD_TESTS=OFF -DERNIE_BUILD_BENCH=OFF >/dev/null
fi
cmake --build "$build" -j "${FUZZ_JOBS:-1}" --target "${targets[@]}"
echo "fuzz: build took $((SECONDS - build_start)) s" >&2

# Leaks are findings too; ASan's own exit code is what libFuzzer reports as a crash.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}"
sym="$(command -v llvm-symbolizer-16 || command -v llvm-symbolizer || true)"
[ -z "$sym" ] || export ASAN_SYMBOLIZER_PATH="$sym" UBSAN_SYMBOLIZER_PATH="$sym"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
mkdir -p "$build/logs"
summary=()
failed=0
for t in "${targets[@]}"; do
  work="$build/corpus-work/$t"
  findings="$build/findings/$t"
  rm -rf "$work"
  mkdir -p "$work" "$findings"
  [ -d "$root/fuzz/corpus/$t" ] && cp -r "$root/fuzz/corpus/$t/." "$work/"
  dict=()
  [ -f "$root/fuzz/$t.dict" ] && dict=("-dict=$root/fuzz/$t.dict")
  log="$build/logs/$t.log"
  echo "fuzz: running $t for ${seconds} s" >&2
  set +e
  # shellcheck disable=SC2086
  "$build/fuzz/$t" "$work" "${dict[@]}" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=8192 \
    -print_final_stats=1 -artifact_prefix="$findings/" ${FUZZ_ARGS:-} >"$log" 2>&1
  rc=$?
  set -e
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
  if [ "$rc" -eq 0 ]; then
    result="ok"
  else
    failed=1
    artifact="$(ls -t "$findings" 2>/dev/null | head -1)"
    result="FAILED (exit $rc; $(grep -m1 -oE 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer): [a-z-]+|runtime error|fuzz contract violated' "$log" || echo 'see log'); reproducer: ${artifact:+$findings/$artifact}; log: $log)"
    tail -n 40 "$log" >&2
  fi
  summary+=("$(printf 'fuzz: %-24s %12s execs %8s exec/s  %s' "$t" "${execs:-?}" "${rate:-?}" "$result")")
done

printf '%s\n' "${summary[@]}"
exit "$failed"
