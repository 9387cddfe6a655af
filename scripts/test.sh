#!/bin/sh
# Fresh machine -> all tests: install packages, build (RelWithDebInfo), run CTest,
# then the same suite under AddressSanitizer + UndefinedBehaviorSanitizer.
# MDENAS_NO_ASAN=1 skips the sanitizer pass; MDENAS_NO_APT=1 skips apt-get.
set -eu
cd "$(dirname "$0")/.."
./scripts/deps.sh
# TensorBoard's own reader checks our event files (tests/check_tb_events.py) and
# PyPI's safetensors loads our checkpoints (tests/dist_e2e.py); both come from
# PyPI into the python3 first on PATH.
python3 -m pip install -q --break-system-packages tensorboard safetensors
JOBS=$(nproc)
# Open MPI refuses root unless told; CI runs as root.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j "$JOBS"
ctest --test-dir build --output-on-failure -j "$JOBS"

if [ "${MDENAS_NO_ASAN:-0}" != 1 ]; then
    # The CUDA backend (built above when nvcc and cuDNN are present) is left out
    # here: the CUDA runtime and ASan's shadow memory do not mix.
    cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMDENAS_SANITIZE=ON -DMDENAS_BENCH=OFF \
        -DMDENAS_CUDA=OFF
    cmake --build build-asan -j "$JOBS"
    ctest --test-dir build-asan --output-on-failure -j "$JOBS"
fi
echo "mdenas: all tests passed"
