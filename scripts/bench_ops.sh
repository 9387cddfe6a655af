#!/bin/sh
# Fresh machine -> the op benchmark, side by side with PyTorch CPU on the same
# threads: installs packages (and Debian's python3-torch), builds, runs
# bench/compare_ops.sh. Arguments go to compare_ops.sh (e.g. -t "1 2").
set -eu
cd "$(dirname "$0")/.."
./scripts/deps.sh python3-torch python3-numpy
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j "$(nproc)" --target bench_ops
exec ./bench/compare_ops.sh "$@" build
