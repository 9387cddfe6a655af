#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz with clang, ASan and UBSan (in
# build-fuzz), runs each once over its committed corpus (the regression inputs),
# then fuzzes each for a bounded time, one after the other, on a scratch copy of
# its corpus (the committed corpus is never grown). Exits non-zero on any crash,
# sanitizer report, leak, timeout or out-of-memory; the input that caused it is
# kept in build-fuzz/artifacts/ and the log names it.
#
#   scripts/fuzz.sh                   all five harnesses, 60 s each
#   MDENAS_FUZZ_SECONDS=300 scripts/fuzz.sh json safetensors
#
# Environment: MDENAS_FUZZ_SECONDS (per harness, default 60), MDENAS_FUZZ_BUILD
# (build folder, default build-fuzz). Installs clang, libFuzzer's runtime, zlib
# and Jansson with apt-get when missing (as root; otherwise says what to install).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${MDENAS_FUZZ_SECONDS:-60}
build=${MDENAS_FUZZ_BUILD:-build-fuzz}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(json safetensors idx cifar jpeg)
case $seconds in '' | *[!0-9]*) echo "fuzz.sh: MDENAS_FUZZ_SECONDS='$seconds' is not a number" >&2; exit 2 ;; esac

# ---- tools ----
missing=()
command -v clang > /dev/null || missing+=(clang)
command -v cmake > /dev/null || missing+=(cmake)
[ -e /usr/include/zlib.h ] || missing+=(zlib1g-dev)
[ -e /usr/include/jansson.h ] || missing+=(libjansson-dev)
[ -e /usr/include/jpeglib.h ] || missing+=(libjpeg62-turbo-dev)
if command -v clang > /dev/null; then
  rt=$(clang -print-resource-dir)/lib/linux/libclang_rt.fuzzer-x86_64.a
  [ -e "$rt" ] || missing+=("libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev")
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "fuzz.sh: missing ${missing[*]}: apt-get install ${missing[*]} (as root)" >&2
    exit 2
  fi
  echo "fuzz.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" > /dev/null
  # clang was missing: its runtime package is named after its version
  rt=$(clang -print-resource-dir)/lib/linux/libclang_rt.fuzzer-x86_64.a
  [ -e "$rt" ] || apt-get install -y -qq "libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev" > /dev/null
fi

# ---- build ----
mkdir -p "$build"
cmake -S tests/fuzz -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$build/configure.log" 2>&1 ||
  { cat "$build/configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" -- --no-print-directory > /dev/null
mkdir -p "$build/artifacts"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# Largest input per harness: CIFAR needs five 3-record files (46 KB).
max_len() {
  case $1 in cifar) echo 65536 ;; idx) echo 16384 ;; *) echo 8192 ;; esac
}

failed=()
for t in "${targets[@]}"; do
  exe=$build/fuzz_$t
  corpus=tests/fuzz/corpus/$t
  [ -x "$exe" ] && [ -d "$corpus" ] || { echo "fuzz.sh: no harness '$t' (json safetensors idx cifar)" >&2; exit 2; }
  dict=()
  [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
  log=$build/fuzz_$t.log
  echo "== fuzz_$t: the committed corpus ($(ls "$corpus" | wc -l) inputs)"
  work=$(mktemp -d "${TMPDIR:-/tmp}/mdenas-fuzz-$t.XXXXXX")
  if ! TMPDIR=$work "$exe" -runs=0 -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -artifact_prefix="$build/artifacts/$t-" "$corpus" > "$log" 2>&1; then
    tail -n 60 "$log"
    failed+=("$t (corpus)")
    rm -rf "$work"
    continue
  fi
  mkdir "$work/corpus" "$work/tmp"
  cp "$corpus"/* "$work/corpus"/
  echo "== fuzz_$t: fuzzing for ${seconds} s"
  rc=0
  # TMPDIR: the dataset harnesses' scratch files go there, removed with it (a
  # fuzzer that stops on a crash or a time limit does not clean up after itself).
  TMPDIR=$work/tmp "$exe" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb=512 -max_len="$(max_len "$t")" -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/$t-" "${dict[@]}" "$work/corpus" > "$log" 2>&1 || rc=$?
  rm -rf "$work"
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$log" | sed 's/^/   /' || true
  if [ $rc -ne 0 ]; then
    tail -n 60 "$log"
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]} (inputs in $build/artifacts/, logs in $build/fuzz_*.log;" \
       "reproduce with $build/fuzz_NAME FILE)" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} harnesses, ${seconds} s each: no crash, no sanitizer report"
