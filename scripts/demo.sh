#!/usr/bin/env bash
# Install pirs into .venv and run the main job on the bundled sample photos (scikit-image's
# colour photographs): training shards with restoration prompts and captions, a contact sheet, then a
# Real-ESRGAN x4 test set scored for three weight-free baselines, with a table of the scores,
# and a leaderboard that puts them beside the papers' tables.
set -euo pipefail
PIRS_EXTRAS="" source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
OUT="${PIRS_DEMO_OUT:-demo}"
METRICS="psnr,psnr-ycbcr,ssim,ssim-ycbcr"

# 1. training data: SPIRE's mix of Real-ESRGAN and parameterized degradations
.venv/bin/degrade build --pipeline mixed --out "$OUT/shards" --num-samples 64 --crop-size 256 \
  --shard-size 32 --workers 2 --seed 0
# captions written from each record's applied degradations (no model needed; --backend llava with
# --model DIR writes XPSR's LLaVA captions the same way)
.venv/bin/caption run "$OUT/shards" --out "$OUT/captioned" --backend template --overwrite --quiet
.venv/bin/degrade preview "$OUT/captioned" --out "$OUT/preview.png" --count 8
# Diff-Restorer's universal degradations: a small mixed set and one example of each type
.venv/bin/degrade build --pipeline universal --out "$OUT/universal" --num-samples 16 --crop-size 256 \
  --shard-size 16 --seed 0 --quiet
.venv/bin/degrade gallery --out "$OUT/gallery.png" --tile 192

# 2. a test set (Real-ESRGAN x4, LQ at 1/4 size) and three baselines that need no weights
.venv/bin/degrade build --pipeline realesrgan --out "$OUT/testset" --num-samples 32 --crop-size 256 \
  --flip-prob 0 --workers 2 --seed 1 --quiet
for method in identity bicubic lanczos; do
  .venv/bin/bench baseline "$method" --reference "$OUT/testset" --out "$OUT/predictions/$method" --overwrite
  .venv/bin/bench evaluate "$OUT/predictions/$method" --reference "$OUT/testset" --metrics "$METRICS" \
    --out "$OUT/results/$method.json" --quiet
done
.venv/bin/bench compare "$OUT/results/identity.json" "$OUT/results/bicubic.json" | tee "$OUT/results/table.txt"
.venv/bin/bench compare "$OUT/results/bicubic.json" "$OUT/results/lanczos.json" | tee -a "$OUT/results/table.txt"

# 3. the leaderboard: the four papers' tables beside these results
.venv/bin/leaderboard render --results "$OUT/results" --out "$OUT/leaderboard" --quiet

cat <<MSG

Demo done. Output is in $OUT/:
  $OUT/shards/            training shards (shard-*.tar), manifest.json, rejects.jsonl, README.md card
  $OUT/captioned/         the same shards with low-level captions (template backend), manifest and card
  $OUT/preview.png        contact sheet: HQ | LQ | restoration prompt and caption for the first 8 samples
  $OUT/universal/         16 pairs with one of Diff-Restorer's eight degradation types each
  $OUT/gallery.png        one example per degradation type and per Diff-Restorer test mixture
  $OUT/testset/           a Real-ESRGAN x4 test set of 32 crops
  $OUT/predictions/       identity, bicubic and lanczos predictions, one PNG per key
  $OUT/results/           per method: summary JSON and per-image CSV; table.txt (printed above)
  $OUT/leaderboard/       index.html (paper tables + these baselines), Markdown, CSV and plots per test set
Look at it:   open $OUT/preview.png; cat $OUT/results/table.txt; open $OUT/leaderboard/index.html
Load it:      .venv/bin/python -c "import datasets; print(datasets.load_dataset('$OUT/captioned')['train'][0]['json'])"
One record:   .venv/bin/degrade show $OUT/shards 00000000
MSG
