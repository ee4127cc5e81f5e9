#!/usr/bin/env bash
# Train the shipped IFF-Net modules by label-free distillation + TRL, on the FIRST half of the two
# development clips only (vtest.avi frames 0-396, bikes.mp4 frames 0-124; the second halves are the
# robustness benchmark's and are never decoded here).  The three runs of the paper's Table 2 go in
# parallel, one torch thread each (how the shipped ones were made, on a 2-core machine):
#
#   C  advanced IFF module + TRL  -> weights/iff-nanodet-g.pt            (--method iff)
#   B  basic IFF module + TRL     -> weights/iff-basic-nanodet-g.pt      (--method iff --iff-module basic)
#   A  basic IFF module, no TRL   -> weights/iff-basic-notrl-nanodet-g.pt (benchmark row iff:module=basic:trl=0)
#
# Environment: FOOTAGE (default ../shared/footage), OUT (default weights), STEPS (default 1500),
# TIME_LIMIT (seconds, default 3000), SEED (default 0).
set -euo pipefail
cd "$(dirname "$0")/.."
FOOTAGE="${FOOTAGE:-../shared/footage}" OUT="${OUT:-weights}" STEPS="${STEPS:-1500}"
TIME_LIMIT="${TIME_LIMIT:-3000}" SEED="${SEED:-0}"
run() {  # module trl
  vidtag train iff "$FOOTAGE/vtest.avi" "$FOOTAGE/bikes.mp4" --frames 0:397 --frames 0:125 --module "$1" --trl "$2" \
    --steps "$STEPS" --time-limit "$TIME_LIMIT" --threads 1 --seed "$SEED" -o "$OUT"
}
run advanced 0.65 & run basic 0.65 & run basic 0 &
wait
