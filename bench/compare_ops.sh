#!/bin/sh
# Run bench_ops (mdenas) and bench_ops_torch.py (PyTorch) with the same
# settings, save their JSON lines, and print a side-by-side table.
# Builds nothing: build bench_ops first, e.g.
#   cmake -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build --target bench_ops
#
# usage: bench/compare_ops.sh [-t THREADS] [-i ITERS] [-w WARMUP] [-n BATCH]
#                             [-f FILTER] [-o OUT.jsonl] [-m] [BUILD_DIR]
# Options fall back to the environment: THREADS (default 2), ITERS (20),
# WARMUP (3), BATCH (64), FILTER (none), OUT (bench/results/ops-<date>-t<THREADS>.jsonl),
# BUILD_DIR (build). THREADS may list several counts ("1 2"); each is run in turn
# and all go to the same OUT file and table. -m (or STAT=min) compares the minimum
# total over iterations instead of the median: steadier when the CPUs are shared.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
PY=${PYTHON:-/usr/bin/python3}

THREADS=${THREADS:-2}
ITERS=${ITERS:-20}
WARMUP=${WARMUP:-3}
BATCH=${BATCH:-64}
FILTER=${FILTER:-}
OUT=${OUT:-}
STAT=${STAT:-median}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

while getopts "t:i:w:n:f:o:mh" opt; do
    case $opt in
    t) THREADS=$OPTARG ;;
    i) ITERS=$OPTARG ;;
    w) WARMUP=$OPTARG ;;
    n) BATCH=$OPTARG ;;
    f) FILTER=$OPTARG ;;
    o) OUT=$OPTARG ;;
    m) STAT=min ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
BUILD_DIR=${1:-${BUILD_DIR:-build}}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$root/$BUILD_DIR ;; esac

BIN=$BUILD_DIR/bench/bench_ops
if [ ! -x "$BIN" ]; then
    echo "compare_ops.sh: $BIN not found; build it first:" >&2
    echo "  cmake -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build --target bench_ops" >&2
    exit 1
fi
if [ -z "$OUT" ]; then
    mkdir -p "$root/bench/results"
    OUT=$root/bench/results/ops-$(date +%Y%m%d-%H%M%S)-t$(echo "$THREADS" | tr ' ' '_').jsonl
fi
: >"$OUT"

set -- --iters "$ITERS" --warmup "$WARMUP" --batch "$BATCH"
if [ -n "$FILTER" ]; then set -- "$@" --filter "$FILTER"; fi

# Other work on the machine wrecks multi-threaded timings (OpenMP threads that
# lose their core wait for a whole scheduler slice): say so when it is busy.
check_load() {
    load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)
    if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
        echo "compare_ops.sh: warning: 1-minute load average is $load before the $1 run" \
             "($(nproc) CPUs); timings may be inflated by other processes" >&2
    fi
}

for t in $THREADS; do
    check_load "threads $t"
    echo "== threads $t: mdenas" >&2
    "$BIN" --threads "$t" "$@" >>"$OUT"
    echo "== threads $t: pytorch" >&2
    "$PY" "$here/bench_ops_torch.py" --threads "$t" "$@" >>"$OUT"
done

echo "results: $OUT" >&2
if [ "$STAT" = min ]; then
    "$PY" "$here/compare_ops.py" --min "$OUT"
else
    "$PY" "$here/compare_ops.py" "$OUT"
fi
