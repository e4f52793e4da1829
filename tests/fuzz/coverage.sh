#!/usr/bin/env bash
# Line coverage of the fuzzers' corpora: builds each harness with clang's
# source-based coverage (-fprofile-instr-generate -fcoverage-mapping),
# replays its corpus and seeds once, and prints `llvm-cov report` for the
# files it tests.
#
#   tests/fuzz/coverage.sh [FUZZDIR]
#
# FUZZDIR (default build/fuzz) holds the corpora tests/fuzz/run.sh built
# and the seeds make_seeds.py wrote; the coverage builds and profiles go to
# FUZZDIR/coverage/. The source list comes from the Makefile
# (FUZZ_CNN_SRC), so run it from the top of the tree after `make fuzz`.
set -eu
fuzzdir=${1:-build/fuzz}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
cc=${FUZZ_CC:-clang}
ver=$($cc --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1)
profdata=$(command -v "llvm-profdata-$ver" || command -v llvm-profdata)
cov=$(command -v "llvm-cov-$ver" || command -v llvm-cov)
build=$(make -s --no-print-directory --eval 'print-%: ; @echo $($*)' print-BUILD)
src=$(make -s --no-print-directory --eval 'print-%: ; @echo $($*)' print-FUZZ_CNN_SRC)
mkdir -p "$fuzzdir/coverage"
out=$(cd "$fuzzdir/coverage" && pwd)
fuzzdir=$(cd "$fuzzdir" && pwd)
flags=(-std=c11 -D_XOPEN_SOURCE=700 -g -O1 -fsanitize=fuzzer
  -fprofile-instr-generate -fcoverage-mapping)
rt=(runtime/tensors.c runtime/json.c runtime/safetensors.c runtime/idx.c)

# shellcheck disable=SC2086
$cc "${flags[@]}" -Icompiler -I"$build" -o "$out/fuzz_cnn" tests/fuzz/fuzz_cnn.c $src -lm
$cc "${flags[@]}" -Iruntime -o "$out/fuzz_safetensors" tests/fuzz/fuzz_safetensors.c "${rt[@]}" -lz
$cc "${flags[@]}" -Iruntime -I"$build/gen" -o "$out/fuzz_st_loader" tests/fuzz/fuzz_st_loader.c "${rt[@]}" -lz
$cc "${flags[@]}" -Iruntime -o "$out/fuzz_idx" tests/fuzz/fuzz_idx.c "${rt[@]}" -lz

replay() { # NAME DIR...: runs every input once, from the scratch directory
  local name=$1
  shift
  mkdir -p "$out/scratch"
  cp -r tests/diagnostics/imports "$out/scratch/" 2>/dev/null || true
  (cd "$out/scratch" && LLVM_PROFILE_FILE="$out/$name.profraw" \
    "$out/fuzz_$name" -runs=0 "$@" >/dev/null 2>&1) || true
  "$profdata" merge -sparse -o "$out/$name.profdata" "$out/$name.profraw"
}

dirs() { for d; do [ -d "$d" ] && printf '%s\n' "$(cd "$d" && pwd)"; done; }
mapfile -t d < <(dirs "$fuzzdir/corpus/cnn" dsl-examples tests/diagnostics tests/oracle/ops tests/fuzz/seeds/cnn)
replay cnn "${d[@]}"
seeds=$fuzzdir/seeds
mapfile -t d < <(dirs "$fuzzdir/corpus/safetensors" "$seeds/safetensors" "$seeds/hostile/safetensors")
replay safetensors "${d[@]}"
mapfile -t d < <(dirs "$fuzzdir/corpus/st_loader" "$seeds/st_loader" "$seeds/hostile/safetensors")
replay st_loader "${d[@]}"
mapfile -t d < <(dirs "$fuzzdir/corpus/idx" "$seeds/idx" "$seeds/hostile/idx")
replay idx "${d[@]}"

report() { # NAME FILES...
  local name=$1
  shift
  echo "== fuzz_$name"
  "$cov" report "$out/fuzz_$name" -instr-profile="$out/$name.profdata" "$@" |
    grep -v -e '^-' -e '^$' | sed -e 's/  */ /g' -e "s|$root/||"
}
# shellcheck disable=SC2086
report cnn compiler/lexer.l compiler/parser.y $src
report safetensors runtime/safetensors.c runtime/json.c runtime/tensors.c
report st_loader "$build/gen/safetensors_t.c"
report idx runtime/idx.c
