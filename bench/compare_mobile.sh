#!/bin/sh
# The mobile space's training step, mdenas vs PyTorch CPU (Debian's python3-torch), the
# same sampled architectures (ProxylessNAS net configs written by bench_step), the
# same recipe (label smoothing 0.1, Nesterov SGD, no decay on BN) and threads, in one
# command; then where mdenas's time goes (MDENAS_PROFILE=1), and a whole mobile-tiny
# search on a small prepared folder with its data-wait share. JSON lines to OUT, a
# table on stdout.
#   bench/compare_mobile.sh [BUILD_DIR]
#   env: THREADS (2) SIZE (128) BATCHES ("32") ARCHS (3) STEPS (3) WIDTH (1.0)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-build}
THREADS=${THREADS:-2}
SIZE=${SIZE:-128}
BATCHES=${BATCHES:-32}
ARCHS=${ARCHS:-3}
STEPS=${STEPS:-3}
WIDTH=${WIDTH:-1.0}
mkdir -p "$here/results"
OUT=${OUT:-$here/results/mobile-$(date +%Y%m%d-%H%M%S).jsonl}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for b in $BATCHES; do
    "$BUILD/bench/bench_step" --space mobile --size "$SIZE" --width-mult "$WIDTH" --batch "$b" \
        --threads "$THREADS" --archs "$ARCHS" --steps "$STEPS" --warmup 1 \
        --archs-out "$work/archs.json" | tee -a "$OUT"
    /usr/bin/python3 "$here/bench_mobile_torch.py" --archs "$work/archs.json" --batch "$b" \
        --size "$SIZE" --threads "$THREADS" --steps "$STEPS" --warmup 1 | tee -a "$OUT"
done
echo "-- where mdenas's step goes (one architecture, MDENAS_PROFILE=1)"
MDENAS_PROFILE=1 "$BUILD/bench/bench_step" --space mobile --size "$SIZE" --width-mult "$WIDTH" \
    --batch "$(echo "$BATCHES" | cut -d' ' -f1)" --threads "$THREADS" --archs 1 --steps "$STEPS" \
    --warmup 1 2>&1 >/dev/null | sort -k4 -n -r | tee "$work/profile.txt"
/usr/bin/python3 - "$work/profile.txt" >> "$OUT" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 6 and f[0] == "profile":
        print(json.dumps({"bench": "mobile_profile", "pass": f[1], "op": f[2], "ms": float(f[3]),
                          "share": float(f[5].rstrip("%")) / 100, "calls": int(f[6].strip("("))}))
PY
echo "-- a mobile-tiny search on a small prepared folder (tests/prep_make_tree.py, 8 classes)"
/usr/bin/python3 "$here/../tests/prep_make_tree.py" "$work/tree" 8 40 clean >/dev/null
rm -rf "$work/tree/val"
"$BUILD/imagenet_prep/imagenet_prep" "$work/tree" --out "$work/shards" --search-val-per-class 8 \
    --images-per-shard 64 >/dev/null
t0=$(date +%s.%N)
"$BUILD/mdenas_mpi" search --preset mobile-tiny --data "$work/shards" --threads "$THREADS" \
    --out "$work/run" > "$work/search.log"
t1=$(date +%s.%N)
/usr/bin/python3 - "$work/run/metrics.jsonl" "$t0" "$t1" >> "$OUT" <<'PY'
import json, sys
m = [json.loads(l) for l in open(sys.argv[1])]
iv = [x for x in m if x["type"] == "interval"]
wait = sum(x["data_wait_s"] for x in iv)
steps = iv[-1]["step"] if iv else 0
wall = float(sys.argv[3]) - float(sys.argv[2])
print(json.dumps({"bench": "mobile_tiny_search", "steps": steps, "wall_s": round(wall, 2),
                  "data_wait_s": round(wait, 3), "data_wait_share": round(wait / wall, 4),
                  "img_per_s_mean": round(sum(x["img_per_s"] for x in iv) / max(len(iv), 1), 1)}))
PY
tail -1 "$OUT"
echo
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"step_summary"' in l]
by = {}
for r in rows:
    by.setdefault((r["batch"], r["size"], r["threads"]), {})[r["impl"]] = r
print(f'{"batch":>5} {"size":>5} {"threads":>7} {"mdenas img/s":>13} {"pytorch img/s":>14} {"speedup":>8} {"mdenas MB":>10} {"pytorch MB":>11}')
for (b, s, t), d in sorted(by.items()):
    m, p = d.get("mdenas"), d.get("pytorch")
    if m and p:
        print(f'{b:>5} {s:>5} {t:>7} {m["img_per_s"]:>13.1f} {p["img_per_s"]:>14.1f} '
              f'{m["img_per_s"] / p["img_per_s"]:>7.2f}x {m["peak_rss_mb"]:>10.0f} {p["peak_rss_mb"]:>11.0f}')
PY
echo "results: $OUT"
