#!/bin/sh
# Fresh machine -> all tests: install packages, build (RelWithDebInfo), run CTest,
# then the same suite under AddressSanitizer + UndefinedBehaviorSanitizer.
# MDENAS_NO_ASAN=1 skips the sanitizer pass; MDENAS_NO_APT=1 skips apt-get.
# MDENAS_TEST_SUBSET=quick runs only a quick subset (a minute or two after the
# build: the cli_* tests, test_core, test_mdl, test_data, search_fashion_short),
# the tests labelled `quick` once tests/CMakeLists.txt gives that label.
set -eu
cd "$(dirname "$0")/.."
T0=$(date +%s)
say() { echo "test.sh: [$(($(date +%s) - T0)) s] $*"; }
SUBSET=${MDENAS_TEST_SUBSET:-}
case $SUBSET in
"" | all) SUBSET="" ;;
quick) ;;
*) echo "test.sh: MDENAS_TEST_SUBSET must be quick or all, not '$SUBSET'" >&2; exit 2 ;;
esac
./scripts/deps.sh
# TensorBoard's own reader checks our event files (tests/check_tb_events.py) and
# PyPI's safetensors loads our checkpoints (tests/dist_e2e.py); both come from
# PyPI into the python3 first on PATH.
python3 -m pip install -q --break-system-packages tensorboard safetensors
say "packages installed"
JOBS=$(nproc)
# Open MPI refuses root unless told; CI runs as root.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# The ctest selection: everything, or the quick subset (by label when some test
# has the label `quick`, else by name).
QUICK_RE='^(cli_.*|test_core|test_mdl|test_data|search_fashion_short)$'
run_ctest() { # build dir
    if [ -z "$SUBSET" ]; then
        ctest --test-dir "$1" --output-on-failure -j "$JOBS"
        return
    fi
    if ctest --test-dir "$1" -N -L '^quick$' | grep -q '^Total Tests: [1-9]'; then
        set -- "$1" -L '^quick$'
    else
        set -- "$1" -R "$QUICK_RE"
    fi
    n=$(ctest --test-dir "$1" -N "$2" "$3" | sed -n 's/^Total Tests: //p')
    if [ "${n:-0}" -eq 0 ]; then
        echo "test.sh: no test matches ctest $2 '$3'" >&2
        exit 1
    fi
    say "the $SUBSET subset: $n tests (ctest $2 '$3')"
    ctest --test-dir "$1" --output-on-failure -j "$JOBS" "$2" "$3"
}

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j "$JOBS"
say "built build/"
run_ctest build
say "tests passed in build/${SUBSET:+ (subset $SUBSET)}"

if [ "${MDENAS_NO_ASAN:-0}" != 1 ]; then
    # The CUDA backend (built above when nvcc and cuDNN are present) is left out
    # here: the CUDA runtime and ASan's shadow memory do not mix.
    cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMDENAS_SANITIZE=ON -DMDENAS_BENCH=OFF \
        -DMDENAS_CUDA=OFF
    cmake --build build-asan -j "$JOBS"
    say "built build-asan/"
    run_ctest build-asan
    say "tests passed in build-asan/${SUBSET:+ (subset $SUBSET)}"
fi
what="all tests"
[ -z "$SUBSET" ] || what="the $SUBSET tests"
[ "${MDENAS_NO_ASAN:-0}" != 1 ] || what="$what (no sanitizer pass)"
echo "mdenas: $what passed"
