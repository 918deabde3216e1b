#!/bin/sh
# The README's strategy comparison ("Population-based training"): DeepSeek-V3 nano on the WordNet glosses
# (configs/run/quickstart.toml), trainings of 160 steps of 8 x 128 tokens, the same space (train.lr
# log-uniform 1e-4..3e-2, train.weight_decay 0..0.3, train.warmup_steps 0..60), at equal compute: 8 x 160 =
# 1,280 training steps for each strategy.
#   pbt          8 members, exploit/explore every 20 steps (8 generations)
#   random       8 trials of 160 steps, no pruning
#   tpe-asha     TPE with ASHA (rungs at 10, 40, 160 steps), trials until the budget is spent (TRIALS, 28)
#   scripts/pbt_compare.sh [OUT]      (default runs/pbt-compare); prints each strategy's best and its steps
# SEED (default run.seed, 1337) seeds the samplers and PBT's draws; INTERVAL (20) is PBT's generation.
set -eu
OUT=${1:-runs/pbt-compare}
DS=${DSFORGE:-./build/dsforge}
mkdir -p "$OUT"
cat > "$OUT/space.toml" <<'TOML'
["train.lr"]
type = "float"
low = 1e-4
high = 3e-2
log = true
["train.weight_decay"]
type = "float"
low = 0.0
high = 0.3
["train.warmup_steps"]
type = "int"
low = 0
high = 60
TOML
S="--config configs/run/quickstart.toml --space $OUT/space.toml --run.threads=${THREADS:-2} --train.batch_size=8 \
   --train.max_steps=160 --train.eval_every=10 --train.checkpoint_every=160 --eval.batches=4 --run.out_dir=$OUT/base \
   ${SEED:+--seed $SEED}"
/usr/bin/time -f "pbt: %e s, peak RSS %M KB" $DS search $S --strategy pbt --population 8 --interval ${INTERVAL:-20} --out "$OUT/pbt" > "$OUT/pbt.log" 2>&1
/usr/bin/time -f "random: %e s, peak RSS %M KB" $DS search $S --sampler random --trials 8 --out "$OUT/random" > "$OUT/random.log" 2>&1
/usr/bin/time -f "tpe-asha: %e s, peak RSS %M KB" $DS search $S --sampler tpe --pruner asha --trials ${TRIALS:-28} --out "$OUT/tpe-asha" \
  > "$OUT/tpe-asha.log" 2>&1
for s in pbt random tpe-asha; do tail -n 1 "$OUT/$s.log"; done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
pbt = json.load(open(f"{out}/pbt/pbt.json"))
print(f"pbt       best {pbt['best_value']:.5f}  steps {pbt['training_steps']}")
for s in ("random", "tpe-asha"):
    trials = json.load(open(f"{out}/{s}/trials.json"))
    done = [t for t in trials if t["state"] == "COMPLETE"]
    steps = sum(max(int(k) for k in t["intermediate"]) for t in trials if t["intermediate"])
    best = min(t["value"] for t in done)
    print(f"{s:9s} best {best:.5f}  steps {steps}  ({len(done)} complete, {len(trials) - len(done)} pruned)")
PY
