#!/usr/bin/env bash
# Oracle: `cnnc check` must report each example's published parameter total.
#
# Usage: bash tests/oracle/param_counts.sh [CNNC]
#   CNNC is the compiler to test: the argument, else $CNNC, else build/cnnc.
#
# The totals are not cnnc's: the torchvision ones are sum(p.numel()) of
# torchvision 0.14's models (googlenet with aux_logits=False), the others were
# counted on the same networks built in PyTorch (alexnet.cnn and zfnet.cnn as
# nn.Sequential, unet.cnn as an nn.Module of the paper's Figure 1, pets as
# torchvision's resnet18(num_classes=37)). Also checks that U-Net's output is
# 2 x 388 x 388. Prints "N passed, M failed" (one count per check) and exits 1
# on any failure.

set -u
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cnnc=${1:-${CNNC:-$root/build/cnnc}}
examples=$root/dsl-examples

# example  total (as cnnc prints it: comma-grouped)
expected=(
  lenet5       61,706
  alexnet      60,965,224
  alexnet_tv   61,100,840
  zfnet        62,357,608
  vgg16        138,357,544
  vgg19        143,667,240
  googlenet    6,624,904
  resnet18     11,689,512
  resnet34     21,797,672
  resnet50     25,557,032
  resnet152    60,192,808
  densenet121  7,978,856
  unet         31,030,658
  transfer     11,195,493
)

passed=0
failed=0
fail() {
  echo "FAIL $1"
  shift
  for line in "$@"; do echo "  $line"; done
  failed=$((failed + 1))
}

out=$(mktemp)
err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT

# check NAME: runs cnnc check on NAME's example into $out/$err; 0 if it ran.
check() {
  "$cnnc" check "$examples/$1.cnn" >"$out" 2>"$err"
  local status=$?
  if [ "$status" -ne 0 ]; then
    fail "$1: \`cnnc check\` exited with status $status" "$(head -n 20 "$err")"
    return 1
  fi
}

for ((i = 0; i < ${#expected[@]}; i += 2)); do
  name=${expected[i]}
  total=${expected[i + 1]}
  check "$name" || continue
  # The line starts "parameters: <total> total"; what follows may vary.
  if grep -Eq "^parameters: ${total} total\b" "$out"; then
    echo "ok   $name: $total parameters"
    passed=$((passed + 1))
  else
    fail "$name: expected \"parameters: $total total\", cnnc printed:" \
      "$(grep -E '^parameters' "$out" || echo '(no "parameters:" line)')"
  fi
done

# U-Net: 572 x 572 in, valid convolutions, 2 x 388 x 388 out, as the summary
# line "output logits: [2, 388, 388] from 'head'" says.
if check unet; then
  if grep -E '^output logits\b' "$out" | grep -Fq '[2, 388, 388]'; then
    echo "ok   unet: output [2, 388, 388]"
    passed=$((passed + 1))
  else
    fail "unet: the output logits should be [2, 388, 388]; cnnc printed:" \
      "$(grep -E '^output' "$out" || echo '(no "output" line)')"
  fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
