# shellcheck shell=bash
# What every mdenas Slurm job does, sourced by jobs/*.slurm, which hold only their
# #SBATCH lines, defaults and program options. Tested by tests/test_job_runner.sh.
#
# Sourcing it traps USR1 and TERM (see mdenas_job_launch) and exports
# OMP_NUM_THREADS. Then:
#   mdenas_job_start NAME [DEVICE]  a search job's first step: the run directory
#                      (MDENAS_OUT, default $SLURM_SUBMIT_DIR/runs/NAME), the device
#                      (MDENAS_DEVICE, else DEVICE; none: the program's default),
#                      the start line; exits 0 if the run already finished, 2 for a
#                      missing program or --out in MDENAS_ARGS
#   mdenas_job_search ARGS...       runs MDENAS_BIN ARGS --out DIR [--device D]
#                      --threads N MDENAS_ARGS through the launcher and exits with its
#                      status; 75 (stopped with a checkpoint) requeues the job
#   mdenas_job_prep IN OUT          runs imagenet_prep IN --out OUT --threads N
#                      MDENAS_PREP_ARGS through the launcher; returns when OUT is
#                      finished, exits (requeued when stopped by USR1) otherwise
#   mdenas_job_need FILE WHAT VAR   exits 2 ("no WHAT at DIR (set VAR)") unless FILE
#                      exists or MDENAS_ARGS names its own --data or --dataset
# and the pieces they are made of (mdenas_job_banner, mdenas_job_need_program,
# mdenas_job_launch, mdenas_job_requeue). Messages start with "mdenas job:".

mdenas_submit_dir=${SLURM_SUBMIT_DIR:-$PWD}
mdenas_bin=${MDENAS_BIN:-$mdenas_submit_dir/build/mdenas_mpi}
mdenas_prep_bin=${MDENAS_PREP_BIN:-$mdenas_submit_dir/build/imagenet_prep/imagenet_prep}
mdenas_out=""
mdenas_device=""
mdenas_args=()   # MDENAS_ARGS in words
mdenas_rc=""     # status of the last mdenas_job_launch

# OpenMP threads per rank: the CPUs Slurm gave each task.
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

# Signals: USR1 (the time limit is near; `scancel --signal=USR1 --batch JOB`) and
# TERM (scancel, preemption) go to the launcher as USR1, which both srun and
# mpirun pass on to every rank: a search stops after the current step and rank 0
# writes a checkpoint; imagenet_prep dies and keeps its finished shards. (TERM
# itself would make srun kill the ranks at once.)
mdj_pid=""
mdj_signal=""
mdj_nsig=0
mdj_stopping="asking the search to checkpoint and stop"
mdj_launcher=()
# shellcheck disable=SC2317 # called by the traps
mdj_on_signal() {
    mdj_signal=$1
    mdj_nsig=$((mdj_nsig + 1))
    echo "mdenas job: SIG$1 at $(date '+%F %T'), $mdj_stopping"
    [ -z "$mdj_pid" ] || kill -USR1 "$mdj_pid" 2>/dev/null
}
trap 'mdj_on_signal USR1' USR1
trap 'mdj_on_signal TERM' TERM

# Words of a variable, split on blanks (spaces, tabs, newlines) with no globbing
# and no quoting: mdj_words ARRAY "$VALUE".
mdj_words() {
    local -n mdj_to=$1
    mdj_to=()
    # shellcheck disable=SC2034 # a name reference: this fills the caller's array
    [ -z "$2" ] || read -r -d '' -a mdj_to <<<"$2" || true
}
mdj_words mdenas_args "${MDENAS_ARGS:-}"

# mdenas_job_args_have OPTION: whether MDENAS_ARGS holds OPTION.
mdenas_job_args_have() {
    local w
    for w in "${mdenas_args[@]}"; do
        [ "$w" = "$1" ] || [ "${w%%=*}" = "$1" ] && return 0
    done
    return 1
}

# mdenas_job_banner DIR: the first line of every start (tests/slurm_e2e.sh reads it).
mdenas_job_banner() {
    echo "mdenas job ${SLURM_JOB_ID:-?} start $(date '+%F %T') on ${SLURM_JOB_NODELIST:-?}," \
         "restart ${SLURM_RESTART_COUNT:-0}: ${SLURM_NTASKS:-1} ranks x $OMP_NUM_THREADS threads, out $1"
}

# mdenas_job_need_program PATH VAR
mdenas_job_need_program() {
    if [ ! -x "$1" ]; then
        echo "mdenas job: no program at $1 (set $2)" >&2
        exit 2
    fi
}

# mdenas_job_need FILE WHAT VAR: the data a job reads, checked before any rank starts.
mdenas_job_need() {
    mdenas_job_args_have --data || mdenas_job_args_have --dataset && return 0
    if [ ! -e "$1" ]; then
        echo "mdenas job: no $2 at ${1%/*} (no ${1##*/}; set $3)" >&2
        exit 2
    fi
}

mdenas_job_start() {
    mdenas_out=${MDENAS_OUT:-$mdenas_submit_dir/runs/$1}
    mdenas_device=${MDENAS_DEVICE:-${2:-}}
    mdenas_job_banner "$mdenas_out"
    # A search that already finished (a requeue after the end, a resubmission) is not rerun.
    if [ -s "$mdenas_out/genotype.txt" ]; then
        echo "mdenas job: $mdenas_out already holds a finished search:"
        cat "$mdenas_out/genotype.txt"
        exit 0
    fi
    # One run directory per job: a second --out would make the program resume or
    # start a run the next start of this job does not look at.
    if mdenas_job_args_have --out; then
        echo "mdenas job: MDENAS_ARGS may not hold --out; set MDENAS_OUT for the run directory" >&2
        exit 2
    fi
    mdenas_job_need_program "$mdenas_bin" MDENAS_BIN
}

# The launcher, chosen once per job. srun: Slurm starts the ranks (PMIx) and binds
# them; srun needs the CPUs per task given (Slurm 22.05+ does not pass sbatch's on).
# mpirun (Open MPI) reads the allocation itself; one rank per socket, bound to it,
# threads free in it. A rank of a GPU job uses GPU (local rank mod the GPUs it
# sees): with srun and --gpus-per-task=1 it sees only its own, with mpirun all.
mdj_choose_launcher() {
    local launch=${MDENAS_LAUNCH:-auto} extra
    [ ${#mdj_launcher[@]} = 0 ] || return 0
    if [ "$launch" = auto ]; then
        if srun --mpi=list 2>&1 | grep -qw pmix; then launch=srun; else launch=mpirun; fi
    fi
    case $launch in
    srun)   mdj_launcher=(srun --mpi=pmix) extra="--cpus-per-task=$OMP_NUM_THREADS" ;;
    mpirun) mdj_launcher=(mpirun) extra="--map-by socket --bind-to socket -x OMP_NUM_THREADS" ;;
    *)      echo "mdenas job: MDENAS_LAUNCH must be auto, srun or mpirun, not '$launch'" >&2
            exit 2 ;;
    esac
    local words=()
    mdj_words words "${MDENAS_LAUNCH_ARGS-$extra}"
    mdj_launcher+=("${words[@]}")
}

# mdenas_job_launch WHAT PROGRAM ARGS...: runs PROGRAM on every rank and waits for
# it; its status in mdenas_rc (75 when a signal came before the start).
mdenas_job_launch() {
    local what=$1 n r
    shift
    mdj_choose_launcher
    if [ -n "$mdj_signal" ]; then
        mdenas_rc=75   # signalled before the start: nothing to keep, start again later
        return
    fi
    echo "+ ${mdj_launcher[*]} $*"
    "${mdj_launcher[@]}" "$@" &
    mdj_pid=$!
    # A trapped signal interrupts `wait` (status > 128) while the program runs on
    # (it is checkpointing): wait again until it has really exited.
    mdenas_rc=""
    while :; do
        n=$mdj_nsig
        wait "$mdj_pid"
        r=$?
        [ "$r" = 127 ] && [ -n "$mdenas_rc" ] && break   # it had exited already
        mdenas_rc=$r
        if [ "$mdenas_rc" -le 128 ] || [ "$mdj_nsig" = "$n" ]; then break; fi
    done
    mdj_pid=""
    echo "mdenas job: $what exited with status $mdenas_rc at $(date '+%F %T')"
}

# mdenas_job_requeue WHAT: the job stopped for a signal with its work kept. It
# requeues itself and its next start goes on, unless the signal was TERM: Slurm is
# ending the job (scancel, preemption) and requeues it itself or not; submitting
# again goes on. Exits.
mdenas_job_requeue() {
    if [ "$mdj_signal" != TERM ]; then
        if scontrol requeue "${SLURM_JOB_ID:-}"; then
            echo "mdenas job: requeued job ${SLURM_JOB_ID:-}; its next start $1"
            exit 0
        fi
        echo "mdenas job: scontrol requeue failed; submit this job again to resume" >&2
    fi
    exit 75
}

mdenas_job_search() {
    local args=("$@" --out "$mdenas_out")
    [ -z "$mdenas_device" ] || args+=(--device "$mdenas_device")
    # The job's own options first: MDENAS_ARGS after them overrides any of them.
    args+=(--threads "$OMP_NUM_THREADS" "${mdenas_args[@]}")
    mdj_stopping="asking the search to checkpoint and stop"
    mdenas_job_launch search "$mdenas_bin" "${args[@]}"
    # 75: stopped by a signal with a checkpoint written.
    [ "$mdenas_rc" = 75 ] && mdenas_job_requeue "resumes from the checkpoint"
    # A search ends with its genotype, a training with its result.
    [ "$mdenas_rc" = 0 ] && cat "$mdenas_out/genotype.txt" 2>/dev/null
    [ "$mdenas_rc" = 0 ] && cat "$mdenas_out/result.json" 2>/dev/null
    exit "$mdenas_rc"
}

mdenas_job_prep() {
    local in=$1 out=$2 words=()
    [ -s "$out/manifest.json" ] && return 0
    mdenas_job_need_program "$mdenas_prep_bin" MDENAS_PREP_BIN
    if [ ! -d "$in/train" ]; then
        echo "mdenas job: no ImageNet JPEG tree at $in (no train/; set MDENAS_IMAGENET)" >&2
        exit 2
    fi
    mdj_words words "${MDENAS_PREP_ARGS:-}"
    mdj_stopping="stopping imagenet_prep (it keeps its finished shards)"
    mdenas_job_launch imagenet_prep "$mdenas_prep_bin" "$in" --out "$out" \
        --threads "$OMP_NUM_THREADS" "${words[@]}"
    if [ "$mdenas_rc" = 0 ] && [ -s "$out/manifest.json" ]; then
        mdj_stopping="asking the search to checkpoint and stop"
        return 0
    fi
    # imagenet_prep dies of the USR1 (its status says so or not, by launcher) and
    # its next run on the same folder keeps the finished shards.
    [ -n "$mdj_signal" ] && mdenas_job_requeue "goes on with the unfinished shards"
    [ "$mdenas_rc" = 0 ] && mdenas_rc=1   # exit 0 without manifest.json: should not happen
    echo "mdenas job: imagenet_prep did not finish $out" >&2
    exit "$mdenas_rc"
}
