#!/bin/sh
# The back-translation experiment of the README ("Back-translation"): en->de on the first 5,000 Multi30k
# pairs, with and without synthetic pairs back-translated from 10,000 German captions (training lines
# 10,001-20,000) that no model sees as parallel data. Both en->de systems train for the same number of
# steps (the baseline EPOCHS epochs over 5,000 pairs); scores on test2016 with paired bootstrap.
#   scripts/back_translation.sh [OUT]      (default runs/bt; needs runs/mt-base: configs/run/mt_base.toml)
# Settings by environment: EPOCHS (12), REVERSE_EPOCHS (12), DECODE (greedy | sample | beam), TAG ("<bt>";
# empty = untagged), MIN_CHRF (20), BT_EPOCHS (2: epochs over real + synthetic pairs before the real
# pairs alone). The defaults give the README's positive result; its negative rows used REVERSE_EPOCHS=4.
set -eu
D=${DATA:-../shared/data}/mt_multi30k
OUT=${1:-runs/bt}
BASE=runs/mt-base/model
DS=${DSFORGE:-./build/dsforge}
EPOCHS=${EPOCHS:-12}
TAG=${TAG-<bt>}
[ -d "$BASE" ] || $DS pipeline --config configs/run/mt_base.toml
mkdir -p "$OUT"
sed -n '10001,20000p' "$D/train.de" > "$OUT/mono.de"
test16="--test-source $D/test_2016_flickr.en --test-target $D/test_2016_flickr.de"
common="--model $BASE --task parallel --max-train 5000 --max-test 1000 --beam 1"

# 1. The reverse model (de -> en) and the baseline (en -> de), both on the 5,000 real pairs.
[ -f "$OUT/de-en/seq2seq.json" ] || $DS finetune $common --epochs ${REVERSE_EPOCHS:-12} \
  --train-source "$D/train.de" --train-target "$D/train.en" \
  --test-source "$D/test_2016_flickr.de" --test-target "$D/test_2016_flickr.en" --out "$OUT/de-en"
[ -f "$OUT/en-de/seq2seq.json" ] || $DS finetune $common --no-stem --epochs $EPOCHS \
  --train-source "$D/train.en" --train-target "$D/train.de" $test16 --out "$OUT/en-de"
# 2. Synthetic English sources for the German captions, filtered by length ratio and round-trip chrF.
[ -f "$OUT/synthetic/back_translate.json" ] || $DS data back-translate --model "$OUT/de-en/model" --input "$OUT/mono.de" \
  --out "$OUT/synthetic" --decode ${DECODE:-greedy} --max-ratio 2 --round-trip-model "$OUT/en-de/model" \
  --min-chrf ${MIN_CHRF:-20} --tag "$TAG"
# 3. en -> de on the real pairs plus the synthetic ones, for as many steps as the baseline.
kept=$(sed -n 's/.*"kept": \([0-9]*\).*/\1/p' "$OUT/synthetic/back_translate.json")
bt_epochs=$(( (EPOCHS * 5000 + (5000 + kept) / 2) / (5000 + kept) ))
[ -f "$OUT/en-de-bt/seq2seq.json" ] || $DS finetune $common --no-stem --epochs $bt_epochs \
  --train-source "$D/train.en" --train-target "$D/train.de" \
  --train-source "$OUT/synthetic/source.txt" --train-target "$OUT/synthetic/target.txt" $test16 --out "$OUT/en-de-bt"
# The real pairs twice beside the synthetic ones (upsampling the real data), 3 epochs: fewer steps than the baseline.
head -n 5000 "$D/train.en" > "$OUT/real5k.en"
head -n 5000 "$D/train.de" > "$OUT/real5k.de"
[ -f "$OUT/en-de-bt-up2/seq2seq.json" ] || $DS finetune $common --no-stem --epochs 3 \
  --train-source "$OUT/real5k.en" --train-target "$OUT/real5k.de" --train-source "$OUT/real5k.en" --train-target "$OUT/real5k.de" \
  --train-source "$OUT/synthetic/source.txt" --train-target "$OUT/synthetic/target.txt" $test16 --out "$OUT/en-de-bt-up2"
# Real + synthetic pairs first (BT_EPOCHS epochs), then the real pairs alone from that model (the clean
# data last), for about as many steps in all as the baseline.
BT_EPOCHS=${BT_EPOCHS:-2}
[ -f "$OUT/en-de-bt-first/seq2seq.json" ] || $DS finetune $common --no-stem --epochs $BT_EPOCHS \
  --train-source "$D/train.en" --train-target "$D/train.de" \
  --train-source "$OUT/synthetic/source.txt" --train-target "$OUT/synthetic/target.txt" $test16 --out "$OUT/en-de-bt-first"
real_epochs=$(( EPOCHS - (BT_EPOCHS * (5000 + kept) + 2500) / 5000 ))
[ -f "$OUT/en-de-bt-then-real/seq2seq.json" ] || $DS finetune --model "$OUT/en-de-bt-first/model" --task parallel \
  --max-train 5000 --max-test 1000 --beam 1 --no-stem --epochs $real_epochs \
  --train-source "$D/train.en" --train-target "$D/train.de" $test16 --out "$OUT/en-de-bt-then-real"
# 4. Scores with sacreBLEU's signatures, and paired bootstrap resampling against the baseline.
$DS metrics paired-bs --baseline "$OUT/en-de/greedy.txt" --hyp "$OUT/en-de-bt/greedy.txt" --hyp "$OUT/en-de-bt-up2/greedy.txt" \
  --hyp "$OUT/en-de-bt-then-real/greedy.txt" \
  --ref "$D/test_2016_flickr.de" --metrics bleu,chrf,ter | tee "$OUT/paired_bs.txt"
