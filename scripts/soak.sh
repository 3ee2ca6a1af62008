#!/usr/bin/env bash
# The full hostile soak (tests/server/hostile_soak_test.cpp): REQUESTS requests (default 1000) at up to CONCURRENCY
# concurrent clients (default 64) against one in-process server on loopback, a third of them hostile. Prints the
# figures: time, failures, RSS before and after, and how each kind of request ended.
#   scripts/soak.sh [REQUESTS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/test_server ] || bash scripts/build.sh
ERNIE_SOAK_REQUESTS="${1:-1000}" ERNIE_SOAK_CONCURRENCY="${2:-64}" \
  build/test_server --gtest_filter='HostileSoak.*' --gtest_brief=1
