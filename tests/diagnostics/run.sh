#!/usr/bin/env bash
# Runs the diagnostics catalogue: every tests/diagnostics/*.cnn states what
# cnnc must say about it in header comments:
#   # expect: LINE:COL: error: MESSAGE       (an error; exit status 1)
#   # expect: LINE:COL: warning: MESSAGE     (a warning; exit status 0
#                                              unless an error is expected too)
#   # expect-note: LINE:COL: MESSAGE         (a note that must follow)
#   # args: OPTIONS                          (extra command-line options)
# MESSAGE must match the start of the printed message. Any crash, sanitizer
# report or internal error fails the case.
set -u
cnnc=${1:-build/cnnc}
dir=$(cd "$(dirname "$0")" && pwd)
pass=0 fail=0
for f in "$dir"/*.cnn; do
  rel=${f#"$PWD"/}
  args=$(sed -n 's/^# args: //p' "$f")
  out=$(timeout 20 "$cnnc" check $args "$rel" 2>&1 >/dev/null)
  status=$?
  ok=1 why=""
  want_status=0
  while IFS= read -r line; do
    kind=${line%%:*}
    rest=${line#*: }
    case "$kind" in
      "# expect") want="$rel:$rest"
        case "$rest" in *": error: "*) want_status=1 ;; esac ;;
      "# expect-note") want="$rel:${rest%%: *}: note: ${rest#*: }" ;;
      *) continue ;;
    esac
    if ! grep -qF -- "$want" <<<"$out"; then
      ok=0 why="missing: $want"
      break
    fi
    first=$(grep -F -- "$want" <<<"$out" | head -1)
    case "$first" in "$want"*) ;; *) ok=0 why="not at line start: $want" ;; esac
  done < <(grep -E '^# expect(-note)?: ' "$f")
  if ! grep -qE '^# expect: ' "$f"; then ok=0 why="no '# expect:' line"; fi
  if [ $status -ne $want_status ]; then ok=0 why="exit status $status, wanted $want_status"; fi
  if grep -qE 'internal error|AddressSanitizer|runtime error|LeakSanitizer' <<<"$out"; then
    ok=0 why="crash or sanitizer report"
  fi
  if [ $ok = 1 ]; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL: $rel: $why"
    sed 's/^/    | /' <<<"$out" | head -20
  fi
done
echo "diagnostics: $pass passed, $fail failed"
[ $fail -eq 0 ]
