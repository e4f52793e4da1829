#!/usr/bin/env bash
# Runs the hostile-file and absurd-model catalogue against a cnnc binary and
# prints "hostile: N passed, M failed".
#
#   tests/hostile/run.sh CNNC
#
# Files (written at test time into a scratch directory by make_files.py,
# with the list of cases and what each must say): each safetensors file goes
# through `cnnc run dsl-examples/lenet5.cnn` as the weights (with a valid
# input) or as the input (with valid weights); each IDX file through
# idx_read (the runtime's reader; $IDX_READ, else built here with cc) and
# through `cnnc train dsl-examples/lenet5.cnn` as part of an otherwise valid
# data set (the first images of Fashion-MNIST); checkpoints through
# `cnnc train --resume`. The run must exit with status 1, name the file,
# say what the case wants, and write no output.
#
# Models (models/*.cnn, and the large ones make_files.py writes) go
# through `cnnc check` (or `cnnc FILE -o OUT.c` with "# command: compile")
# and state what must happen in header comments:
#   # expect: LINE:COL: error: MESSAGE   that error, at that place; status 1
#   # expect-located-error              some "FILE:LINE:COL: error:"; status 1
#   # expect-message: TEXT              TEXT somewhere (no place to point at);
#                                       status 1
#   # expect-ok                         status 0
#   # expect-no-crash                   status 0, or 1 with a located error
#   # time-limit: SECONDS               (default 10; 30 under sanitizers)
#   # args: OPTIONS                     more options for cnnc
#   # command: compile                  run `cnnc FILE -o OUT.c`, not check
#   # command: cc                       the same, and when cnnc succeeds,
#                                       OUT.c must compile with
#                                       cc -std=c99 -Wall -Wextra -Werror
# Every run fails on a crash, a hang, an internal error, a sanitizer report,
# memory past 4 GB, or control characters from a file in its messages.
# Models run with stdin an open pipe, so one that reads stdin hangs.
#
# HOSTILE_ONLY=PATTERN runs only the cases whose file matches the shell
# pattern (e.g. '*string*').
#
# Cases listed in open.txt (the name this script prints, a tab, the reason)
# are known failures not fixed yet: they are skipped and listed, so the
# suite stays fast and green; HOSTILE_OPEN=1 runs them too (an open case
# that passes is reported, to be taken off the list).
#
# When CNNC is a sanitizer build (its name contains "san"), the model code
# `cnnc run` compiles (the generated loader and the runtime) is built with
# ASan and UBSan too, through --cc.
set -u
cnnc=${1:?usage: tests/hostile/run.sh CNNC}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
case $cnnc in */*) cnnc=$(cd "$(dirname "$cnnc")" && pwd)/$(basename "$cnnc") ;; esac
san=0
case $(basename "$cnnc") in *san*) san=1 ;; esac
limit_default=10
[ $san = 1 ] && limit_default=30
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cnnc-hostile.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export XDG_CACHE_HOME=$tmp/cache # compiled models: fresh, and not the user's
export ASAN_OPTIONS=${ASAN_OPTIONS:-hard_rss_limit_mb=4096:max_allocation_size_mb=4096:detect_leaks=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
model=$root/dsl-examples/lenet5.cnn
# Models read stdin from a pipe that stays open and silent (this shell holds
# its writing end), so a model that reads stdin hangs and is caught.
mkfifo "$tmp/stdin" && exec 7<>"$tmp/stdin"
pass=0 fail=0 open=0

# The reason a case is open, or nothing.
open_reason() { # NAME
  awk -F'\t' -v n="$1" '$1 == n { print $2; exit }' "$here/open.txt"
}

# 0 if the case NAME is open and is to be skipped; notes it.
skip_open() { # NAME
  local why
  why=$(open_reason "$1")
  [ -n "$why" ] || return 1
  open=$((open + 1))
  if [ "${HOSTILE_OPEN:-0}" = 1 ]; then
    return 1
  fi
  echo "open: $1: $why"
  return 0
}

failed() { # CASE WHY OUTPUT
  if [ -n "$(open_reason "$1")" ]; then
    echo "open (fails as known): $1: $2"
    return
  fi
  fail=$((fail + 1))
  echo "FAIL: $1: $2"
  if [ -n "${3:-}" ]; then head -12 <<<"$3" | cut -c1-160 | sed 's/^/    | /'; fi
}

crashed() { # STATUS OUTPUT: 0 if the run crashed or tripped a sanitizer
  [ "$1" -ge 124 ] ||
    grep -qE 'internal error|AddressSanitizer|runtime error:|LeakSanitizer|Segmentation|out of memory' <<<"$2"
}

# Runs a command with a time limit and, without sanitizers, 4 GB of memory
# (ASan reserves more address space than that; ASAN_OPTIONS limits it).
limited() { # SECONDS COMMAND...
  local s=$1
  shift
  if [ $san = 1 ]; then
    timeout -k 5 "$s" "$@"
  else
    (ulimit -v 4194304 && exec timeout -k 5 "$s" "$@")
  fi
}

if ! /usr/bin/python3 "$here/make_files.py" "$tmp" >/dev/null; then
  echo "hostile: cannot write the test-time files (make_files.py)"
  exit 1
fi

# The model's code is compiled once by the system C compiler and cached
# (the JIT would compile it again for every case).
cc_args=(--cc cc)
if [ $san = 1 ]; then
  cc_args=(--cc "cc -g -fsanitize=address,undefined -fno-sanitize-recover=all")
fi

idx_read=${IDX_READ:-}
if [ -z "$idx_read" ]; then
  idx_read=$tmp/idx_read
  flags=""
  [ $san = 1 ] && flags="-g -fsanitize=address,undefined -fno-sanitize-recover=all"
  # shellcheck disable=SC2086
  cc -std=c11 -D_XOPEN_SOURCE=700 -O1 $flags -I"$root/runtime" -o "$idx_read" \
    "$here/idx_read.c" "$root"/runtime/{json,safetensors,tensors,idx}.c -lz || { echo "hostile: cannot build idx_read"; exit 1; }
fi

# The good half of every run must work, or every case would pass for the
# wrong reason.
out=$(limited 300 "$cnnc" run "$model" "${cc_args[@]}" --weights "$tmp/weights.safetensors" \
  --input "$tmp/input.safetensors" --output "$tmp/out.safetensors" 2>&1)
if [ $? -ne 0 ] || [ ! -f "$tmp/out.safetensors" ]; then
  echo "hostile: cnnc run fails on valid LeNet-5 weights and input:"
  sed 's/^/    | /' <<<"$out"
  exit 1
fi

# --- files ---------------------------------------------------------------
# check_file NAME PATH-IN-MESSAGE WANTS COMMAND...: one run that must fail.
check_file() {
  local name=$1 shown=$2 wants=$3
  shift 3
  skip_open "$name" && return
  rm -f "$tmp/out.safetensors"
  local out status ok=1 w
  out=$(limited "$limit_default" "$@" 2>&1 >/dev/null)
  status=$?
  if crashed $status "$out"; then
    failed "$name" "crash, hang or sanitizer report (status $status)" "$out"
  elif [ $status -ne 1 ]; then
    failed "$name" "exit status $status, wanted 1" "$out"
  elif ! grep -qF -- "$shown" <<<"$out"; then
    failed "$name" "the message does not name the file" "$out"
  elif [ -f "$tmp/out.safetensors" ]; then
    failed "$name" "an output was written" "$out"
  elif LC_ALL=C grep -q $'[\x01-\x08\x0b-\x1f\x7f]' <<<"$out"; then
    failed "$name" "the message prints control characters from the file" "$(cat -v <<<"$out")"
  else
    IFS=$'\t' read -r -a want_list <<<"$wants"
    for w in "${want_list[@]}"; do
      if ! grep -qF -- "$w" <<<"$out"; then
        failed "$name" "the message does not say '$w'" "$out"
        ok=0
        break
      fi
    done
    if [ $ok = 1 ]; then
      pass=$((pass + 1))
      [ -n "$(open_reason "$name")" ] && echo "open case now passes: $name (take it off open.txt)"
    fi
  fi
}

# train_with ROLE FILE: a data set directory, valid but for FILE as the
# training images or labels; prints the path cnnc train reads it from.
train_with() {
  local role=$1 file=$2 dir
  dir=$tmp/train/$(basename "$file")
  rm -rf "$dir" && mkdir -p "$dir" && cp "$tmp"/data/* "$dir"/
  local dest=$dir/train-$role-idx$([ "$role" = images ] && echo 3 || echo 1)-ubyte
  rm -f "$dest"
  case $file in *.gz) dest=$dest.gz ;; esac
  cp "$file" "$dest"
  echo "$dest"
}

train_cmd=("$cnnc" train "$model" "${cc_args[@]}" --epochs 1 --quiet
  --save "$tmp/checkpoint.safetensors" --log "$tmp/log.csv")
out=$(limited 600 "${train_cmd[@]}" --data "$tmp/data" 2>&1 >/dev/null)
if [ $? -ne 0 ]; then
  echo "hostile: cnnc train fails on a valid data set:"
  sed 's/^/    | /' <<<"$out"
  exit 1
fi

cases() {
  sed "s|^\([^#][^\t]*\)\t|\1\t$tmp/|" "$tmp/cases.txt"
}

while IFS=$'\t' read -r kind path wants; do
  case $kind in '' | '#'*) continue ;; esac
  file=${path#"$tmp/"}
  # shellcheck disable=SC2254
  case $file in ${HOSTILE_ONLY:-*}) ;; *) continue ;; esac
  case $kind in
    weights)
      check_file "$kind $file" "$path" "$wants" "$cnnc" run "$model" "${cc_args[@]}" \
        --weights "$path" --input "$tmp/input.safetensors" --output "$tmp/out.safetensors" ;;
    input)
      check_file "$kind $file" "$path" "$wants" "$cnnc" run "$model" "${cc_args[@]}" \
        --weights "$tmp/weights.safetensors" --input "$path" --output "$tmp/out.safetensors" ;;
    idx)
      check_file "idx_read $file" "$path" "$wants" "$idx_read" "$path"
      dest=$(train_with images "$path")
      check_file "train $file" "$dest" "$wants" "${train_cmd[@]}" --data "$(dirname "$dest")" ;;
    train-images | train-labels)
      dest=$(train_with "${kind#train-}" "$path")
      check_file "$kind $file" "$(dirname "$dest")/train-" "$wants" "${train_cmd[@]}" \
        --data "$(dirname "$dest")" ;;
    train-data)
      dir=$tmp/train/$(basename "$path")
      rm -rf "$dir" && mkdir -p "$dir" && cp "$tmp"/data/* "$dir"/ && cp "$path"/* "$dir"/
      check_file "$kind $file" "$dir/train-" "$wants" "${train_cmd[@]}" --data "$dir" ;;
    resume)
      check_file "$kind $file" "$path" "$wants" "${train_cmd[@]}" --data "$tmp/data" \
        --resume "$path" ;;
    *) failed "$file" "unknown kind '$kind' in cases.txt" ;;
  esac
done < <(cases)

# --- models ----------------------------------------------------------------
for f in "$here"/models/*.cnn "$tmp"/generated/*.cnn; do
  [ -f "$f" ] || continue
  # shellcheck disable=SC2254
  case $f in ${HOSTILE_ONLY:-*}) ;; *) continue ;; esac
  shown=${f#"$tmp/"}
  shown=${shown#"$root/"}
  skip_open "$shown" && continue
  limit=$(sed -n 's/^# time-limit: //p' "$f")
  limit=${limit:-$limit_default}
  rm -f "$tmp/model.c"
  read -r -a args <<<"$(sed -n 's/^# args: //p' "$f")"
  if grep -qE '^# command: (compile|cc)' "$f"; then
    cmd=("$cnnc" "$f" -o "$tmp/model.c" "${args[@]}")
  else
    cmd=("$cnnc" check "$f" "${args[@]}")
  fi
  start=$(date +%s%N)
  out=$(limited "$limit" "${cmd[@]}" 2>&1 >/dev/null <"$tmp/stdin")
  status=$?
  took=$((($(date +%s%N) - start) / 1000000000))
  want_status=1
  grep -q '^# expect-ok' "$f" && want_status=0
  if grep -q '^# expect-no-crash' "$f" && [ $status -eq 0 ]; then want_status=0; fi
  message=$(sed -n 's/^# expect-message: //p' "$f")
  if [ $status -eq 124 ] || [ $status -eq 137 ]; then
    failed "$shown" "no answer within $limit s (killed)" "$out"
  elif crashed $status "$out"; then
    failed "$shown" "crash or sanitizer report (status $status, $took s)" "$out"
  elif [ $status -ne $want_status ]; then
    failed "$shown" "exit status $status, wanted $want_status" "$out"
  elif grep -qE '^# expect-(located-error|no-crash)' "$f" && [ $status -ne 0 ] &&
    ! grep -qE "^[^ :]+:[0-9]+:[0-9]+: error: " <<<"$out"; then
    failed "$shown" "no located error (FILE:LINE:COL: error: ...)" "$out"
  elif [ -n "$message" ] && ! grep -qF -- "$message" <<<"$out"; then
    failed "$shown" "the message does not say '$message'" "$out"
  elif grep -q '^# command: cc' "$f" && [ $status -eq 0 ] &&
    ! ccout=$(cc -std=c99 -Wall -Wextra -Werror -c -o "$tmp/model.o" "$tmp/model.c" 2>&1); then
    failed "$shown" "the generated C does not compile cleanly" "$ccout"
  else
    ok=1
    while IFS= read -r line; do
      want="$f:${line#\# expect: }"
      if ! grep -qF -- "$want" <<<"$out"; then
        failed "$shown" "missing: ${line#\# expect: }" "$out"
        ok=0
        break
      fi
    done < <(grep -E '^# expect: ' "$f")
    if [ $ok = 1 ]; then
      pass=$((pass + 1))
      [ -n "$(open_reason "$shown")" ] && echo "open case now passes: $shown (take it off open.txt)"
    fi
  fi
done

echo "hostile: $pass passed, $fail failed, $open open (tests/hostile/open.txt)"
[ $fail -eq 0 ]
