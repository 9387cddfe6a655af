#!/bin/sh
# The searched-vs-random evidence on Fashion-MNIST (docs/results.md): MdeNAS searches
# with 3 seeds (the README main job's preset, `search --preset tiny`), then each
# derived genotype and 10 genotypes drawn uniformly from the DARTS space
# (scripts/random_genotypes.py) trained under one short recipe
# (`train --preset fashion-final --seed 1`) and evaluated on the 10000 test images;
# then scripts/results_report.py writes the report. About an hour on 2 cores.
# Every run is resumable: rerunning the script skips what has finished.
#   scripts/results.sh [OUT_DIR [MDENAS_MPI]]       (default runs/results, build/mdenas_mpi)
# Extra options for every search / training: MDENAS_SEARCH_OPTS, MDENAS_TRAIN_OPTS.
set -eu
out=${1:-runs/results}
bin=${2:-build/mdenas_mpi}
here=$(cd "$(dirname "$0")" && pwd)
[ -x "$bin" ] || { echo "results.sh: $bin is not built (cmake --build build)" >&2; exit 2; }
mkdir -p "$out"
say() { echo "results.sh: $*"; }
for seed in 1 2 3; do
    d="$out/search-$seed"
    say "search seed $seed -> $d"
    # shellcheck disable=SC2086
    "$bin" search --preset tiny --seed "$seed" --out "$d" ${MDENAS_SEARCH_OPTS:-} > "$out/search-$seed.out" 2>&1
done
python3 "$here/random_genotypes.py" 10 2026 > "$out/random.txt"
train() { # name genotype
    d="$out/train-$1"
    say "train $1 -> $d"
    # shellcheck disable=SC2086
    "$bin" train --preset fashion-final --seed 1 --genotype "$2" --out "$d" ${MDENAS_TRAIN_OPTS:-} > "$out/train-$1.out" 2>&1
}
for seed in 1 2 3; do train "searched-$seed" "$out/search-$seed"; done
i=0
while IFS= read -r g; do
    i=$((i + 1))
    train "random-$i" "$g"
done < "$out/random.txt"
python3 "$here/results_report.py" "$out"
