"""``degrade preview``: a contact sheet of HQ, LQ (upscaled) and the prompt text, as PNG."""

from __future__ import annotations

import textwrap
from pathlib import Path

from .shards import iter_records, shard_paths


def clip_lines(text: str, width: int, max_lines: int) -> list[str]:
    """``text`` wrapped to ``width`` characters in at most ``max_lines`` lines; a cut text ends in "..."."""
    if max_lines < 1:
        return []
    head = text[: width * (max_lines + 1)]  # never wrap more than could be drawn (a caption may be huge)
    lines = textwrap.wrap(head, width) or [""]
    if len(lines) > max_lines or len(head) < len(text):
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, width - 3)].rstrip() + "..."
    return lines


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def contact_sheet(folder: str, out: str, count: int = 8, tile: int = 256) -> Path:
    """Draw ``count`` records of a shard folder: one row each, HQ | LQ upscaled | text.

    Images are decoded with the shard reader's decoder (:func:`.sources.decode_png`, with the
    decompression-bomb limit); the PNG is written whole (a temporary name, then renamed).
    Raises ``ValueError`` (``BadInput``, ``ShardError``) with a one-line reason.
    """
    from PIL import Image, ImageDraw

    from .sources import BadInput, decode_png

    path = Path(out)
    if path.is_dir():
        raise ValueError(f"--out {out} is a folder; give the PNG file to write, e.g. {path / 'preview.png'}")
    if not 1 <= count <= 1000 or not 16 <= tile <= 4096:
        raise ValueError(f"--count must be in 1..1000 and --tile in 16..4096, got {count} and {tile}")
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
        try:
            if "lq.png" not in members:
                raise BadInput("no lq.png member")
            lq = Image.fromarray(decode_png(members["lq.png"]))
            hq = Image.fromarray(decode_png(members["hq.png"])) if "hq.png" in members else None
        except BadInput as e:
            raise BadInput(f"{folder}: sample {key!r}: {e}") from None
        if hq is not None:
            sheet.paste(hq.resize((tile, tile), Image.Resampling.BICUBIC), (pad, y))
        else:  # a real photo without ground truth
            draw.rectangle((pad, y, pad + tile - 1, y + tile - 1), fill="lightgray")
            draw.text((pad + 8, y + tile // 2 - 8), "no HQ (real photo)", fill="black", font=small)
        sheet.paste(lq.resize((tile, tile), Image.Resampling.NEAREST), (2 * pad + tile, y))
        lines = [f"key {key}   source {rec['source_path'] or rec.get('lq_source_path', '')}",
                 f"recipe {rec['branch']}   scale {rec['scale']}   HQ {rec['hq_size']}  LQ {rec['lq_size']}",
                 "labels: " + (", ".join(rec["degradations"]) or "none"), "prompt:"]
        room = tile // 17  # the lines that fit beside the images
        caps = [c for c in ("caption_high", "caption_low") if rec.get(c)]
        lines += clip_lines(rec["restoration_prompt"], 48, max(1, room - len(lines) - 2 * len(caps)))
        for cap in caps:
            lines += clip_lines(f"{cap}: {rec[cap]}", 48, min(4, room - len(lines)))
        for j, line in enumerate(lines[:room]):
            draw.text((3 * pad + 2 * tile, y + 2 + 17 * j), line, fill="black", font=small)
    import io

    from .atomic import write_bytes

    buf = io.BytesIO()
    sheet.save(buf, "PNG")
    try:
        write_bytes(path, buf.getvalue())
    except OSError as e:
        raise ValueError(f"--out {out}: cannot write ({e.strerror or e})") from None
    return path

