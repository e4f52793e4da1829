#!/usr/bin/env bash
# Runs every libFuzzer harness of tests/fuzz/ for SECONDS each and prints,
# per fuzzer, the executions, the coverage (edges and features, libFuzzer's
# cov: and ft:) and the corpus size. Fails on any finding: a crash, a
# sanitizer report, a broken invariant (the harness aborts), a timeout or an
# out-of-memory; the input that caused it is kept and its report printed.
#
#   tests/fuzz/run.sh SECONDS [FUZZDIR]
#
# FUZZDIR holds the harnesses (default build/fuzz, built by `make fuzz`).
# Each fuzzer starts from its corpus in FUZZDIR/corpus/NAME (kept between
# runs, so it grows) and reads the seeds: dsl-examples/, tests/diagnostics/,
# tests/oracle/ops/, tests/fuzz/seeds/cnn/ and tests/hostile/models/ (but
# those marked "# fuzz: skip") for fuzz_cnn; for the others FUZZDIR/seeds/,
# written by tests/fuzz/make_seeds.py (`make fuzz` runs it), which holds
# the bad files of the hostile catalogue too. Findings go to
# FUZZDIR/findings/NAME-*. Environment:
#   FUZZ_JOBS=N       fuzzers run at a time (default 2)
#   FUZZ_TIMEOUT=S    one input running longer is a finding (default 10)
#   FUZZ_RSS_MB=M     memory limit, also for single allocations (default 2048)
#   FUZZ_ONLY="a b"   run only these fuzzers (names without fuzz_)
#   FUZZ_ARGS=...     more libFuzzer options
#   FUZZ_CORPUS=DIR   keep the corpora in DIR/NAME, not FUZZDIR/corpus/NAME
#                     (libFuzzer runs every input of a corpus before the
#                     time limit counts, so a large one delays the start)
set -u
seconds=${1:?usage: tests/fuzz/run.sh SECONDS [FUZZDIR]}
fuzzdir=${2:-build/fuzz}
jobs=${FUZZ_JOBS:-2}
timeout_s=${FUZZ_TIMEOUT:-10}
rss=${FUZZ_RSS_MB:-2048}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
fuzzdir=$(mkdir -p "$fuzzdir" && cd "$fuzzdir" && pwd)
seeds=$fuzzdir/seeds
corpora=${FUZZ_CORPUS:-$fuzzdir/corpus}
corpora=$(mkdir -p "$corpora" && cd "$corpora" && pwd)
names=${FUZZ_ONLY:-cnn safetensors st_loader idx}

# The seed directories of each fuzzer (those that exist).
seeds() {
  local d
  case $1 in
    cnn) set -- "$root/dsl-examples" "$root/tests/diagnostics" \
           "$root/tests/oracle/ops" "$here/seeds/cnn" "$fuzzdir/hostile-models" ;;
    safetensors | st_loader)
      set -- "$seeds/safetensors" "$seeds/st_loader" "$seeds/hostile/safetensors" ;;
    idx) set -- "$seeds/idx" "$seeds/hostile/idx" ;;
  esac
  for d; do [ -d "$d" ] && printf '%s\n' "$d"; done
}

# Runs one fuzzer; its summary goes to $fuzzdir/logs/NAME.summary.
run_one() {
  local name=$1 bin=$fuzzdir/fuzz_$1 log=$fuzzdir/logs/$1.log
  local corpus=$corpora/$1 scratch=$fuzzdir/scratch/$1
  local sum=$fuzzdir/logs/$1.summary
  rm -rf "$scratch" && mkdir -p "$corpus" "$scratch" "$fuzzdir/findings"
  if [ ! -x "$bin" ]; then
    echo "fuzz_$name: FAIL: $bin is missing (make fuzz builds it)" > "$sum"
    return
  fi
  # Imports of the .cnn fuzzer resolve in its scratch directory: give it
  # the diagnostics catalogue's imported files, so import seeds work.
  if [ "$name" = cnn ]; then
    cp -r "$root/tests/diagnostics/imports" "$scratch/" 2>/dev/null
    cp "$root/tests/diagnostics/import_cycle.cnn" "$scratch/" 2>/dev/null
  fi
  local dict=() dname=$name
  [ "$name" = st_loader ] && dname=safetensors
  [ -f "$here/$dname.dict" ] && dict=(-dict="$here/$dname.dict")
  mapfile -t seed_dirs < <(seeds "$name")
  local start=$SECONDS
  # shellcheck disable=SC2086
  # The outer timeout only guards against libFuzzer itself hanging: reading
  # a large corpus back in comes before -max_total_time counts.
  (cd "$scratch" && exec timeout -k 10 $((seconds + 1800)) "$bin" \
    -max_total_time="$seconds" -timeout="$timeout_s" -rss_limit_mb="$rss" \
    -malloc_limit_mb="$rss" -use_value_profile=1 -print_final_stats=1 \
    -artifact_prefix="$fuzzdir/findings/$name-" "${dict[@]}" \
    ${FUZZ_ARGS:-} "$corpus" "${seed_dirs[@]}") > "$log" 2>&1
  local status=$? took=$((SECONDS - start))
  local runs last cov ft corp
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/\([0-9a-zA-Z]*\).*/\1 inputs, \2/p' <<<"$last")
  # In fork mode there are no final stats: the last status line counts.
  [ -z "$runs" ] && runs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")
  [ -z "$corp" ] && corp=$(sed -n 's/.* corp: \([0-9]*\) .*/\1 inputs/p' <<<"$last")
  runs=${runs:-?}
  local rate="?"
  [ "$runs" != "?" ] && [ "$took" -gt 0 ] && rate=$((runs / took))
  {
    if [ $status -eq 0 ] && ! grep -qE '^==[0-9]+==|ERROR: libFuzzer|runtime error' "$log"; then
      printf 'fuzz_%s: ok: %s execs in %d s (%s/s), coverage %s edges, %s features, corpus %s\n' \
        "$name" "$runs" "$took" "$rate" "${cov:-?}" "${ft:-?}" "${corp:-?}"
    else
      printf 'fuzz_%s: FAIL (status %d) after %s execs in %d s\n' "$name" "$status" "$runs" "$took"
      grep -E 'ERROR|SUMMARY|runtime error|fuzz_[a-z_]+: |Test unit written' "$log" |
        head -12 | sed 's/^/    | /'
      local unit
      unit=$(sed -n 's/.*Test unit written to //p' "$log" | tail -1)
      echo "    | full log: $log"
      [ -n "$unit" ] && echo "    | reproduce: (cd $scratch && $bin $unit)"
    fi
  } > "$sum"
}

mkdir -p "$fuzzdir/logs"
# The hostile models, but those marked "# fuzz: skip" (valid and heavy by
# design: fine for check-hostile's time limit, not for -timeout under ASan).
rm -rf "$fuzzdir/hostile-models"
mkdir -p "$fuzzdir/hostile-models"
for f in "$root"/tests/hostile/models/*.cnn; do
  grep -q '^# fuzz: skip' "$f" || cp "$f" "$fuzzdir/hostile-models/"
done
running=0
for n in $names; do
  run_one "$n" &
  running=$((running + 1))
  if [ $running -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait

fail=0
for n in $names; do
  cat "$fuzzdir/logs/$n.summary"
  grep -q ': FAIL' "$fuzzdir/logs/$n.summary" && fail=1
done
[ $fail -eq 0 ]
