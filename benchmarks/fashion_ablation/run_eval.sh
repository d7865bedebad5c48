#!/usr/bin/env bash
# Scores every row of the Fashion-MNIST ablation (docs/reproduction.md) with tools/eval_generation.py, in priority
# order, skipping rows whose JSON exists and waiting for sweep points that are still training.
#   bash benchmarks/fashion_ablation/run_eval.sh [OUT_DIR]
set -u
OUT=${1:-benchmarks/fashion_ablation/results}
RUNS=runs/sweeps/fashion_ablation
TEST=data/fashion_mnist/test; VAL=data/fashion_mnist/train
SEEDS=${SEEDS:-0 1 2}; PER_CLASS=${PER_CLASS:-30}; REF_PER_CLASS=${REF_PER_CLASS:-100}; THREADS=${THREADS:-2}
CFG_VALUES=${CFG_VALUES:-0,1.5,3,5}; CFG_PER_CLASS=${CFG_PER_CLASS:-20}; VAL_PER_CLASS=${VAL_PER_CLASS:-50}
CURVE_PER_CLASS=${CURVE_PER_CLASS:-20}
MR="sampling.resample=mask sampling.mr_steps=3 sampling.p_resample=0.02"
SR="sampling.resample=simple sampling.sr_steps=1"
mkdir -p "$OUT"

run_dir() {  # run_dir MASK SEED -> the point's run folder once its result.json exists (waits up to 40 min)
  local point="C9e12-d4-$1-s$2" waited=0
  until [ -f "$RUNS/points/$point/result.json" ]; do
    sleep 30; waited=$((waited + 30)); [ $waited -gt 2400 ] && return 1
  done
  ls -d "$RUNS"/runs/"$point"-*/ | head -n 1
}

row() {  # row NAME CHECKPOINT REFERENCE PER_CLASS [overrides...]
  local name=$1 ckpt=$2 ref=$3 per=$4; shift 4
  [ -f "$OUT/$name.json" ] && return 0
  echo "$(date -u +%T) $name"
  python tools/eval_generation.py --checkpoint "$ckpt" --reference "$ref" --reference-per-class "$REF_PER_CLASS" \
    --per-class "$per" --threads "$THREADS" --out "$OUT/$name.json" "$@" 2>&1 | tail -n 2
}

best_cfg() { python -c "import json,sys; print(json.load(open(sys.argv[1]))['best_cfg'])" "$1"; }

students() {
  for student in distill finetune; do
    dir=$(ls -d runs/repro/students/$student-*/ 2>/dev/null | head -n 1)
    [ -n "$dir" ] && [ -f "$dir/checkpoints/step_00000100/COMPLETE" ] && row "student-$student" "$dir" $TEST $PER_CLASS
  done
}

for seed in $SEEDS; do
  for mask in markovian block_causal markovian_prev; do
    dir=$(run_dir $mask $seed) || continue
    row "$mask-s$seed" "$dir" $TEST $PER_CLASS
  done
  students
  dir=$(run_dir markovian $seed) || continue
  row "markovian-s$seed-sr" "$dir" $TEST $PER_CLASS $SR
  row "markovian-s$seed-mr" "$dir" $TEST $PER_CLASS $MR
  for mask in markovian block_causal; do  # guidance tuned per model on the validation reference (train split)
    dir=$(run_dir $mask $seed) || continue
    if [ ! -f "$OUT/cfgsweep-$mask-s$seed.json" ]; then
      python tools/eval_generation.py --checkpoint "$dir" --reference $VAL --reference-per-class "$VAL_PER_CLASS" \
        --per-class "$CFG_PER_CLASS" --threads "$THREADS" --bootstrap 0 --cfg-sweep "$CFG_VALUES" \
        --out "$OUT/cfgsweep-$mask-s$seed.json" 2>&1 | tail -n 2
    fi
    row "$mask-s$seed-cfg" "$dir" $TEST $PER_CLASS sampling.cfg_scale=$(best_cfg "$OUT/cfgsweep-$mask-s$seed.json")
  done
done
for mask in markovian block_causal markovian_prev; do  # FID vs training FLOPs (seed 0, intermediate checkpoints)
  dir=$(run_dir $mask 0) || continue
  for step in 00000050 00000100 00000150; do
    row "curve-$mask-s0-$step" "$dir/checkpoints/step_$step" $TEST "$CURVE_PER_CLASS"
  done
done
echo "$(date -u +%T) done"
