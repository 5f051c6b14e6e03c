#!/usr/bin/env bash
# Install pirs into .venv and run the main job on the bundled sample photos (scikit-image's
# colour photographs): degraded HQ/LQ shards with restoration prompts, and a contact sheet.
set -euo pipefail
PIRS_EXTRAS="" source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
OUT="${PIRS_DEMO_OUT:-demo}"
.venv/bin/degrade build --pipeline mixed --out "$OUT/shards" --num-samples 64 --crop-size 256 \
  --shard-size 32 --workers 2 --seed 0
.venv/bin/degrade preview "$OUT/shards" --out "$OUT/preview.png" --count 8
cat <<MSG

Demo done. Output is in $OUT/:
  $OUT/shards/            webdataset shards (shard-*.tar), manifest.json, rejects.jsonl, README.md card
  $OUT/preview.png        contact sheet: HQ | LQ | restoration prompt for the first 8 samples
Look at it:   open $OUT/preview.png     (or any image viewer)
Load it:      .venv/bin/python -c "import datasets; print(datasets.load_dataset('$OUT/shards')['train'][0]['json'])"
One record:   .venv/bin/degrade show $OUT/shards 00000000
MSG
