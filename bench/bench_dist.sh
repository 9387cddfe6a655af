#!/bin/sh
# Data-parallel search on this machine: `mdenas_mpi search` on the CIFAR search
# network (8 cells, C=16, synthetic 3x32x32 data) at -np 1 (all threads in one
# rank) and -np 2 (threads split), in one command. Reports training images/s
# (interval lines after the first), allreduce bytes per step (active ranges)
# against a whole-supernet allreduce, and checkpoint size and write time.
# JSON lines to OUT, a table on stdout. Run on an idle machine.
#   bench/bench_dist.sh [BUILD_DIR]    env: BATCH (64) STEPS (12) CELLS (8) CHANNELS (16)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-build}
BATCH=${BATCH:-64}
STEPS=${STEPS:-12}
CELLS=${CELLS:-8}
CHANNELS=${CHANNELS:-16}
CPUS=$(nproc)
mkdir -p "$here/results"
OUT=${OUT:-$here/results/dist-$(date +%Y%m%d-%H%M%S).jsonl}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Two periods of STEPS/2 steps; a checkpoint every 3 steps besides period ends.
subset=$((BATCH * STEPS * 2))
for np in 1 2; do
    threads=$((CPUS / np))
    [ "$threads" -ge 1 ] || threads=1
    # One rank may use every core: no binding. Two ranks: one core each (Open MPI's default).
    bind=""
    [ "$np" = 1 ] && bind="--bind-to none"
    # shellcheck disable=SC2086
    mpirun -np "$np" $bind "$BUILD/mdenas_mpi" search --dataset synthetic --subset "$subset" \
        --epochs 1 --batch "$BATCH" --cells "$CELLS" --channels "$CHANNELS" \
        --period-steps $((STEPS / 2)) --val-batches 1 --log-every 1 --ckpt-every 3 \
        --threads "$threads" --out "$tmp/np$np" > "$tmp/np$np.out" 2>&1 ||
        { cat "$tmp/np$np.out"; exit 1; }
    /usr/bin/python3 - "$tmp/np$np" "$np" "$threads" "$BATCH" "$CELLS" "$CHANNELS" <<'PY' | tee -a "$OUT"
import json, re, sys
d, np, threads, batch, cells, ch = sys.argv[1], *map(int, sys.argv[2:])
m = [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
iv = [x for x in m if x["type"] == "interval"]
pe = [x for x in m if x["type"] == "period"]
ips = [x["img_per_s"] for x in iv[1:]]          # the first step builds plans
ckpt = [tuple(map(float, g)) for g in
        re.findall(r"checkpoint \S+ \([^)]*\): ([\d.]+) MB in ([\d.]+) s", open(f"{d}/search.log").read())]
print(json.dumps({
    "bench": "dist_search", "ranks": np, "threads_per_rank": threads, "batch": batch,
    "cells": cells, "channels": ch,
    "img_per_s": sorted(ips)[len(ips) // 2],
    "allreduce_bytes_per_step": sum(x["allreduce_bytes_per_step"] for x in pe) / len(pe),
    "full_supernet_bytes": pe[0]["supernet_grad_bytes"],
    "checkpoint_mb": ckpt[-1][0], "checkpoint_write_s": sorted(c[1] for c in ckpt)[len(ckpt) // 2],
    "checkpoints": len(ckpt)}))
PY
done
echo
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"dist_search"' in l]
print(f'{"ranks":>5} {"thr/rank":>8} {"img/s":>8} {"allreduce MB/step":>18} {"full supernet MB":>17} {"ckpt MB":>8} {"ckpt write s":>12}')
for r in rows[-2:]:
    print(f'{r["ranks"]:>5} {r["threads_per_rank"]:>8} {r["img_per_s"]:>8.1f} '
          f'{r["allreduce_bytes_per_step"] / 1e6:>18.3f} {r["full_supernet_bytes"] / 1e6:>17.3f} '
          f'{r["checkpoint_mb"]:>8.2f} {r["checkpoint_write_s"]:>12.3f}')
PY
echo "results: $OUT"
