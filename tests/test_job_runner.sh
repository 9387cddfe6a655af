#!/bin/bash
# Unit test of the Slurm job runner (jobs/lib/mdenas_job.sh) through the job files
# themselves, without Slurm: each job runs under bash with a fake SLURM_*
# environment and stub srun, mpirun, scontrol and sinfo first on PATH. The stubs
# record their command lines; the launchers then run the program, a stub
# mdenas_mpi or imagenet_prep that records its own and exits as told. Checked: the
# exact command lines, the launcher choice (srun when `srun --mpi=list` has pmix,
# MDENAS_LAUNCH, MDENAS_LAUNCH_ARGS), --device (cuda for the GPU jobs,
# MDENAS_DEVICE), MDENAS_ARGS split into words without globbing, --out refused in
# it, the requeue on status 75 (and none after TERM or another status), USR1 and
# TERM passed on while the program runs, the messages for a missing program or
# data, a finished run not rerun, the ImageNet prep before the search, the runner
# found through scontrol's Command= from Slurm's spool copy; then bash -n and
# ShellCheck (when installed) on every job file.
#
#   tests/test_job_runner.sh
#
# Exit status: 0 pass, 1 fail.
# shellcheck disable=SC2016 # the stubs' bodies are single-quoted on purpose
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
JOBS=$ROOT/jobs
T=$(mktemp -d /tmp/mdenas-job-runner.XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT
# Nothing from a surrounding Slurm job or the caller's settings may leak in.
for v in $(compgen -e | grep -E '^(SLURM|SBATCH|SALLOC|SRUN|MDENAS)_'); do unset "$v"; done
unset OMP_NUM_THREADS

STUBS=$T/stubs LOG=$T/log SUBMIT=$T/submit WORK=$T/work
mkdir -p "$STUBS" "$LOG" "$SUBMIT" "$WORK"
BIN=$T/prog/mdenas_mpi PREP=$T/prog/imagenet_prep
mkdir -p "$T/prog"

# --- stubs ------------------------------------------------------------------------
# stub NAME BODY: a command on PATH; record NAME ARGS appends "NAME|ARG|ARG|" to $LOG/calls.
cat >"$STUBS/record" <<'EOF'
#!/bin/bash
printf '%s|' "$@" >>"$STUB_LOG/calls"
echo >>"$STUB_LOG/calls"
EOF
stub() {
    printf '#!/bin/bash\n%s\n' "$2" >"$STUBS/$1"
    chmod +x "$STUBS/$1" "$STUBS/record"
}
# The launchers: `srun --mpi=list` lists pmix when STUB_PMIX=1. A launch records
# itself and runs the program: the first argument that is one of the stub programs.
launcher='record "$(basename "$0")" "$@"
while [ $# -gt 0 ] && [ "$1" != "$STUB_BIN" ] && [ "$1" != "$STUB_PREP" ]; do shift; done
[ $# -gt 0 ] || { echo "stub launcher: no program" >&2; exit 99; }
exec "$@"'
stub srun 'if [ "${1:-}" = --mpi=list ]; then
    echo "MPI plugin types are..."; echo "	none"; echo "	cray_shasta"
    [ "${STUB_PMIX:-0}" = 1 ] && echo "	pmix" && echo "specific pmix plugin versions available: pmix_v4"
    exit 0
fi
'"$launcher"
stub mpirun "$launcher"
# scontrol: `requeue ID` records and exits STUB_REQUEUE_RC; `show job ID` prints
# the Command= of the submitted file when STUB_COMMAND is set.
stub scontrol 'if [ "${1:-}" = show ]; then
    [ -n "${STUB_COMMAND:-}" ] || exit 1
    printf "JobId=%s JobName=x\n   UserId=u(1) GroupId=g(1)\n   Command=%s\n   WorkDir=/w\n" "$3" "$STUB_COMMAND"
    exit 0
fi
record scontrol "$@"
exit "${STUB_REQUEUE_RC:-0}"'
stub sinfo 'record sinfo "$@"'
# The program: records its arguments (after "prog") and OMP_NUM_THREADS. STUB_RC:
# its status; STUB_MODE=wait: waits for USR1 (marks $STUB_LOG/started), then
# "checkpoints" for a while and exits 75. Status 0 writes a genotype.
cat >"$BIN" <<'EOF'
#!/bin/bash
record prog "$@"
echo "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}" >>"$STUB_LOG/env"
out=""
while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
if [ "${STUB_MODE:-}" = wait ]; then
    got=""
    trap 'got=1; echo usr1 >>"$STUB_LOG/signals"' USR1
    touch "$STUB_LOG/started"
    for _ in $(seq 200); do [ -n "$got" ] && break; sleep 0.05; done
    [ -n "$got" ] || exit 98
    sleep 0.5   # a second USR1 may come meanwhile
    exit 75
fi
rc=${STUB_RC:-0}
[ "$rc" = 0 ] && [ -n "$out" ] && mkdir -p "$out" && echo "GENOTYPE-STUB" >"$out/genotype.txt"
exit "$rc"
EOF
# imagenet_prep: records its arguments (after "prep"); STUB_PREP_RC: its status,
# 0 writes OUT/manifest.json; STUB_PREP_MODE=wait: dies of USR1 like the real one.
cat >"$PREP" <<'EOF'
#!/bin/bash
record prep "$@"
out=""
while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
if [ "${STUB_PREP_MODE:-}" = wait ]; then
    touch "$STUB_LOG/started"
    trap - USR1
    sleep 10 & wait
    exit 97
fi
rc=${STUB_PREP_RC:-0}
[ "$rc" = 0 ] && mkdir -p "$out" && echo '{}' >"$out/manifest.json"
exit "$rc"
EOF
chmod +x "$BIN" "$PREP"

# --- running a job ------------------------------------------------------------------
export PATH=$STUBS:$PATH STUB_LOG=$LOG STUB_BIN=$BIN STUB_PREP=$PREP
SLURM_ENV=(SLURM_SUBMIT_DIR="$SUBMIT" SLURM_JOB_ID=4242 SLURM_JOB_NODELIST="n[1-2]"
           SLURM_RESTART_COUNT=1 SLURM_NTASKS=4 SLURM_CPUS_PER_TASK=3)
FAILS=0 CASE=""
OUT=$T/job.out RC=""

reset() {   # a clean slate: logs, run directories, data
    rm -rf "$LOG" "$SUBMIT" "$WORK"
    mkdir -p "$LOG" "$SUBMIT" "$WORK"
    : >"$LOG/calls"
}
# job CASE FILE [VAR=VALUE...]: runs jobs/FILE in $WORK (which holds files a glob
# would match) with the Slurm environment, MDENAS_BIN=$BIN and the settings given.
job() {
    CASE=$1
    local file=$2
    shift 2
    reset
    touch "$WORK/a-file" "$WORK/another"
    (cd "$WORK" && env "${SLURM_ENV[@]}" MDENAS_BIN="$BIN" MDENAS_PREP_BIN="$PREP" "$@" \
        bash "$JOBS/$file") >"$OUT" 2>&1
    RC=$?
}
fail() {
    echo "FAIL [$CASE]: $*"
    echo "----- job output"
    sed 's/^/    /' "$OUT"
    echo "----- calls"
    sed 's/^/    /' "$LOG/calls"
    FAILS=$((FAILS + 1))
}
expect_rc() { [ "$RC" = "$1" ] || fail "exit status $RC, expected $1"; }
expect_out() { grep -qF -- "$1" "$OUT" || fail "no '$1' in the output"; }
expect_no_out() { ! grep -qF -- "$1" "$OUT" || fail "'$1' in the output"; }
# call N: the Nth recorded command line, as "name|arg|arg|"
call() { sed -n "${1}p" "$LOG/calls"; }
ncalls() { grep -c . "$LOG/calls"; }
expect_call() {   # expect_call N "name|arg|...|"
    [ "$(call "$1")" = "$2" ] || fail "call $1 is '$(call "$1")', expected '$2'"
}
expect_ncalls() { [ "$(ncalls)" = "$1" ] || fail "$(ncalls) calls, expected $1"; }
expect_no_requeue() { ! grep -q '^scontrol|requeue' "$LOG/calls" || fail "the job requeued itself"; }

RUNS=$SUBMIT/runs
MPIRUN="mpirun|--map-by|socket|--bind-to|socket|-x|OMP_NUM_THREADS|"
SRUN="srun|--mpi=pmix|--cpus-per-task=3|"
FASHION="search|--preset|tiny|--out|$RUNS/fashion-slurm|--threads|3|"

# --- fashion_search.slurm: command lines and launcher -------------------------------
job "fashion, no pmix: mpirun" fashion_search.slurm
expect_rc 0
expect_call 1 "$MPIRUN$BIN|$FASHION"
expect_call 2 "prog|$FASHION"
expect_ncalls 2
expect_out "mdenas job 4242 start "
expect_out " on n[1-2], restart 1: 4 ranks x 3 threads, out $RUNS/fashion-slurm"
F=${FASHION%|}
expect_out "+ ${MPIRUN//|/ }$BIN ${F//|/ }"
expect_out "mdenas job: search exited with status 0"
expect_out "GENOTYPE-STUB"
grep -qx "OMP_NUM_THREADS=3" "$LOG/env" || fail "the program's OMP_NUM_THREADS is not 3"

job "fashion, pmix: srun" fashion_search.slurm STUB_PMIX=1
expect_rc 0
expect_call 1 "$SRUN$BIN|$FASHION"

job "MDENAS_LAUNCH=mpirun with pmix" fashion_search.slurm STUB_PMIX=1 MDENAS_LAUNCH=mpirun
expect_call 1 "$MPIRUN$BIN|$FASHION"
job "MDENAS_LAUNCH=srun without pmix" fashion_search.slurm MDENAS_LAUNCH=srun
expect_call 1 "$SRUN$BIN|$FASHION"
job "MDENAS_LAUNCH=auto" fashion_search.slurm STUB_PMIX=1 MDENAS_LAUNCH=auto
expect_call 1 "$SRUN$BIN|$FASHION"
job "MDENAS_LAUNCH bad" fashion_search.slurm MDENAS_LAUNCH=pbsdsh
expect_rc 2
expect_out "mdenas job: MDENAS_LAUNCH must be auto, srun or mpirun, not 'pbsdsh'"
expect_ncalls 0

job "MDENAS_LAUNCH_ARGS replaces the defaults" fashion_search.slurm \
    MDENAS_LAUNCH_ARGS="-np 2  --oversubscribe"
expect_call 1 "mpirun|-np|2|--oversubscribe|$BIN|$FASHION"
job "MDENAS_LAUNCH_ARGS set but empty: none" fashion_search.slurm STUB_PMIX=1 MDENAS_LAUNCH_ARGS=
expect_call 1 "srun|--mpi=pmix|$BIN|$FASHION"
job "no SLURM_CPUS_PER_TASK: 1 thread" fashion_search.slurm SLURM_CPUS_PER_TASK= STUB_PMIX=1
expect_call 1 "srun|--mpi=pmix|--cpus-per-task=1|$BIN|${FASHION/--threads|3/--threads|1}"

# --- MDENAS_ARGS ------------------------------------------------------------------------
job "MDENAS_ARGS: words on blanks, no globbing, no quoting" fashion_search.slurm \
    MDENAS_ARGS=$'  --seed 3\t--epochs  20\n--tag * \'x y\' a\\b  '
expect_rc 0
expect_call 2 "prog|$FASHION--seed|3|--epochs|20|--tag|*|'x|y'|a\\b|"
job "MDENAS_ARGS: --out refused" fashion_search.slurm MDENAS_ARGS="--seed 1 --out $T/elsewhere"
expect_rc 2
expect_out "mdenas job: MDENAS_ARGS may not hold --out; set MDENAS_OUT for the run directory"
expect_ncalls 0
job "MDENAS_ARGS: --out=DIR refused" fashion_search.slurm MDENAS_ARGS="--out=$T/elsewhere"
expect_rc 2
expect_ncalls 0
job "MDENAS_ARGS: --outx is not --out" fashion_search.slurm MDENAS_ARGS="--outx 1"
expect_rc 0
job "MDENAS_OUT" fashion_search.slurm MDENAS_OUT="$T/my run"
expect_call 2 "prog|search|--preset|tiny|--out|$T/my run|--threads|3|"
expect_out "out $T/my run"

# --- status 75 and the requeue ----------------------------------------------------------
job "status 75: requeue" fashion_search.slurm STUB_RC=75
expect_rc 0
expect_call 3 "scontrol|requeue|4242|"
expect_out "mdenas job: search exited with status 75"
expect_out "mdenas job: requeued job 4242; its next start resumes from the checkpoint"
job "status 75, requeue fails" fashion_search.slurm STUB_RC=75 STUB_REQUEUE_RC=1
expect_rc 75
expect_out "mdenas job: scontrol requeue failed; submit this job again to resume"
job "status 1: no requeue" fashion_search.slurm STUB_RC=1
expect_rc 1
expect_no_requeue
expect_no_out "GENOTYPE-STUB"
job "status 2: no requeue" fashion_search.slurm STUB_RC=2
expect_rc 2
expect_no_requeue

# --- signals while the search runs ------------------------------------------------------
# signal_job CASE FILE SIGNAL TIMES [VAR=VALUE...]: runs the job in the background,
# sends SIGNAL (TIMES times, 0.2 s apart) once the program has started.
signal_job() {
    CASE=$1
    local file=$2 sig=$3 times=$4 pid
    shift 4
    reset
    (cd "$WORK" && exec env "${SLURM_ENV[@]}" MDENAS_BIN="$BIN" MDENAS_PREP_BIN="$PREP" "$@" \
        bash "$JOBS/$file") >"$OUT" 2>&1 &
    pid=$!
    for _ in $(seq 100); do [ -e "$LOG/started" ] && break; sleep 0.05; done
    [ -e "$LOG/started" ] || fail "the program did not start"
    sleep 0.1
    for _ in $(seq "$times"); do kill -"$sig" "$pid"; sleep 0.2; done
    wait "$pid"
    RC=$?
}
signal_job "USR1 twice while the search runs: one checkpoint, requeue" \
    fashion_search.slurm USR1 2 STUB_MODE=wait
expect_rc 0
expect_out "mdenas job: SIGUSR1 at "
expect_out ", asking the search to checkpoint and stop"
expect_out "mdenas job: search exited with status 75"
expect_call 3 "scontrol|requeue|4242|"
[ "$(grep -c usr1 "$LOG/signals" 2>/dev/null)" -ge 1 ] || fail "the program got no USR1"
signal_job "TERM while the search runs: checkpoint, no requeue" \
    fashion_search.slurm TERM 1 STUB_MODE=wait STUB_PMIX=1
expect_rc 75
expect_out "mdenas job: SIGTERM at "
expect_out "mdenas job: search exited with status 75"
grep -q usr1 "$LOG/signals" 2>/dev/null || fail "TERM did not reach the program as USR1"
expect_no_requeue

# --- finished run, missing program, data ---------------------------------------------
CASE="finished run: not rerun"
reset
mkdir -p "$RUNS/fashion-slurm" && echo "OLD-GENOTYPE" >"$RUNS/fashion-slurm/genotype.txt"
(cd "$WORK" && env "${SLURM_ENV[@]}" MDENAS_BIN="$BIN" bash "$JOBS/fashion_search.slurm") >"$OUT" 2>&1
RC=$?
expect_rc 0
expect_out "mdenas job: $RUNS/fashion-slurm already holds a finished search:"
expect_out "OLD-GENOTYPE"
expect_ncalls 0

job "missing program" fashion_search.slurm MDENAS_BIN="$T/nowhere/mdenas_mpi"
expect_rc 2
expect_out "mdenas job: no program at $T/nowhere/mdenas_mpi (set MDENAS_BIN)"
expect_ncalls 0
job "default program: build/mdenas_mpi of the submit folder" fashion_search.slurm MDENAS_BIN=
expect_rc 2
expect_out "mdenas job: no program at $SUBMIT/build/mdenas_mpi (set MDENAS_BIN)"

job "fashion: MDENAS_DATA missing" fashion_search.slurm MDENAS_DATA="$T/fm"
expect_rc 2
expect_out "mdenas job: no Fashion-MNIST data at $T/fm (no train-images-idx3-ubyte.gz; set MDENAS_DATA)"
expect_ncalls 0
mkdir -p "$T/fm" && touch "$T/fm/train-images-idx3-ubyte.gz"
job "fashion: MDENAS_DATA" fashion_search.slurm MDENAS_DATA="$T/fm"
expect_rc 0
expect_call 2 "prog|search|--preset|tiny|--data|$T/fm|--out|$RUNS/fashion-slurm|--threads|3|"
job "fashion: MDENAS_DEVICE" fashion_search.slurm MDENAS_DEVICE=cuda
expect_call 2 "prog|search|--preset|tiny|--out|$RUNS/fashion-slurm|--device|cuda|--threads|3|"

# --- cifar_search.slurm: data and the GPU -------------------------------------------
C10=$SUBMIT/data/cifar-10-batches-bin
job "cifar: no data" cifar_search.slurm
expect_rc 2
expect_out "mdenas job: no CIFAR-10 data at $C10 (no data_batch_1.bin; set MDENAS_DATA)"
expect_ncalls 0
cifar_job() { # a cifar job with its default data present
    CASE=$1
    shift
    reset
    mkdir -p "$C10" && touch "$C10/data_batch_1.bin"
    (cd "$WORK" && env "${SLURM_ENV[@]}" MDENAS_BIN="$BIN" "$@" bash "$JOBS/cifar_search.slurm") \
        >"$OUT" 2>&1
    RC=$?
}
CIFAR="search|--preset|cifar10|--data|$C10|--out|$RUNS/cifar-slurm"
cifar_job "cifar: --device cuda" STUB_PMIX=1
expect_rc 0
expect_call 1 "$SRUN$BIN|$CIFAR|--device|cuda|--threads|3|"
cifar_job "cifar: MDENAS_DEVICE=cpu" MDENAS_DEVICE=cpu
expect_call 2 "prog|$CIFAR|--device|cpu|--threads|3|"
job "cifar: MDENAS_DATA missing" cifar_search.slurm MDENAS_DATA="$T/c10"
expect_rc 2
expect_out "mdenas job: no CIFAR-10 data at $T/c10 (no data_batch_1.bin; set MDENAS_DATA)"
job "cifar: --dataset in MDENAS_ARGS, data not checked" cifar_search.slurm \
    MDENAS_ARGS="--dataset synthetic"
expect_rc 0
expect_call 2 "prog|$CIFAR|--device|cuda|--threads|3|--dataset|synthetic|"
job "cifar: --data in MDENAS_ARGS, data not checked" cifar_search.slurm MDENAS_ARGS="--data $T/x"
expect_rc 0

# --- train_final.slurm: what it trains, on which data ------------------------------
job "train: no data" train_final.slurm
expect_rc 2
expect_out "mdenas job: no CIFAR-10 data at $C10 (no data_batch_1.bin; set MDENAS_DATA)"
expect_ncalls 0
mkdir -p "$T/c10t" && touch "$T/c10t/data_batch_1.bin"
job "train: the released cell by default" train_final.slurm MDENAS_DATA="$T/c10t"
expect_rc 0
expect_call 2 "prog|train|--preset|cifar10-final|--genotype|mdenas|--data|$T/c10t|--out|$RUNS/train-slurm|--device|cuda|--threads|3|"
job "train: MDENAS_GENOTYPE, MDENAS_ARGS" train_final.slurm MDENAS_DATA="$T/c10t" \
    MDENAS_GENOTYPE="$RUNS/cifar-slurm" MDENAS_ARGS="--epochs 10"
expect_call 2 "prog|train|--preset|cifar10-final|--genotype|$RUNS/cifar-slurm|--data|$T/c10t|--out|$RUNS/train-slurm|--device|cuda|--threads|3|--epochs|10|"
job "train: imagenet-mobile-final needs shards" train_final.slurm \
    MDENAS_PRESET=imagenet-mobile-final MDENAS_DATA="$T/none"
expect_rc 2
expect_out "mdenas job: no prepared ImageNet at $T/none (no manifest.json; set MDENAS_DATA)"
job "train: unknown preset" train_final.slurm MDENAS_PRESET=tiny MDENAS_DATA="$T/c10t"
expect_rc 2
expect_out "MDENAS_PRESET must be cifar10-final or imagenet-mobile-final, not 'tiny'"

# --- imagenet_search.slurm ----------------------------------------------------------
SH=$SUBMIT/data/imagenet-prepared
IN_SEARCH="search|--space|mobile|--preset|imagenet-mobile|--dataset|imagenet|--data|$SH|--out|$RUNS/imagenet-slurm"
PREPCALL="prep|$T/tree|--out|$SH|--threads|3|"
job "imagenet: no shards, no MDENAS_IMAGENET" imagenet_search.slurm
expect_rc 2
expect_out "mdenas job: no prepared ImageNet at $SH (no manifest.json)"
expect_out "sbatch --parsable jobs/imagenet_prep.slurm"
expect_out "sbatch --dependency=afterok:\$prep jobs/imagenet_search.slurm"
expect_out "MDENAS_IMAGENET="
expect_ncalls 0
job "imagenet: MDENAS_DATA refused" imagenet_search.slurm MDENAS_DATA="$T/x"
expect_rc 2
expect_out "mdenas job: this job reads MDENAS_SHARDS (the folder imagenet_prep wrote), not MDENAS_DATA"
expect_ncalls 0
imagenet_job() {   # imagenet_job CASE FILE [VAR=VALUE...]: with a JPEG tree, shards as told
    CASE=$1
    local file=$2
    shift 2
    reset
    mkdir -p "$T/tree/train/n01"
    [ "${SHARDS_READY:-0}" = 1 ] && mkdir -p "$SH" && echo '{}' >"$SH/manifest.json"
    (cd "$WORK" && env "${SLURM_ENV[@]}" MDENAS_BIN="$BIN" MDENAS_PREP_BIN="$PREP" "$@" \
        bash "$JOBS/$file") >"$OUT" 2>&1
    RC=$?
}
SHARDS_READY=1 imagenet_job "imagenet: shards ready" imagenet_search.slurm STUB_PMIX=1
expect_rc 0
expect_call 1 "$SRUN$BIN|$IN_SEARCH|--device|cuda|--threads|3|"
expect_ncalls 2
SHARDS_READY=1 imagenet_job "imagenet: the e2e's CPU form" imagenet_search.slurm \
    MDENAS_DEVICE=cpu MDENAS_ARGS="--preset mobile-tiny --device cpu --subset 64"
expect_call 2 "prog|$IN_SEARCH|--device|cpu|--threads|3|--preset|mobile-tiny|--device|cpu|--subset|64|"
SHARDS_READY=1 imagenet_job "imagenet: MDENAS_SHARDS" imagenet_search.slurm MDENAS_SHARDS="$T/none"
expect_rc 2
expect_out "mdenas job: no prepared ImageNet at $T/none (no manifest.json)"
imagenet_job "imagenet: prep in the job, then the search" imagenet_search.slurm \
    MDENAS_IMAGENET="$T/tree" MDENAS_PREP_ARGS="--val-labels $T/v.csv  --quiet"
expect_rc 0
expect_call 1 "$MPIRUN$PREP|$T/tree|--out|$SH|--threads|3|--val-labels|$T/v.csv|--quiet|"
expect_call 3 "$MPIRUN$BIN|$IN_SEARCH|--device|cuda|--threads|3|"
expect_out "mdenas job: imagenet_prep exited with status 0"
expect_ncalls 4
imagenet_job "imagenet: prep fails" imagenet_search.slurm MDENAS_IMAGENET="$T/tree" STUB_PREP_RC=2
expect_rc 2
expect_call 2 "$PREPCALL"
expect_ncalls 2
expect_no_requeue
imagenet_job "imagenet: no JPEG tree" imagenet_search.slurm MDENAS_IMAGENET="$T/notree"
expect_rc 2
expect_out "mdenas job: no ImageNet JPEG tree at $T/notree (no train/; set MDENAS_IMAGENET)"
expect_ncalls 0
imagenet_job "imagenet: no imagenet_prep" imagenet_search.slurm MDENAS_IMAGENET="$T/tree" \
    MDENAS_PREP_BIN="$T/nowhere/imagenet_prep"
expect_rc 2
expect_out "mdenas job: no program at $T/nowhere/imagenet_prep (set MDENAS_PREP_BIN)"
SHARDS_READY=1 imagenet_job "imagenet: status 75: requeue" imagenet_search.slurm STUB_RC=75
expect_rc 0
expect_call 3 "scontrol|requeue|4242|"

# --- imagenet_prep.slurm ------------------------------------------------------------
imagenet_job "prep job" imagenet_prep.slurm MDENAS_IMAGENET="$T/tree" STUB_PMIX=1
expect_rc 0
expect_call 1 "$SRUN$PREP|$T/tree|--out|$SH|--threads|3|"
expect_out "out $SH"
expect_out "mdenas job: $SH is prepared"
[ -s "$SH/manifest.json" ] || fail "no manifest.json"
SHARDS_READY=1 imagenet_job "prep job: already prepared" imagenet_prep.slurm MDENAS_IMAGENET="$T/tree"
expect_rc 0
expect_out "mdenas job: $SH is already prepared (manifest.json)"
expect_ncalls 0
imagenet_job "prep job: no MDENAS_IMAGENET" imagenet_prep.slurm
expect_rc 2
expect_out "mdenas job: set MDENAS_IMAGENET to the ImageNet JPEG tree"
imagenet_job "prep job: fails" imagenet_prep.slurm MDENAS_IMAGENET="$T/tree" STUB_PREP_RC=1
expect_rc 1
expect_out "mdenas job: imagenet_prep did not finish $SH"
expect_no_requeue
mkdir -p "$T/tree/train/n01"
signal_job "prep job: USR1 stops the prep, requeue" imagenet_prep.slurm USR1 1 \
    MDENAS_IMAGENET="$T/tree" STUB_PREP_MODE=wait
expect_rc 0
expect_out "stopping imagenet_prep (it keeps its finished shards)"
expect_out "mdenas job: requeued job 4242; its next start goes on with the unfinished shards"
expect_call 2 "prep|$T/tree|--out|$SH|--threads|3|"

# --- finding the runner -----------------------------------------------------------------
# Slurm runs a copy of the job file from its spool folder.
spool_job() {   # spool_job CASE [VAR=VALUE...]
    CASE=$1
    shift
    reset
    mkdir -p "$T/spool/job04242"
    cp "$JOBS/fashion_search.slurm" "$T/spool/job04242/slurm_script"
    (cd "$WORK" && env "${SLURM_ENV[@]}" MDENAS_BIN="$BIN" "$@" \
        bash "$T/spool/job04242/slurm_script") >"$OUT" 2>&1
    RC=$?
}
spool_job "spool copy: runner from scontrol's Command=" STUB_COMMAND="$JOBS/fashion_search.slurm"
expect_rc 0
expect_call 2 "prog|$FASHION"
spool_job "spool copy: no runner anywhere"
expect_rc 2
expect_out "mdenas job: no lib/mdenas_job.sh beside the submitted job file nor in $SUBMIT/jobs"
CASE="spool copy: runner under the submit folder"
reset
mkdir -p "$T/spool/job04242" "$SUBMIT"
cp "$JOBS/fashion_search.slurm" "$T/spool/job04242/slurm_script"
ln -s "$JOBS" "$SUBMIT/jobs"
(cd "$WORK" && env "${SLURM_ENV[@]}" MDENAS_BIN="$BIN" bash "$T/spool/job04242/slurm_script") \
    >"$OUT" 2>&1
RC=$?
expect_rc 0

# --- the files themselves ---------------------------------------------------------------
CASE="bash -n"
for f in "$JOBS"/*.slurm "$JOBS"/lib/*.sh; do
    bash -n "$f" 2>"$OUT" || fail "bash -n $f"
done
CASE="shellcheck"
if command -v shellcheck >/dev/null 2>&1; then
    (cd "$JOBS" && shellcheck -x ./*.slurm lib/*.sh) >"$OUT" 2>&1 || fail "shellcheck"
else
    echo "test_job_runner: note: shellcheck not installed, not run"
fi

if [ "$FAILS" != 0 ]; then
    echo "test_job_runner: $FAILS failures"
    exit 1
fi
echo "test_job_runner: PASS"
exit 0
