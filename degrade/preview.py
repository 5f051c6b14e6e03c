"""``degrade preview``: a contact sheet of HQ, LQ (upscaled) and the prompt text, as PNG."""

from __future__ import annotations

import textwrap
from pathlib import Path

from .shards import iter_records, shard_paths


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def contact_sheet(folder: str, out: str, count: int = 8, tile: int = 256) -> Path:
    """Draw ``count`` records of a shard folder: one row each, HQ | LQ upscaled | text."""
    from PIL import Image, ImageDraw

    rows = []
    for shard in shard_paths(folder):
        for key, rec, members in iter_records(shard):
            rows.append((key, rec, members))
            if len(rows) >= count:
                break
        if len(rows) >= count:
            break
    if not rows:
        raise ValueError(f"{folder}: no samples to preview")
    text_w, pad, head = 2 * tile, 8, 28
    sheet = Image.new("RGB", (2 * tile + text_w + 4 * pad, head + len(rows) * (tile + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font, small = _font(16), _font(13)
    for x, title in ((pad, "HQ"), (2 * pad + tile, "LQ (nearest, to HQ size)"), (3 * pad + 2 * tile, "record")):
        draw.text((x, 6), title, fill="black", font=font)
    for r, (key, rec, members) in enumerate(rows):
        y = head + r * (tile + pad)
        lq = Image.open(_bytes(members["lq.png"])).convert("RGB")
        if "hq.png" in members:
            hq = Image.open(_bytes(members["hq.png"])).convert("RGB")
            sheet.paste(hq.resize((tile, tile), Image.Resampling.BICUBIC), (pad, y))
        else:  # a real photo without ground truth
            draw.rectangle((pad, y, pad + tile - 1, y + tile - 1), fill="lightgray")
            draw.text((pad + 8, y + tile // 2 - 8), "no HQ (real photo)", fill="black", font=small)
        sheet.paste(lq.resize((tile, tile), Image.Resampling.NEAREST), (2 * pad + tile, y))
        lines = [f"key {key}   source {rec['source_path'] or rec.get('lq_source_path', '')}",
                 f"recipe {rec['branch']}   scale {rec['scale']}   HQ {rec['hq_size']}  LQ {rec['lq_size']}",
                 "labels: " + (", ".join(rec["degradations"]) or "none"), "prompt:"]
        lines += textwrap.wrap(rec["restoration_prompt"], 48) or [""]
        for cap in ("caption_high", "caption_low"):
            if rec.get(cap):
                lines += textwrap.wrap(f"{cap}: {rec[cap]}", 48)[:4]
        for j, line in enumerate(lines[: tile // 17]):
            draw.text((3 * pad + 2 * tile, y + 2 + 17 * j), line, fill="black", font=small)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def _bytes(b: bytes):
    import io

    return io.BytesIO(b)
