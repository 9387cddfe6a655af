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
# What it runs, in order, each step's output in $OUT (default ./gpu-check-out); about
# 6 minutes on an H200 when everything passes, every step under its own timeout:
#   1. nvidia-smi, `mdenas_mpi info`                             -> info.txt
#   2. tests/test_cuda_ops: every op, CUDA vs CPU backend, forward and backward,
#      sync-BN against a stand-in replica, bad labels, a graph replayed after its
#      buffers were outgrown, deterministic algorithms            -> ops.txt
#   3. a short search on Fashion-MNIST on the GPU, data on the GPU -> search.txt, search_run/
#   4. bit-identical resume on CUDA: the same search stopped by the signal hook at
#      step 40 (exit 75), resumed, compared with step 3's run tensor by tensor -> resume.txt
#   5. a NaN in step 6's batch: exit 1, the last good state (step 5) saved, finite -> nan.txt
#   6. one training epoch of the MdeNAS cell (fashion-final: drop-path, auxiliary
#      head, dropout masks uploaded every step) and `eval`     -> train.txt
#   7. NCCL: one rank with --comm nccl against host MPI; two ranks sharing the GPU
#      fall back to host MPI with a note; --comm nccl there refused -> nccl.txt
#   8. the training step of the CIFAR search network (8 cells, C=16), mdenas --device
#      cuda vs PyTorch eager on the same GPU, batch 64 and 256, the same sampled
#      architectures, with both peak GPU memories               -> step.jsonl
#   9. the mobile space's step (ProxylessNAS skeleton, 224 px, batch 64) vs PyTorch
#                                                               -> mobile.jsonl
#  10. one search epoch of CIFAR size (synthetic 3x32x32, 25000 search-train and
#      25000 validation images, batch 256), data on the GPU    -> epoch.txt
#  11. the op tests under compute-sanitizer memcheck (when the machine has it; last,
#      as the slowest)                                          -> sanitizer.txt
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
    # Libraries the GPU machine does not have (DEVICE.md: Ubuntu 24.04 without
    # oneDNN, libjpeg-turbo's libjpeg.so.62 or, maybe, the OpenCL loader oneDNN links).
    for lib in $(ldd "$B/mdenas_mpi" "$B/tests/test_cuda_ops" "$B/bench/bench_step" |
        awk '/dnnl|jpeg|OpenCL|spng/ {print $3}' | sort -u); do
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
M="$P/mdenas_mpi"
FASHION="--preset tiny --device cuda --data $P/fashion10k --subset 6000 --epochs 2"

t0=$(t); { nvidia-smi; "$M" info; } > "$OUT/info.txt" 2>&1; step info $? $(($(t) - t0))

t0=$(t); timeout 120 "$P/test_cuda_ops" > "$OUT/ops.txt" 2>&1; rc=$?
step "op tests (CUDA vs CPU)" $rc $(($(t) - t0))
grep -E "failed|worst|FAIL" "$OUT/ops.txt" | tail -15 >> "$S"


t0=$(t)
timeout 150 mpirun -np 1 --bind-to none "$M" search $FASHION --out "$OUT/search_run" \
    > "$OUT/search.txt" 2>&1
step "search on Fashion-MNIST (GPU)" $? $(($(t) - t0))
grep -E "^mdenas search|data on|comm:|period .* done|finished|genotype:" "$OUT/search.txt" | tail -8 >> "$S"

# The tensors, history and genotype of two run directories, compared bit for bit.
cat > "$OUT/same_run.py" <<'PY'
import json, os, re, struct, sys
def newest(d):
    c = os.path.join(d, "checkpoints")
    return os.path.join(c, sorted(f for f in os.listdir(c) if re.match(r"ckpt-\d+\.safetensors$", f))[-1])
def tensors(p):
    b = open(p, "rb").read()
    (n,) = struct.unpack("<Q", b[:8])
    h = json.loads(b[8:8 + n]); body = b[8 + n:]
    return {k: body[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in h.items() if k != "__metadata__"}
a, b = sys.argv[1], sys.argv[2]
ta, tb = tensors(newest(a)), tensors(newest(b))
bad = [k for k in ta if ta[k] != tb.get(k)] + [k for k in tb if k not in ta]
for f in ("history.jsonl", "genotype.txt"):
    if open(os.path.join(a, f), "rb").read() != open(os.path.join(b, f), "rb").read():
        bad.append(f)
print(f"{len(ta)} tensors compared; differing: {bad[:10]}{' ...' if len(bad) > 10 else ''}")
sys.exit(1 if bad else 0)
PY

t0=$(t)
{
    MDENAS_RAISE_AT_STEP=40 timeout 150 mpirun -np 1 --bind-to none "$M" search $FASHION \
        --out "$OUT/resume_run"
    echo "first part: exit $? (75 expected)"
    timeout 150 mpirun -np 1 --bind-to none "$M" search $FASHION --out "$OUT/resume_run"
    echo "resumed: exit $?"
    python3 "$OUT/same_run.py" "$OUT/search_run" "$OUT/resume_run"
} > "$OUT/resume.txt" 2>&1
step "bit-identical resume on CUDA" $? $(($(t) - t0))
grep -E "exit|tensors compared" "$OUT/resume.txt" >> "$S"

t0=$(t)
MDENAS_NAN_AT_STEP=5 timeout 120 mpirun -np 1 --bind-to none "$M" search $FASHION --epochs 1 \
    --out "$OUT/nan_run" > "$OUT/nan.txt" 2>&1
rc=$?
ls "$OUT/nan_run/checkpoints" >> "$OUT/nan.txt" 2>&1
step "NaN at step 6 (exit 1 expected; ckpt at step 5)" $rc $(($(t) - t0))
grep -E "not a finite|last good|ckpt-" "$OUT/nan.txt" | tail -4 >> "$S"

t0=$(t)
{
    timeout 200 mpirun -np 1 --bind-to none "$M" train --preset fashion-final --genotype mdenas \
        --device cuda --data "$P/fashion10k" --epochs 1 --out "$OUT/train_run"
    r=$?
    echo "train: exit $r"
    timeout 60 "$M" eval "$OUT/train_run"
    e=$?
    echo "eval: exit $e"
    [ $r -eq 0 ] && [ $e -eq 0 ]
} > "$OUT/train.txt" 2>&1
step "one training epoch (drop-path, aux head, dropout) + eval" $? $(($(t) - t0))
grep -E "^epoch .* test|exit|top-1|top1" "$OUT/train.txt" | tail -5 >> "$S"

t0=$(t)
NC="--preset tiny --device cuda --data $P/fashion10k --subset 6000 --epochs 1 --cuda-graphs 0"
nfail=0
{
    ldd "$M" | grep -E "nccl|not found"
    timeout 120 mpirun -np 1 --bind-to none "$M" search $NC --comm mpi --out "$OUT/nccl_ref" || nfail=1
    NCCL_DEBUG=WARN timeout 120 mpirun -np 1 --bind-to none "$M" search $NC --comm nccl --out "$OUT/nccl_np1" || nfail=1
    grep -q "comm: NCCL 2\..*1 rank, one GPU each" "$OUT/nccl_np1/search.log" || nfail=1
    timeout 150 mpirun --oversubscribe -np 2 --bind-to none "$M" search $NC --out "$OUT/nccl_np2" || nfail=1
    grep -q "comm: host MPI: 2 ranks share 1 GPU (NCCL refuses two ranks on one GPU)" "$OUT/nccl_np2/search.log" || nfail=1
    timeout 60 mpirun --oversubscribe -np 2 --bind-to none "$M" search $NC --comm nccl --out "$OUT/nccl_forced"
    rc=$?; echo "np2 --comm nccl: exit $rc (want 2)"; [ $rc -eq 2 ] || nfail=1
    grep -h "comm:" "$OUT"/nccl_*/search.log
    python3 - "$OUT/nccl_ref" "$OUT/nccl_np1" "$OUT/nccl_np2" <<'PY' || nfail=1
import json, sys
def p(d):
    s = json.load(open(f"{d}/state.json"))
    return [x for k in sorted(s) if k.startswith("p_") for row in s[k] for x in row]
ref, one, two = (p(d) for d in sys.argv[1:4])
d1 = max(abs(a - b) for a, b in zip(ref, one)); d2 = max(abs(a - b) for a, b in zip(ref, two))
print(f"max |p| diff: nccl np1 vs host-MPI np1 {d1:.3g} (want <= 1e-6); host-MPI np2 vs np1 {d2:.3g} (reported only)")
sys.exit(0 if len(ref) == len(one) and d1 <= 1e-6 else 1)
PY
} > "$OUT/nccl.txt" 2>&1
step "NCCL: --comm nccl on one rank vs host MPI; 2 ranks on one GPU fall back" $nfail $(($(t) - t0))
grep -E "comm:|exit|max \|p\||share|nccl" "$OUT/nccl.txt" | tail -8 >> "$S"

t0=$(t)
brc=0
for b in 64 256; do
    # without graphs first (a diagnosis line), then with: the table takes the last
    timeout 90 "$P/bench_step" --device cuda --graphs 0 --batch $b --archs 3 --steps 20 \
        --warmup 3 >> "$OUT/step.jsonl" 2>> "$OUT/step.err" || brc=1
    timeout 90 "$P/bench_step" --device cuda --batch $b --archs 3 --steps 20 --warmup 3 \
        --archs-out "$OUT/archs$b.json" >> "$OUT/step.jsonl" 2>> "$OUT/step.err" || brc=1
    timeout 90 python3 bench/bench_step_torch.py --device cuda --archs "$OUT/archs$b.json" \
        --batch $b --steps 20 --warmup 3 >> "$OUT/step.jsonl" 2>> "$OUT/step.err" || brc=1
done
step "step benchmark (DARTS space)" $brc $(($(t) - t0))

t0=$(t)
brc=0
timeout 90 "$P/bench_step" --space mobile --size 224 --device cuda --batch 64 --archs 2 \
    --steps 10 --warmup 3 --archs-out "$OUT/archs_mobile.json" >> "$OUT/mobile.jsonl" \
    2>> "$OUT/step.err" || brc=1
timeout 120 python3 bench/bench_mobile_torch.py --device cuda --archs "$OUT/archs_mobile.json" \
    --size 224 --batch 64 --steps 10 --warmup 3 >> "$OUT/mobile.jsonl" 2>> "$OUT/step.err" || brc=1
step "step benchmark (mobile space, 224 px)" $brc $(($(t) - t0))
python3 - "$OUT/step.jsonl" "$OUT/mobile.jsonl" >> "$S" <<'PY'
import json, sys
rows = []
for f in sys.argv[1:]:
    try:
        rows += [json.loads(l) for l in open(f) if '"step_summary"' in l]
    except OSError:
        pass
by = {}
for r in rows:
    by.setdefault((r.get("space", "darts"), r["batch"]), {})[r["impl"]] = r
print(f'{"space":>8} {"batch":>5} {"mdenas ms":>10} {"pytorch ms":>11} {"speedup":>8} '
      f'{"mdenas GPU MB":>14} {"pytorch GPU MB":>15}')
for (sp, b), d in sorted(by.items()):
    m, p = d.get("mdenas"), d.get("pytorch")
    if m and p:
        print(f'{sp:>8} {b:>5} {m["ms_per_step"]:>10.2f} {p["ms_per_step"]:>11.2f} '
              f'{p["ms_per_step"] / m["ms_per_step"]:>7.2f}x {m.get("peak_gpu_mb", 0):>14.0f} '
              f'{p.get("peak_gpu_mb", 0):>15.0f}')
PY

t0=$(t)
timeout 240 mpirun -np 1 --bind-to none "$M" search --dataset synthetic --subset 50000 \
    --epochs 1 --batch 256 --val-batches 0 --device cuda --log-every 49 \
    --out "$OUT/epoch_run" > "$OUT/epoch.txt" 2>&1
step "one CIFAR-size search epoch (GPU, 25k train + 25k val)" $? $(($(t) - t0))
grep -E "data on|period .* done|finished" "$OUT/epoch.txt" | tail -3 >> "$S"
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$CS" ]; then
    t0=$(t)
    timeout 150 "$CS" --tool memcheck --leak-check full --error-exitcode 3 "$P/test_cuda_ops" \
        > "$OUT/sanitizer.txt" 2>&1
    step "op tests under compute-sanitizer memcheck" $? $(($(t) - t0))
    grep -E "ERROR SUMMARY|LEAK SUMMARY" "$OUT/sanitizer.txt" | tail -3 >> "$S"
else
    echo "compute-sanitizer: not found on this machine" | tee -a "$S"
fi
cat "$S"
