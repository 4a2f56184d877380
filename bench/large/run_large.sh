#!/bin/sh
# Runs marginloss_large_classes once per configuration (fresh process: peak RSS is per process)
# and prints markdown tables.
#   bench/large/run_large.sh path/to/marginloss_large_classes [REPS]
# Needs about 3.5 GB of free memory for the dense C = 2M row (its B x C buffer is 2 GB).
set -eu
BIN=${1:?usage: run_large.sh path/to/marginloss_large_classes [REPS]}
REPS=${2:-3}

echo "C = 2,000,000, D = 64, B = 256, fp32 ArcFace: forward + backward, median of $REPS after a warm-up"
echo
echo "| class_block (requested) | used | median ms | min ms | peak RSS MiB | X+W+dX+dW MiB | peak / operands |"
echo "|---|---|---|---|---|---|---|"
for block in auto 16384 32768 65536 dense; do
  "$BIN" memory 256 64 2000000 "$block" "$REPS" |
    awk -F, '{ printf "| %s | %s | %s | %s | %s | %s | %s |\n", $4, $5, $6, $7, $8, $9, $10 }'
done
echo
"$BIN" compare 256 512 100000 "$((REPS * 2 + 1))" dense 8192 16384 auto
