#!/usr/bin/env bash
# Installs the Debian packages (scripts/setup.sh), then configures and builds ernie-edge in Release into build/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build
