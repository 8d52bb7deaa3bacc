#!/usr/bin/env bash
# The shipped demo checkpoint's training as one command: the data it read, its 95 epochs in the
# stages docs/results.md lists (the learning rate and the data root change between stages;
# nothing else does), then the export of the epoch with the best validation PSNR.
# Run again after an interruption, it skips the stages the run has finished and resumes the
# stage it was in, exactly (train --resume).
#
#   bash benchmarks/train_demo.sh     # env: PYTHON, RUN (runs/demo-95), OUT (runs/demo-95-export),
#                                     #      THREADS (2), DRY_RUN=1 prints the commands of a run from scratch
# RUN, OUT and the data folders are relative to the checkout. Each epoch prints a line as it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
RUN=${RUN:-runs/demo-95}
OUT=${OUT:-runs/demo-95-export}
THREADS=${THREADS:-2}
SEED0=data/embedded-seed0
SEED2=data/embedded-seed2-8k

run() {
    echo "+ $*"
    if [[ ${DRY_RUN:-0} != 1 ]]; then "$@"; fi
}

# Epochs the run has finished (0: no run yet, or a dry run); a stage whose target is reached is skipped.
finished=0
if [[ ${DRY_RUN:-0} != 1 && -f $RUN/last.pt ]]; then
    finished=$("$PY" -c "import sys; from lab5.rundir import load_checkpoint; print(load_checkpoint(sys.argv[1])['epoch'])" \
        "$RUN/last.pt")
fi

# stage EPOCHS LR DATA: train until EPOCHS at learning rate LR on DATA.
stage() {
    local epochs=$1 lr=$2 data=$3
    if (( finished >= epochs )); then echo "= $RUN has finished epoch $epochs"; return; fi
    if (( finished > 0 )) || [[ ${DRY_RUN:-0} != 1 && -f $RUN/last.pt ]]; then
        run "$PY" -m lab5 train --resume "$RUN" --data "$data" \
            --set epochs="$epochs" lr="$lr" threads="$THREADS"
    else
        # The demo preset's lr (0.002); its KL schedule is planned for these first epochs and kept on resume.
        # --force: a run stopped before its first checkpoint (iteration 50) left nothing to resume.
        run "$PY" -m lab5 train --preset demo --data "$data" --run-dir "$RUN" --force \
            --set epochs="$epochs" iters_per_epoch=250 checkpoint_every=50 threads="$THREADS"
    fi
    finished=$epochs
}

# The embedded training set (seed 0, 1,024 sequences: the workbook's); an existing complete set is reused.
run "$PY" -m lab5 data make-synthetic --out "$SEED0" --seed 0 --workers "$THREADS"

stage 20 0.002 "$SEED0"
stage 26 0.002 "$SEED0"
stage 28 0.0002 "$SEED0"
stage 40 0.002 "$SEED0"
stage 43 0.0002 "$SEED0"
# 8,192 fresh sequences of seed 2 (about 2 min, 2.9 GiB of cache) for the rest.
run "$PY" -m lab5 data make-synthetic --out "$SEED2" --train 8192 --validate 128 --test 0 --seed 2 \
    --workers "$THREADS"
# The uint8 cache of its splits, unless a fresh one is there (rebuilding it takes about a minute).
if [[ ${DRY_RUN:-0} == 1 ]] || ! "$PY" -c "import sys; from lab5.data.dataset import load_cache
sys.exit(any(load_cache(sys.argv[1], s) is None for s in ('train', 'validate')))" "$SEED2"; then
    run "$PY" -m lab5 data cache "$SEED2"
fi
stage 55 0.0006 "$SEED2"
stage 58 0.0001 "$SEED2"
stage 68 0.0006 "$SEED2"
stage 71 0.0001 "$SEED2"
stage 88 0.0006 "$SEED2"
stage 95 0.0001 "$SEED2"
run "$PY" -m lab5 export --run-dir "$RUN" --out "$OUT" --checkpoint best
