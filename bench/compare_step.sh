#!/bin/sh
# Training step of the CIFAR search network, mdenas vs PyTorch CPU, same
# sampled architectures, same threads, in one command; JSON lines to OUT and a
# table on stdout.
#   bench/compare_step.sh [BUILD_DIR]     env: THREADS (2) BATCHES ("32 64") ARCHS (3) STEPS (5)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-build}
THREADS=${THREADS:-2}
BATCHES=${BATCHES:-"32 64"}
ARCHS=${ARCHS:-3}
STEPS=${STEPS:-5}
mkdir -p "$here/results"
OUT=${OUT:-$here/results/step-$(date +%Y%m%d-%H%M%S).jsonl}
archs=$(mktemp)
trap 'rm -f "$archs"' EXIT
for b in $BATCHES; do
    "$BUILD/bench/bench_step" --batch "$b" --threads "$THREADS" --archs "$ARCHS" --steps "$STEPS" \
        --archs-out "$archs" | tee -a "$OUT"
    /usr/bin/python3 "$here/bench_step_torch.py" --archs "$archs" --batch "$b" --threads "$THREADS" \
        --steps "$STEPS" | tee -a "$OUT"
done
echo
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"step_summary"' in l]
by = {}
for r in rows:
    by.setdefault((r["batch"], r["threads"]), {})[r["impl"]] = r
print(f'{"batch":>5} {"threads":>7} {"mdenas img/s":>13} {"pytorch img/s":>14} {"speedup":>8} {"mdenas MB":>10} {"pytorch MB":>11}')
for (b, t), d in sorted(by.items()):
    m, p = d.get("mdenas"), d.get("pytorch")
    if m and p:
        print(f'{b:>5} {t:>7} {m["img_per_s"]:>13.1f} {p["img_per_s"]:>14.1f} '
              f'{m["img_per_s"] / p["img_per_s"]:>7.2f}x {m["peak_rss_mb"]:>10.0f} {p["peak_rss_mb"]:>11.0f}')
PY
echo "results: $OUT"
