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
# tjbench: decode only, each file for 0.5 s. It reports frames per wall second;
# frames = rate x 0.5 s over the CPU seconds the process used gives its rate per
# CPU second (startup included, ~1%). The set's rate is files / sum of 1/rate.
if command -v tjbench >/dev/null 2>&1; then
  $PY - "$SET" $PIN <<'PY' | tee -a "$OUT"
import glob, json, resource, subprocess, sys
files = sorted(glob.glob(sys.argv[1] + "/*.jpg"))
pin = sys.argv[2:]
wall_t = cpu_t = 0.0
for f in files:
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(pin + ["tjbench", f, "-benchtime", "0.5", "-warmup", "0", "-nowrite",
                                "-quiet"], capture_output=True, text=True, check=True).stdout
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    row = [l.split() for l in out.splitlines() if l.startswith("BGR")][-1]
    fps = float(row[-1]) * 1e6 / (int(row[4]) * int(row[5]))  # Mpixels/s -> frames/s
    wall_t += 1 / fps
    cpu_t += cpu / (fps * 0.5)
print(json.dumps({"bench": "decode", "impl": "tjbench", "mode": "full_decode", "threads": 1,
                  "files": len(files), "images_per_s": round(len(files) / wall_t, 1),
                  "images_per_cpu_s": round(len(files) / cpu_t, 1)}))
PY
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
