#!/bin/sh
# ImageNet sample preparation on ONE core: mdenas (bench_decode: region decode +
# RandomResizedCrop(224) + flip + normalise) against torchvision + Pillow (the same
# transform) and against tjbench's decode-only rate, on the same 64 JPEGs
# (bench/make_decode_set.py: mate-backgrounds crops, short side 256, quality 90, 4:2:0).
#
#   bench/decode_bench.sh [BUILD_DIR] [SECONDS]      (defaults: build, 3)
#
# Prints the JSON lines of each run, then a table. Rates are per second of the
# process's CPU time (steady on a shared machine) and, for tjbench, which reports
# only wall-clock rates, per wall second. Needs mate-backgrounds, python3-pil,
# libjpeg-turbo-progs and (for the torchvision row) python3-torchvision.
set -eu
BUILD=${1:-build}
SECS=${2:-3}
PY=/usr/bin/python3
HERE=$(cd "$(dirname "$0")" && pwd)
BENCH="$BUILD/bench/bench_decode"
[ -x "$BENCH" ] || { echo "decode_bench: $BENCH not built (cmake --build $BUILD --target bench_decode)" >&2; exit 1; }
SET=$(mktemp -d)
OUT=$(mktemp)
trap 'rm -rf "$SET" "$OUT"' EXIT
$PY "$HERE/make_decode_set.py" "$SET" 64
PIN=""
command -v taskset >/dev/null 2>&1 && PIN="taskset -c 0"

$PIN "$BENCH" --seconds "$SECS" "$SET"/*.jpg | tee -a "$OUT"
$PIN "$BENCH" --full --seconds "$SECS" "$SET"/*.jpg | tee -a "$OUT"
if $PIN $PY "$HERE/bench_decode_torch.py" --seconds "$SECS" "$SET"/*.jpg > "$SET/t.json"; then
  tee -a "$OUT" < "$SET/t.json"
  $PIN $PY "$HERE/bench_decode_torch.py" --full --seconds "$SECS" "$SET"/*.jpg | tee -a "$OUT"
fi
# tjbench: decode only, each file for 0.25 s; the set's rate is files / sum of 1/rate.
if command -v tjbench >/dev/null 2>&1; then
  for f in "$SET"/*.jpg; do
    $PIN tjbench "$f" -benchtime 0.25 -warmup 0.05 -nowrite -quiet | awk -v f="$f" '
      $1 == "BGR" && NF >= 9 { print f, $5, $6, $NF }'
  done | $PY -c '
import json, sys
t = n = 0.0
for line in sys.stdin:
    f, w, h, mpix = line.split()
    t += int(w) * int(h) / (float(mpix) * 1e6)
    n += 1
print(json.dumps({"bench": "decode", "impl": "tjbench", "mode": "full_decode", "threads": 1,
                  "files": int(n), "images_per_s": round(n / t, 1) if t else 0}))' | tee -a "$OUT"
fi
$PY - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
rate = {(r["impl"], r["mode"]): r.get("images_per_cpu_s", r["images_per_s"]) for r in rows}
ours = rate.get(("mdenas", "rrc_flip_normalize"))
print(f"\n{'implementation':<14} {'work':<36} {'images/s':>9}  mdenas RRC pipeline vs it")
for (impl, mode), v in rate.items():
    work = "decode + RRC(224) + flip + normalise" if mode == "rrc_flip_normalize" else "full decode only"
    print(f"{impl:<14} {work:<36} {v:>9.1f}  {ours / v:6.2f}x")
PY
