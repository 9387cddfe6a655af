#!/bin/sh
# The searched-vs-random evidence on Fashion-MNIST (docs/results.md). MdeNAS searches
# with 3 seeds in two settings: the README main job's preset as it was before these
# results (`search --preset tiny --period-steps 0 --val-batches 0`: one sampling period
# per epoch, 10 periods, whole validation split) and as it is now (`--preset tiny`: 30
# periods of 26 steps, 16 validation batches each); each derived genotype and 10 genotypes drawn
# uniformly from the DARTS space (scripts/random_genotypes.py) trained under one short
# recipe (`train --preset fashion-final --seed 1`) and evaluated on the 10000 test
# images; `rankcheck` on 5 random architectures; then scripts/results_report.py writes
# the report. About 1.5 hours on 2 cores. Every run resumes: rerunning the script
# skips what has finished.
#   scripts/results.sh [OUT_DIR [MDENAS_MPI]]       (default runs/results, build/mdenas_mpi)
set -eu
out=${1:-runs/results}
bin=${2:-build/mdenas_mpi}
here=$(cd "$(dirname "$0")" && pwd)
[ -x "$bin" ] || { echo "results.sh: $bin is not built (cmake --build build)" >&2; exit 2; }
mkdir -p "$out"
say() { echo "results.sh: $*"; }
search() { # dir seed options...
    d=$1 seed=$2
    shift 2
    say "search seed $seed $* -> $d"
    "$bin" search --preset tiny --seed "$seed" --out "$d" "$@" > "$d.out" 2>&1
}
train() { # name genotype
    d="$out/train-$1"
    say "train $1 -> $d"
    "$bin" train --preset fashion-final --seed 1 --genotype "$2" --out "$d" > "$d.out" 2>&1
}
for seed in 1 2 3; do search "$out/search-$seed" "$seed" --period-steps 0 --val-batches 0; done
python3 "$here/random_genotypes.py" 10 2026 > "$out/random.txt"
for seed in 1 2 3; do train "searched-$seed" "$out/search-$seed"; done
i=0
while IFS= read -r g; do
    i=$((i + 1))
    train "random-$i" "$g"
done < "$out/random.txt"
for seed in 1 2 3; do
    search "$out/search-p30-$seed" "$seed" --period-steps 26 --val-batches 16
    train "searched-p30-$seed" "$out/search-p30-$seed"
done
say "rankcheck -> $out/rankcheck"
"$bin" rankcheck --preset fashion-final --seed 7 --archs 5 --epochs 4 --out "$out/rankcheck" \
    > "$out/rankcheck.out" 2>&1
python3 "$here/results_report.py" "$out"
