#!/bin/sh
# Fresh machine -> a MdeNAS search on Fashion-MNIST (Debian's dataset-fashion-mnist):
# installs packages, builds, runs `mdenas_mpi search --preset tiny` (6 to 7 minutes
# on 2 cores) and ends by printing the genotype.
#
#   ./scripts/search_fashion.sh [--out DIR | --new] [search options...]
#
# Run directory: --out DIR uses DIR (resumed when it holds this run). Without it,
# the newest unfinished run under runs/fashion-* started with the same search
# options is resumed (unfinished: config.json but no genotype.txt); otherwise, or
# with --new, a new runs/fashion-<date>-<time> is started. The options each run was
# started with are kept next to it in runs/fashion-<date>-<time>.args.
# Stop it with Ctrl-C or `kill -USR1 PID` (PID is printed): the search writes a
# checkpoint and exits with status 75; run the same command again to resume.
# Other arguments go to the search, e.g. --epochs 4 (`build/mdenas_mpi search --help`).
# MDENAS_QUICK=1: a short search (2000 images, 2 epochs; seconds), for CI and checks.
# MDENAS_NO_APT=1 skips apt-get (scripts/deps.sh).
set -eu
T0=$(date +%s)
say() { echo "search_fashion: [$(($(date +%s) - T0)) s] $*"; }
caller=$(pwd)

# --out DIR / --out=DIR and --new are ours; every other argument goes to the search.
out="" new=0 want_out=0 out_given=0
for a do
    shift
    if [ "$want_out" = 1 ]; then out=$a want_out=0; continue; fi
    case $a in
    --out)   want_out=1 out_given=1; continue ;;
    --out=*) out=${a#--out=} out_given=1; continue ;;
    --new)   new=1; continue ;;
    -h|--help)
        sed -n '2,17s/^# \{0,1\}//p' "$0"
        exit 0 ;;
    esac
    set -- "$@" "$a"
done
if [ "$out_given" = 1 ] && [ -z "$out" ]; then
    echo "search_fashion: --out needs a directory" >&2
    exit 2
fi
if [ "$out_given" = 1 ] && [ "$new" = 1 ]; then
    echo "search_fashion: --out and --new do not go together" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
# A relative --out is relative to where the script was started.
case $out in
"" | /*) ;;
*) [ "$caller" = "$(pwd)" ] || out=$caller/$out ;;
esac
if [ "${MDENAS_QUICK:-0}" = 1 ]; then
    # Options after the preset override it; the user's arguments come after these.
    set -- --subset 2000 --epochs 2 "$@"
fi

./scripts/deps.sh
say "packages installed"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j "$(nproc)" --target mdenas_mpi
say "built build/mdenas_mpi"

# The run directory.
if [ -n "$out" ]; then
    if [ -s "$out/genotype.txt" ]; then
        say "$out holds a finished search (the program says so and changes nothing)"
    elif [ -f "$out/config.json" ]; then
        say "resuming $out (same options needed; see $out/config.json)"
    else
        say "new search in $out"
    fi
else
    mkdir -p runs
    args=$(printf '%s\n' "$@")
    if [ "$new" = 0 ]; then
        # Newest first: the names sort by start time (no blanks in them).
        # shellcheck disable=SC2012
        for d in $(ls -d runs/fashion-*/ 2>/dev/null | sed 's,/$,,' | sort -r); do
            if [ ! -f "$d/config.json" ] || [ -s "$d/genotype.txt" ]; then continue; fi
            # A search running now holds the run directory's lock (flock).
            if [ -f "$d/lock" ] && ! flock -n "$d/lock" true 2>/dev/null; then
                say "note: $d is in use by a search running now; not resuming it"
                continue
            fi
            if [ -f "$d.args" ] && [ "$(cat "$d.args")" = "$args" ]; then
                out=$d
                break
            fi
            if [ -f "$d.args" ]; then
                say "note: $d is unfinished but was started with other options:" \
                    "'$(tr '\n' ' ' <"$d.args" | sed 's/ $//')' (run this script with those to resume it)"
            else
                say "note: $d is unfinished but its options are unknown" \
                    "(resume it with --out $d and the options in $d/config.json)"
            fi
        done
    fi
    if [ -n "$out" ]; then
        say "resuming the unfinished search in $out"
    else
        out=runs/fashion-$(date +%Y%m%d-%H%M%S)
        n=1
        while [ -e "$out" ] || [ -e "$out.args" ]; do
            n=$((n + 1))
            out=runs/fashion-$(date +%Y%m%d-%H%M%S)-$n
        done
        printf '%s\n' "$@" >"$out.args"
        say "new search in $out"
    fi
fi

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
say "to stop with a checkpoint: Ctrl-C or kill -USR1 $$; then run the same command again to resume"
# One rank, started without mpirun (an MPI singleton): Ctrl-C and signals to this
# PID reach the search itself, which checkpoints and exits with status 75.
# Threads: OpenMP's default (every core this process may use), OMP_NUM_THREADS,
# or --threads N; a resumed run keeps the count it was computed with.
exec ./build/mdenas_mpi search --preset tiny --out "$out" "$@"
