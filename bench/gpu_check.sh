#!/bin/sh
# The GPU check of the CUDA backend, as ONE prepared script for the GPU machine
# (../shared/DEVICE.md): built and prepared here, run there with the build carried.
#
#   bench/gpu_check.sh --prepare     # here: CUDA build in build-gpu/, then a pack in
#                                    # build-gpu/pack/: the three programs, the shared
#                                    # libraries the GPU machine lacks (oneDNN) and a
#                                    # 10000-image Fashion-MNIST subset (about 47 MiB)
#   bench/gpu_check.sh               # there (device tool: carry ["build-gpu/pack"]); writes $OUT
#
# What it runs, in order, each step's output in $OUT (default ./gpu-check-out):
#   1. nvidia-smi, `mdenas_mpi info`                       -> info.txt
#   2. tests/test_cuda_ops: every op, CUDA vs CPU backend  -> ops.txt (exit status in summary)
#   3. a short search on Fashion-MNIST on the GPU          -> search.txt, search_run/
#   4. a training step of the CIFAR search network (8 cells, C=16), mdenas --device cuda
#      vs PyTorch eager on the same GPU, batch 64 and 256, the same sampled
#      architectures                                       -> step.jsonl
#   5. one search epoch of CIFAR size (synthetic 3x32x32, 25000 search-train images,
#      batch 256) on the GPU                               -> epoch.txt
# and a summary (summary.txt) with each step's status and the step-time table.
set -u
B=${BUILD_GPU:-build-gpu}
if [ "${1:-}" = "--prepare" ]; then
    set -e
    cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DMDENAS_CUDA=ON -DMDENAS_MARCH=x86-64-v3
    cmake --build "$B" -j "$(nproc)" --target mdenas_mpi test_cuda_ops bench_step
    P=$B/pack
    rm -rf "$P"
    mkdir -p "$P/devlibs" "$P/fashion10k"
    cp "$B/mdenas_mpi" "$B/tests/test_cuda_ops" "$B/bench/bench_step" "$P/"
    # Libraries the GPU machine does not have (DEVICE.md: no oneDNN there).
    for lib in $(ldd "$B/mdenas_mpi" | awk '/dnnl/ {print $3}'); do
        cp -L "$lib" "$P/devlibs/"
    done
    # Fashion-MNIST is not installed there: the first 10000 training images.
    /usr/bin/python3 - "$P/fashion10k" <<'PY'
import gzip, shutil, struct, sys
src, dst = "/usr/share/datasets/fashion-mnist", sys.argv[1]
n = 10000
with gzip.open(f"{src}/train-images-idx3-ubyte.gz") as f:
    magic, _, h, w = struct.unpack(">4I", f.read(16))
    img = f.read(n * h * w)
with gzip.open(f"{dst}/train-images-idx3-ubyte.gz", "wb") as f:
    f.write(struct.pack(">4I", magic, n, h, w) + img)
with gzip.open(f"{src}/train-labels-idx1-ubyte.gz") as f:
    magic, _ = struct.unpack(">2I", f.read(8))
    lab = f.read(n)
with gzip.open(f"{dst}/train-labels-idx1-ubyte.gz", "wb") as f:
    f.write(struct.pack(">2I", magic, n) + lab)
for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
    shutil.copy(f"{src}/{name}", f"{dst}/{name}")
PY
    du -sh "$P"
    echo "prepared: run bench/gpu_check.sh on the GPU machine with carry [\"$P\"]"
    exit 0
fi

OUT=${OUT:-gpu-check-out}
P=$B/pack
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/$P/devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
S="$OUT/summary.txt"
: > "$S"
step() { echo "$1: exit $2 ($3 s)" | tee -a "$S"; }
t() { date +%s; }

t0=$(t); { nvidia-smi; "$P/mdenas_mpi" info; } > "$OUT/info.txt" 2>&1; step info $? $(($(t) - t0))

t0=$(t); timeout 120 "$P/test_cuda_ops" > "$OUT/ops.txt" 2>&1; rc=$?
step "op tests (CUDA vs CPU)" $rc $(($(t) - t0))
grep -E "failed|worst" "$OUT/ops.txt" | tail -15 >> "$S"

t0=$(t)
timeout 150 mpirun -np 1 --bind-to none "$P/mdenas_mpi" search --preset tiny --device cuda \
    --data "$P/fashion10k" --subset 6000 --epochs 3 --out "$OUT/search_run" > "$OUT/search.txt" 2>&1
step "search on Fashion-MNIST (GPU)" $? $(($(t) - t0))
grep -E "^mdenas search|period .* done|finished|genotype:" "$OUT/search.txt" | tail -6 >> "$S"

t0=$(t)
for b in 64 256; do
    # without graphs first (a diagnosis line), then with: the table takes the last
    timeout 120 "$P/bench_step" --device cuda --graphs 0 --batch $b --archs 3 --steps 20 \
        --warmup 3 >> "$OUT/step.jsonl" 2>> "$OUT/step.err"
    timeout 120 "$P/bench_step" --device cuda --batch $b --archs 3 --steps 20 --warmup 3 \
        --archs-out "$OUT/archs$b.json" >> "$OUT/step.jsonl" 2>> "$OUT/step.err"
    timeout 120 python3 bench/bench_step_torch.py --device cuda --archs "$OUT/archs$b.json" \
        --batch $b --steps 20 --warmup 3 >> "$OUT/step.jsonl" 2>> "$OUT/step.err"
done
step "step benchmark" $? $(($(t) - t0))
python3 - "$OUT/step.jsonl" >> "$S" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"step_summary"' in l]
by = {}
for r in rows:
    by.setdefault(r["batch"], {})[r["impl"]] = r
print(f'{"batch":>5} {"mdenas ms":>10} {"pytorch ms":>11} {"speedup":>8} {"pytorch peak GPU MB":>20}')
for b, d in sorted(by.items()):
    m, p = d.get("mdenas"), d.get("pytorch")
    if m and p:
        print(f'{b:>5} {m["ms_per_step"]:>10.2f} {p["ms_per_step"]:>11.2f} '
              f'{p["ms_per_step"] / m["ms_per_step"]:>7.2f}x {p.get("peak_gpu_mb", 0):>20.0f}')
PY

t0=$(t)
timeout 240 mpirun -np 1 --bind-to none "$P/mdenas_mpi" search --dataset synthetic --subset 50000 \
    --epochs 1 --batch 256 --val-batches 20 --device cuda --log-every 49 \
    --out "$OUT/epoch_run" > "$OUT/epoch.txt" 2>&1
step "one CIFAR-size search epoch (GPU)" $? $(($(t) - t0))
grep -E "period .* done|finished" "$OUT/epoch.txt" | tail -2 >> "$S"
cat "$S"
