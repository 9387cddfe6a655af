#!/bin/sh
# imagenet_prep throughput: files/s and files/s per core on a tree that
# tests/prep_make_tree.py makes from mate-backgrounds photos (CLASSES x PER_CLASS
# train JPEGs of 150..700 pixels a side, encoded every way ImageNet's are, plus 3
# val images per class; no bad files). Runs 1 rank x 1 thread, 1 rank x all
# cores, and (with mpirun) one rank per core x 1 thread. Wall time includes the
# start-up (MPI_Init, the tree walk); shards of 64 files, so that ranks share
# them; `convert_files_per_s` is rank 0's own rate from its last progress line.
# JSON lines to OUT and stdout. Run on an idle machine.
#   bench/prep_bench.sh [BUILD_DIR [CLASSES [PER_CLASS]]]     (build, 8, 60)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-build}
CLASSES=${2:-8}
PER_CLASS=${3:-60}
BIN=$BUILD/imagenet_prep/imagenet_prep
CPUS=$(nproc)
mkdir -p "$here/results"
OUT=${OUT:-$here/results/prep-$(date +%Y%m%d-%H%M%S).jsonl}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 "$here/../tests/prep_make_tree.py" "$tmp/in" "$CLASSES" "$PER_CLASS" clean > /dev/null
run() { # name ranks threads
    name=$1 np=$2 threads=$3
    cmd="$BIN $tmp/in $tmp/$name --val-labels $tmp/in/labels.txt --threads $threads --images-per-shard 64"
    [ "$np" -gt 0 ] && cmd="mpirun -np $np $cmd"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    $cmd > "$tmp/$name.out" 2> "$tmp/$name.err" || { cat "$tmp/$name.err"; exit 1; }
    t1=$(date +%s.%N)
    /usr/bin/python3 - "$tmp/$name" "$tmp/$name.err" "$np" "$threads" "$t0" "$t1" <<'PY' | tee -a "$OUT"
import json, re, sys
out, err, np_, threads, t0, t1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
rep = json.load(open(f"{out}/report.json"))
ranks = max(np_, 1)
cores = ranks * threads
secs = t1 - t0
last = re.findall(r"files \(100%\), ([0-9.]+) files/s", open(err).read())
print(json.dumps({"bench": "imagenet_prep", "files": rep["sources"], "accepted": rep["accepted"],
                  "resized": rep["resized"], "ranks": ranks, "threads": threads, "cores": cores,
                  "seconds": round(secs, 3), "files_per_s": round(rep["sources"] / secs, 1),
                  "files_per_s_per_core": round(rep["sources"] / secs / cores, 1),
                  "convert_files_per_s": float(last[-1]) if last else None}))
PY
}
run t1 0 1
[ "$CPUS" -gt 1 ] && run "t$CPUS" 0 "$CPUS"
[ "$CPUS" -gt 1 ] && command -v mpirun > /dev/null && run "np$CPUS" "$CPUS" 1
# The outputs are byte-identical whatever the split of the work.
for d in "t$CPUS" "np$CPUS"; do
    [ -d "$tmp/$d" ] && { diff -r "$tmp/t1" "$tmp/$d" > /dev/null || { echo "prep_bench: $d differs from t1" >&2; exit 1; }; }
done
echo "prep_bench: results appended to $OUT" >&2
