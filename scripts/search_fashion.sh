#!/bin/sh
# Fresh machine -> a MdeNAS search on Fashion-MNIST (Debian's dataset-fashion-mnist):
# installs packages, builds, runs `mdenas_mpi search --preset tiny` (6 to 7 minutes
# on 2 cores) and ends by printing the genotype. Extra arguments go to the search,
# e.g. --epochs 4 or --out DIR.
set -eu
cd "$(dirname "$0")/.."
./scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j "$(nproc)" --target mdenas_mpi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
OUT=runs/fashion-$(date +%Y%m%d-%H%M%S)
mpirun -np 1 --bind-to none ./build/mdenas_mpi search --preset tiny --threads "$(nproc)" --out "$OUT" "$@"
