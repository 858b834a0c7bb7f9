#!/usr/bin/env bash
# The command line, end to end: simulate into a store, inspect it, train, sample, and the one-command demo.
#
#   bash examples/cli-pipeline.sh [OUT]           # a few minutes on 2 CPU cores; OUT defaults to runs/examples/cli
#   bash examples/cli-pipeline.sh --tiny [OUT]    # tiny sizes (what the tests run)
#
# Your own simulator and prior work the same way: telescope simulate --simulator pkg.module:function
# --prior pkg.module:prior ...; telescope train ... --prior pkg.module:prior.
set -euo pipefail

TINY=0
if [[ "${1:-}" == "--tiny" || "${TELESCOPE_EXAMPLE_SCALE:-}" == "tiny" ]]; then TINY=1; fi
[[ "${1:-}" == "--tiny" ]] && shift
OUT="${1:-runs/examples/cli}"
if [[ $TINY == 1 ]]; then N=500; EPOCHS=2; SAMPLES=100; else N=10000; EPOCHS=200; SAMPLES=1000; fi
mkdir -p "$OUT"

telescope tasks                                                  # the built-in benchmark tasks
telescope simulate two_moons --n "$N" --store "$OUT/store" --seed 0 --quiet   # rerun to resume
telescope store info "$OUT/store"                                # size, levels, failures, simulator, seed
telescope train --method npe --store "$OUT/store" --task two_moons --out "$OUT/npe" \
    --max-epochs "$EPOCHS" --overwrite --quiet
echo "[0.0, 0.1]" > "$OUT/x_o.json"                              # an observation (.npy, .pt, .csv, .txt, .json)
telescope sample "$OUT/npe" --observation "$OUT/x_o.json" --n "$SAMPLES" --out "$OUT/samples.csv" --quiet
head -n 3 "$OUT/samples.csv"

# the whole pipeline in one command: simulate, train, sample, score against the reference, write a report
if [[ $TINY == 1 ]]; then
    telescope demo --n "$N" --observations 1 --samples "$SAMPLES" --coverage 0 --max-time 5 --out "$OUT/demo" --quiet
else
    telescope demo --out "$OUT/demo"
fi
ls "$OUT/demo"
