#!/usr/bin/env bash
# GPU check: where a CUDA GPU exists,
#   1. the training-throughput benchmark on CUDA: fp32 reference and exact vs bf16 fast
#      (lab preset, batch 16, then batch 64 for the lab's real batch size);
#   2. a few hundred iterations of the lab preset (fast path, bf16, channels_last) through
#      the real CLI and data pipeline, extrapolated to the whole lab run (100 x 600 iterations).
# Without a GPU it says so and exits 0.
#
#   bash benchmarks/gpu_check.sh            # env: PYTHON, ITERS (300), DATA (a lab-layout root), OUT
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA GPU visible to torch on this machine; nothing to measure."
    exit 0
fi

ITERS=${ITERS:-300}
SHORT=50  # a short run timed too, so start-up and the end-of-run validation cancel out
OUT=${OUT:-$(mktemp -d -t lab5-gpu-check-XXXX)}
echo "gpu_check: results in $OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true

echo "== 1. throughput on CUDA (lab preset) =="
"$PY" benchmarks/train_throughput.py --device cuda --preset lab --batch-size 16 --warmup 3 --iters 20 \
    --paths reference,exact,fast --json "$OUT/throughput_b16.json"
"$PY" benchmarks/train_throughput.py --device cuda --preset lab --batch-size 64 --warmup 3 --iters 10 \
    --paths reference,fast --json "$OUT/throughput_b64.json"

echo "== 2. lab preset through the CLI: $ITERS iterations =="
DATA=${DATA:-$OUT/data}
if [ ! -d "$DATA/train" ]; then
    "$PY" -m lab5 data make-synthetic --out "$DATA" --train 1024 --validate 64 --test 0
    "$PY" -m lab5 data cache "$DATA"
fi
run() {  # run NAME ITERATIONS -> prints the wall seconds
    local t0 t1
    t0=$(date +%s.%N)
    "$PY" -m lab5 train --preset lab --data "$DATA" --run-dir "$OUT/$1" --force --no-progress \
        --set epochs=1 "iters_per_epoch=$2" step=fast bf16=true channels_last=true device=cuda \
              num_workers=4 val_sequences=64 >&2
    t1=$(date +%s.%N)
    "$PY" -c "print($t1 - $t0)"
}
t_short=$(run short "$SHORT")
t_long=$(run long "$ITERS")
"$PY" - "$t_short" "$t_long" "$SHORT" "$ITERS" <<'EOF'
import sys
t_short, t_long, n_short, n_long = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
per_iter = (t_long - t_short) / (n_long - n_short)
total = 100 * 600  # the lab preset: 100 epochs x 600 iterations of batch 64
print(f"lab preset, fast path: {per_iter:.3f} s per iteration of batch 64 "
      f"({64 / per_iter:.1f} sequences/s); {n_long} iterations took {t_long:.0f} s with start-up")
print(f"extrapolated whole lab run ({total} iterations): {per_iter * total / 3600:.1f} hours "
      "of training (plus 20 validations)")
EOF
