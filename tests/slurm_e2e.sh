#!/bin/bash
# End-to-end test of jobs/fashion_search.slurm on a private one-node Slurm cluster.
#
#   tests/slurm_e2e.sh path/to/mdenas_mpi
#
# As root on Debian 12 (exit 77, skipped, otherwise): installs slurmd, slurmctld,
# slurm-client and munge when missing, starts munged, slurmctld and slurmd on this
# machine from a slurm.conf in a temporary folder (private ports and state, no
# cgroups), then runs a tiny Fashion-MNIST search twice as batch jobs with two ranks:
#   1. uninterrupted (the reference; launched with mpirun when job 2 uses srun),
#   2. signalled with `scancel --signal=USR1 --batch` once its first checkpoint
#      exists: the search must checkpoint and exit 75, the job must requeue itself
#      (Restarts=1), the next start must resume ("resuming from") and finish with
#      the reference's genotype.
#   3. jobs/imagenet_search.slurm on a small JPEG tree (tests/prep_make_tree.py; needs
#      PIL and numpy on /usr/bin/python3, else this part is skipped): the job runs
#      imagenet_prep into the shard folder first, then the mobile search
#      (--preset mobile-tiny, --device cpu), is signalled at its first checkpoint,
#      requeues, resumes without preparing again, and ends with the genotype and
#      net.config of the same search run uninterrupted with mpirun outside Slurm.
# Every daemon it started is stopped and the temporary folder removed on exit
# (MDENAS_SLURM_E2E_KEEP=1 keeps the folder: logs, run directories, slurm.conf).
# Exit status: 0 pass, 1 fail, 2 bad usage, 77 skipped (not root).
# shellcheck disable=SC2317 # cleanup and dump run from traps
set -u

[ "$(id -u)" = 0 ] || { echo "slurm_e2e: skipped: needs root (it starts Slurm daemons)"; exit 77; }
if [ $# -ne 1 ] || [ ! -x "$1" ]; then
    echo "usage: $0 path/to/mdenas_mpi" >&2
    exit 2
fi
BIN=$(readlink -f "$1")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
JOBSCRIPT=$ROOT/jobs/fashion_search.slurm
T0=$(date +%s)

log() { echo "slurm_e2e: [$(($(date +%s) - T0)) s] $*"; }

# The search: 2400 Fashion-MNIST images (1200 to train, 1200 held out), batch 32,
# 3 epochs (111 steps), a sampling period every 20 steps and a checkpoint every 10,
# so the stop (a step or two after the first checkpoint) falls mid-period; about
# 10-20 s with two ranks of one thread.
SEARCH_ARGS="--dataset fashion-mnist --subset 2400 --epochs 3 --batch 32 --cells 3 --channels 4
 --nodes 4 --period-steps 20 --val-batches 8 --lr 0.1 --alpha 0.02 --seed 3 --log-every 10
 --ckpt-every 10 --keep 3"
SEARCH_ARGS=$(echo "$SEARCH_ARGS" | tr -s " \n" "  ")
FASHION=/usr/share/datasets/fashion-mnist

# --- packages -----------------------------------------------------------------
missing=""
for p in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    command -v "${p%%:*}" >/dev/null 2>&1 || missing="$missing ${p#*:}"
done
[ -f $FASHION/train-images-idx3-ubyte.gz ] || missing="$missing dataset-fashion-mnist"
if [ -n "$missing" ]; then
    log "installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086 # a list of package names
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing; } >/dev/null ||
        { echo "slurm_e2e: FAIL: apt-get install$missing failed" >&2; exit 1; }
fi

# --- a private cluster ----------------------------------------------------------
# Nothing from a surrounding Slurm job or site configuration may leak in.
for v in $(compgen -e | grep -E '^(SLURM|SBATCH|SALLOC|SRUN)_'); do unset "$v"; done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

T=$(mktemp -d /tmp/mdenas-slurm-e2e.XXXXXX) || exit 1
chmod 755 "$T"   # munged wants its socket's folder searchable by all
mkdir -p "$T/state" "$T/spool" "$T/log" "$T/work"
export SLURM_CONF=$T/slurm.conf
JOBS=""

pid_of() { [ -s "$1" ] && cat "$1"; }
cleanup() {
    local rc=$? d p
    trap - EXIT INT TERM
    # shellcheck disable=SC2086 # a list of job ids
    [ -n "$JOBS" ] && scancel $JOBS 2>/dev/null
    # jobs gone, then the daemons: slurmd, slurmctld, munged (pid files)
    for _ in $(seq 20); do
        [ -z "$(squeue -h 2>/dev/null)" ] && break
        sleep 0.5
    done
    for d in slurmd slurmctld munged; do
        p=$(pid_of "$T/$d.pid")
        [ -n "$p" ] && kill -TERM "$p" 2>/dev/null
    done
    for d in slurmd slurmctld munged; do
        p=$(pid_of "$T/$d.pid")
        [ -n "$p" ] || continue
        for _ in $(seq 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
        kill -0 "$p" 2>/dev/null && { log "$d ($p) did not stop, killing it"; kill -KILL "$p"; }
    done
    if [ "${MDENAS_SLURM_E2E_KEEP:-0}" = 1 ]; then log "kept $T"; else rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

dump() {   # what is worth seeing after a failure
    local f
    for f in "$T"/work/*.out "$T"/log/slurmctld.log "$T"/log/slurmd.log; do
        [ -f "$f" ] || continue
        echo "----- $f (tail)"
        tail -n 60 "$f"
    done
}
fail() {
    echo "slurm_e2e: FAIL: $*" >&2
    dump >&2
    exit 1
}

# Two free TCP ports (nothing bound to them in /proc/net/tcp*).
port_used() {
    grep -qi ":$(printf '%04X' "$1") " /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 30000))
        port_used "$p" || port_used "$((p + 1))" || { echo "$p"; return; }
    done
}
PORT=$(free_port)

# This node as slurmd sees it (CPUs, memory).
HOST=$(hostname -s)
NODECONF=$(slurmd -C | head -n 1)
CPUS=$(echo "$NODECONF" | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')
MEM=$(echo "$NODECONF" | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
[ -n "$CPUS" ] && [ -n "$MEM" ] ||
    fail "slurmd -C printed no CPUs/RealMemory: $NODECONF"

# Munge: a fresh key and a daemon on a private socket.
dd if=/dev/urandom of="$T/munge.key" bs=1024 count=1 status=none
chmod 400 "$T/munge.key"
munged --key-file="$T/munge.key" --socket="$T/munge.sock" --pid-file="$T/munged.pid" \
       --log-file="$T/log/munged.log" --seed-file="$T/munged.seed" ||
    fail "munged did not start: $(tail -n 3 "$T/log/munged.log" 2>/dev/null)"

# cred_expire: a requeued job waits that long (default 120 s) before it starts again.
# sched_interval: how often the scheduler looks at pending jobs (default 60 s).
cat >"$SLURM_CONF" <<EOF
ClusterName=mdenas-e2e
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
AuthInfo=socket=$T/munge.sock,cred_expire=5
CredType=cred/munge
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
MpiDefault=none
JobRequeue=1
ReturnToService=2
MailProg=/bin/true
MinJobAge=600
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=e2e Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

slurmctld -c -f "$SLURM_CONF" || fail "slurmctld did not start"
slurmd -f "$SLURM_CONF" || fail "slurmd did not start"
for _ in $(seq 60); do
    state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null)
    [ "$state" = idle ] && break
    sleep 1
done
[ "$state" = idle ] || fail "node $HOST not idle after 60 s (state '$state')"
log "Slurm $(sinfo -V | cut -d' ' -f2) up on $HOST ($CPUS CPUs, $MEM MB), ports $PORT-$((PORT + 1))"

# --- the jobs ---------------------------------------------------------------------
NTASKS=2
[ "$CPUS" -ge 2 ] || NTASKS=1
if srun --mpi=list 2>&1 | grep -qw pmix; then
    LAUNCH=srun REF_LAUNCH=mpirun
else
    LAUNCH=mpirun REF_LAUNCH=mpirun
fi

# submit NAME LAUNCHER: prints the job id
submit() {
    env MDENAS_BIN="$BIN" MDENAS_OUT="$T/work/$1" MDENAS_ARGS="$SEARCH_ARGS" MDENAS_LAUNCH="$2" \
        sbatch --parsable --job-name="$1" --chdir="$T/work" --output="$T/work/%x-%j.out" \
               --nodes=1 --ntasks="$NTASKS" --ntasks-per-node="$NTASKS" --cpus-per-task=1 \
               --time=15 "$JOBSCRIPT"
}
field() {   # field JOBID NAME: a field of `scontrol show job`
    scontrol -o show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"
}
wait_done() {   # wait_done JOBID SECONDS: until the job has ended for good
    local end=$(($(date +%s) + $2)) s
    while [ "$(date +%s)" -lt "$end" ]; do
        s=$(field "$1" JobState)
        case $s in
        COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED)
            echo "$s"; return ;;
        esac
        sleep 1
    done
    echo "STILL-$(field "$1" JobState)"
}

wait_checkpoint() {   # wait_checkpoint JOBID DIR SECONDS: until DIR holds a checkpoint
    local end=$(($(date +%s) + $3)) s
    until compgen -G "$2/ckpt-*.safetensors" >/dev/null; do
        [ "$(date +%s)" -lt "$end" ] || fail "no checkpoint in $2 after $3 s"
        s=$(field "$1" JobState)
        [ "$s" = RUNNING ] || [ "$s" = PENDING ] || [ "$s" = CONFIGURING ] ||
            fail "job $1 is $s before its first checkpoint"
        sleep 0.2
    done
}

# 1. the reference, uninterrupted
log "job 1: uninterrupted reference search ($NTASKS ranks, $REF_LAUNCH)"
REF=$(submit ref "$REF_LAUNCH") || fail "sbatch failed"
JOBS="$REF"
t=$(date +%s)
s=$(wait_done "$REF" 300)
[ "$s" = COMPLETED ] || fail "reference job $REF ended $s, exit $(field "$REF" ExitCode)"
log "job 1 ($REF) COMPLETED in $(($(date +%s) - t)) s"
[ -s "$T/work/ref/genotype.txt" ] || fail "reference run wrote no genotype.txt"

# 2. the same search, signalled as soon as its first checkpoint exists
log "job 2: the same search ($NTASKS ranks, $LAUNCH), USR1 at its first checkpoint"
RUN=$(submit run "$LAUNCH") || fail "sbatch failed"
JOBS="$REF $RUN"
CK=$T/work/run/checkpoints
wait_checkpoint "$RUN" "$CK" 180
log "first checkpoint: $(cd "$CK" && ls ckpt-*.safetensors | head -n 1); scancel --signal=USR1 --batch $RUN"
scancel --signal=USR1 --batch "$RUN" || fail "scancel --signal=USR1 --batch $RUN failed"
s=$(wait_done "$RUN" 400)
OUTLOG=$T/work/run-$RUN.out
[ "$s" = COMPLETED ] || fail "job $RUN ended $s, exit $(field "$RUN" ExitCode)"
log "job 2 ($RUN) COMPLETED, Restarts=$(field "$RUN" Restarts)"

# --- the checks -------------------------------------------------------------------
[ "$(field "$RUN" Restarts)" = 1 ] || fail "job $RUN: Restarts=$(field "$RUN" Restarts), expected 1"
[ "$(field "$RUN" ExitCode)" = 0:0 ] || fail "job $RUN: ExitCode=$(field "$RUN" ExitCode)"
grep -q "search exited with status 75" "$OUTLOG" ||
    fail "the first start did not end with status 75 (stopped by the signal)"
grep -q "requeued job $RUN" "$OUTLOG" || fail "the job script did not requeue job $RUN"
[ "$(grep -c "^mdenas job $RUN start" "$OUTLOG")" = 2 ] ||
    fail "expected two starts of job $RUN in $OUTLOG (--open-mode=append)"
grep -q "restart 1:" "$OUTLOG" || fail "the second start did not see SLURM_RESTART_COUNT=1"
resumed=$(grep -m 1 "resuming from" "$OUTLOG") ||
    fail "the second start did not resume from a checkpoint"
log "second start: $resumed"
grep -q "search exited with status 0" "$OUTLOG" || fail "the second start did not finish"
[ -s "$T/work/run/genotype.txt" ] || fail "the resumed run wrote no genotype.txt"
if ! cmp -s "$T/work/ref/genotype.txt" "$T/work/run/genotype.txt"; then
    echo "reference: $(cat "$T/work/ref/genotype.txt")" >&2
    echo "resumed:   $(cat "$T/work/run/genotype.txt")" >&2
    fail "the resumed search's genotype differs from the uninterrupted one's"
fi
log "same genotype: $(cat "$T/work/run/genotype.txt")"
if [ -f "$T/work/ref/state.json" ] && ! cmp -s "$T/work/ref/state.json" "$T/work/run/state.json"; then
    log "note: state.json differs between the two runs (p not bit-identical)"
fi
# 3. jobs/imagenet_search.slurm: prep in the job, mobile search, a requeue, resume
PREP=$(dirname "$BIN")/imagenet_prep/imagenet_prep
if ! /usr/bin/python3 -c "import PIL, numpy" 2>/dev/null || [ ! -x "$PREP" ]; then
    log "part 3 skipped: no PIL/numpy on /usr/bin/python3 or no $PREP"
    log "PASS ($(($(date +%s) - T0)) s)"
    exit 0
fi
/usr/bin/python3 "$ROOT/tests/prep_make_tree.py" "$T/tree" 4 20 clean >/dev/null ||
    fail "prep_make_tree.py failed"
rm -rf "$T/tree/val" # its flat val/ needs --val-labels; the search reads train/ and search_val
IN_ARGS="--preset mobile-tiny --device cpu --image-size 32 --batch 8 --epochs 3 --ckpt-every 2
 --seed 3 --data-threads 1 --log-every 2"
IN_ARGS=$(echo "$IN_ARGS" | tr -s " \n" "  ")
PREP_ARGS="--search-val-per-class 4 --images-per-shard 16"
log "job 3: jobs/imagenet_search.slurm (imagenet_prep in the job, then the mobile search), USR1 at its first checkpoint"
IN=$(env MDENAS_BIN="$BIN" MDENAS_PREP_BIN="$PREP" MDENAS_IMAGENET="$T/tree" \
         MDENAS_SHARDS="$T/work/shards" MDENAS_PREP_ARGS="$PREP_ARGS" MDENAS_OUT="$T/work/in" \
         MDENAS_DEVICE=cpu MDENAS_LAUNCH="$LAUNCH" MDENAS_ARGS="$IN_ARGS" \
     sbatch --parsable --job-name=in --chdir="$T/work" --output="$T/work/%x-%j.out" \
            --nodes=1 --ntasks="$NTASKS" --ntasks-per-node="$NTASKS" --gpus-per-task=0 \
            --cpus-per-task=1 --time=15 "$ROOT/jobs/imagenet_search.slurm") || fail "sbatch failed"
JOBS="$REF $RUN $IN"
CK=$T/work/in/checkpoints
wait_checkpoint "$IN" "$CK" 240
scancel --signal=USR1 --batch "$IN" || fail "scancel --signal=USR1 --batch $IN failed"
s=$(wait_done "$IN" 400)
OUTLOG=$T/work/in-$IN.out
[ "$s" = COMPLETED ] || fail "job $IN ended $s, exit $(field "$IN" ExitCode)"
[ "$(field "$IN" Restarts)" = 1 ] || fail "job $IN: Restarts=$(field "$IN" Restarts), expected 1"
[ -s "$T/work/shards/manifest.json" ] || fail "the job did not prepare the shards"
grep -q "search exited with status 75" "$OUTLOG" || fail "job $IN: the first start did not stop with 75"
grep -q "resuming from" "$OUTLOG" || fail "job $IN: the second start did not resume"
if [ ! -s "$T/work/in/genotype.txt" ] || [ ! -s "$T/work/in/net.config" ]; then
    fail "job $IN wrote no genotype.txt or net.config"
fi
log "job 3 ($IN) COMPLETED, Restarts=1; the reference: the same search with mpirun, outside Slurm"
# shellcheck disable=SC2086 # IN_ARGS is a list of words
mpirun --oversubscribe -np "$NTASKS" -x OMP_NUM_THREADS=1 "$BIN" search --space mobile \
    --dataset imagenet --data "$T/work/shards" $IN_ARGS --threads 1 --out "$T/work/in-ref" \
    > "$T/work/in-ref.log" 2>&1 || fail "the reference mobile search failed (see $T/work/in-ref.log)"
for f in genotype.txt net.config; do
    cmp -s "$T/work/in/$f" "$T/work/in-ref/$f" ||
        fail "job $IN's $f differs from the uninterrupted search's: $(head -c 300 "$T/work/in/$f")"
done
log "same mobile genotype: $(head -c 120 "$T/work/in/genotype.txt")..."
log "PASS ($(($(date +%s) - T0)) s)"
exit 0
