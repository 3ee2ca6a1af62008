#!/usr/bin/env bash
# Builds everything (scripts/build.sh) and runs the whole test suite. Golden tests read ../shared/fixtures
# (override with ERNIE_FIXTURES=/path/to/fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)"
