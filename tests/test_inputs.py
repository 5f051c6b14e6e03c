"""Input handling of ``degrade build``: discovery, decoding, rejects, manifest accounting, exit status.

Images are made on the fly (numpy, OpenCV, Pillow); nothing is downloaded. Unit tests call
``pirs.degrade.sources`` directly; end-to-end tests run ``build(quick_config(...))`` (crop 32) and
a few run the real CLI in a subprocess for the exit status.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import quick_config, synthetic_photo, write_png
from pirs.degrade import sources
from pirs.degrade.build import BuildError, build
from pirs.degrade.sources import BadInput, SourceRef, check, decode, discover

CROP = 32


# ---------------------------------------------------------------- helpers


def png_bytes(img: np.ndarray) -> bytes:
    """PNG bytes (OpenCV) of an RGB/RGBA/grey array of uint8 or uint16 (channels given in RGB order)."""
    a = img
    if a.ndim == 3 and a.shape[2] == 3:
        a = a[..., ::-1]
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[..., [2, 1, 0, 3]]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(a))
    assert ok
    return buf.tobytes()


def jpeg_bytes(img: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def pil_bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def reject_reason(data: bytes, **kw) -> str:
    """The lower-cased one-line reason :func:`decode` gives for ``data`` (fails if it decodes)."""
    with pytest.raises(BadInput) as e:
        decode(data, **kw)
    reason = str(e.value)
    assert reason and "\n" not in reason
    return reason.lower()


def to8(v16: np.ndarray) -> np.ndarray:
    """The 8-bit equivalent of 16-bit values, rounded to nearest."""
    return np.clip(np.rint(v16.astype(np.float64) * 255.0 / 65535.0), 0, 255).astype(np.uint8)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def with_exif_orientation_png(data: bytes, orientation: int) -> bytes:
    """Insert an eXIf chunk carrying ``orientation`` right after IHDR of PNG ``data``."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    raw = exif.tobytes()
    if raw.startswith(b"Exif\x00\x00"):
        raw = raw[6:]
    ihdr_end = 8 + 8 + 13 + 4
    return data[:ihdr_end] + png_chunk(b"eXIf", raw) + data[ihdr_end:]


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


def photo(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return synthetic_photo(h, w, seed)


def corrupt_png(seed: int = 0) -> bytes:
    """A PNG whose header is fine but whose compressed pixel data is overwritten with noise."""
    data = bytearray(png_bytes(np.random.default_rng(seed).integers(0, 256, (40, 50, 3), dtype=np.uint8)))
    i = data.find(b"IDAT") + 4
    data[i + 100 : i + 164] = np.random.default_rng(seed + 1).integers(0, 256, 64, dtype=np.uint8).tobytes()
    return bytes(data)


def animated_gif() -> bytes:
    frames = [Image.fromarray(photo(40, 40, s)).convert("P") for s in range(3)]
    return pil_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def animated_png() -> bytes:
    frames = [Image.fromarray(photo(40, 40, s)) for s in range(3)]
    return pil_bytes(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50)


def multiframe_tiff() -> bytes:
    frames = [Image.fromarray(photo(40, 40, s)) for s in range(2)]
    return pil_bytes(frames[0], "TIFF", save_all=True, append_images=frames[1:])


def read_rejects(out: Path) -> list[dict]:
    text = (out / "rejects.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_records(out: Path) -> list[dict]:
    recs = []
    for shard in sorted(out.glob("shard-*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf:
                if m.name.endswith(".json"):
                    recs.append(json.loads(tf.extractfile(m).read()))
    return recs


# ---------------------------------------------------------------- discovery


def test_directory_is_walked_recursively_with_relative_sorted_paths(tmp_path):
    root = tmp_path / "in"
    for rel in ("b.png", "a/x.png", "a/deeper/still/y.png", "c/z.jpg"):
        write_png(root / rel, photo())
    (root / ".hidden").mkdir()
    write_png(root / ".hidden" / "skip.png", photo())
    refs, rejects = discover(str(root))
    assert rejects == []
    assert [r.path for r in refs] == ["a/deeper/still/y.png", "a/x.png", "b.png", "c/z.jpg"]
    for r in refs:
        assert Path(r.location).is_file() and r.member is None
        assert decode(r.read()).shape == (48, 64, 3)


def test_files_are_recognised_by_content_not_extension(tmp_path):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "UPPER.PNG").write_bytes(png_bytes(photo(40, 40, 1)))
    (root / "sub" / "noext").write_bytes(jpeg_bytes(photo(40, 40, 2)))
    (root / "fake.jpg").write_bytes(png_bytes(photo(40, 40, 3)))  # a PNG with a .jpg name
    refs, rejects = discover(str(root))
    assert rejects == [] and [r.path for r in refs] == ["UPPER.PNG", "fake.jpg", "sub/noext"]
    for r in refs:
        assert check(r, CROP, False, sources.DEFAULT_MAX_PIXELS).height == 40


def test_cli_input_defaults_to_bundled_photos():
    from pirs.degrade.cli import make_parser

    a = make_parser().parse_args(["build", "--pipeline", "realesrgan", "--out", "o"])
    assert a.input is None


def test_single_image_file_as_input(tmp_path):
    p = write_png(tmp_path / "one.png", photo())
    refs, rejects = discover(str(p))
    assert [r.path for r in refs] == ["one.png"] and rejects == []


def test_missing_input_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        discover(str(tmp_path / "nope"))


def test_list_file_paths_are_relative_to_the_list_folder_and_missing_ones_are_rejects(tmp_path, monkeypatch):
    lists = tmp_path / "lists"
    write_png(lists / "imgs" / "a.png", photo())
    write_png(lists / "b.png", photo())
    absolute = write_png(tmp_path / "elsewhere" / "c.png", photo())
    (lists / "files.txt").write_text(
        "# comment line\n"
        "imgs/a.png\n"
        "\n"
        "  b.png  \n"
        f"{absolute}\n"
        "imgs/missing.png\n"
    )
    other = tmp_path / "cwd"
    other.mkdir()
    monkeypatch.chdir(other)  # relative entries must not be resolved against the working directory
    refs, rejects = discover(str(lists / "files.txt"))
    assert sorted(r.path for r in refs) == sorted(["imgs/a.png", "b.png", str(absolute)])
    for r in refs:
        assert decode(r.read()).shape == (48, 64, 3)
    assert len(rejects) == 1
    assert rejects[0]["path"] == "imgs/missing.png"
    assert "no such file" in rejects[0]["reason"] and "\n" not in rejects[0]["reason"]


def test_list_file_entries_missing_relative_to_list_but_present_in_cwd_are_rejects(tmp_path, monkeypatch):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "l.txt").write_text("x.png\n")
    write_png(tmp_path / "x.png", photo())  # exists relative to cwd only
    monkeypatch.chdir(tmp_path)
    refs, rejects = discover(str(tmp_path / "lists" / "l.txt"))
    assert refs == [] and [r["path"] for r in rejects] == ["x.png"]


def test_default_input_is_the_bundled_sample_photos():
    refs, rejects = discover(None)
    assert rejects == []
    names = [r.path for r in refs]
    assert names == sorted(names) and len(names) >= 4
    assert set(names) <= set(sources.SAMPLE_PHOTOS)
    for r in refs:
        assert Path(r.location).parent == sources.bundled_dir()
    info = check(refs[0], CROP, False, sources.DEFAULT_MAX_PIXELS)
    assert info.height >= CROP and info.width >= CROP


def test_webdataset_tar_of_plain_images(tmp_path):
    a, b = photo(40, 50, 1), photo(44, 52, 2)
    tar = make_tar(tmp_path / "plain.tar", {
        "s0.jpg": jpeg_bytes(a), "s0.cls": b"3",
        "dir/s1.png": png_bytes(b), "dir/s1.txt": b"a caption",
    })
    refs, rejects = discover(str(tar))
    assert rejects == []
    assert [r.path for r in refs] == ["plain.tar#dir/s1.png", "plain.tar#s0.jpg"]
    assert np.array_equal(decode(refs[0].read()), b)
    assert decode(refs[1].read()).shape == a.shape


def test_pirs_shard_prefers_hq_over_lq(tmp_path):
    hq, lq = photo(40, 40, 3), photo(20, 20, 4)
    members = {}
    for k in ("00000000", "00000001"):
        members[f"{k}.hq.png"] = png_bytes(hq)
        members[f"{k}.json"] = b"{}"
        members[f"{k}.lq.png"] = png_bytes(lq)
    # lq listed before hq for one key: the choice must not depend on member order
    members = dict(reversed(list(members.items())))
    refs, rejects = discover(str(make_tar(tmp_path / "shard-000000.tar", members)))
    assert rejects == []
    assert [r.path for r in refs] == ["shard-000000.tar#00000000.hq.png", "shard-000000.tar#00000001.hq.png"]
    for r in refs:
        assert np.array_equal(decode(r.read()), hq)


def test_shard_without_hq_uses_its_image(tmp_path):
    lq = photo(40, 40, 5)
    refs, _ = discover(str(make_tar(tmp_path / "s.tar", {"k.lq.png": png_bytes(lq), "k.json": b"{}"})))
    assert [r.path for r in refs] == ["s.tar#k.lq.png"]
    assert np.array_equal(decode(refs[0].read()), lq)


@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated"])
def test_unreadable_tar_is_a_reject_not_a_crash(tmp_path, kind):
    p = tmp_path / "bad.tar"
    if kind == "garbage":
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == "empty":
        p.write_bytes(b"")
    else:
        good = make_tar(tmp_path / "good.tar", {f"k{i}.png": png_bytes(photo(40, 40, i)) for i in range(3)})
        data = good.read_bytes()
        p.write_bytes(data[:700])  # cut inside the first member's data
    refs, rejects = discover(str(p))
    seen = len(refs) + len(rejects)
    assert seen >= 1
    assert [r["path"] for r in rejects] == ["bad.tar"]
    assert "tar" in rejects[0]["reason"] and "\n" not in rejects[0]["reason"]
    if kind == "truncated":
        assert "truncated" in rejects[0]["reason"]
    # nothing in a broken tar may come back as usable
    usable = []
    for r in refs:
        try:
            usable.append(check(r, CROP, False, sources.DEFAULT_MAX_PIXELS))
        except BadInput:
            pass
    assert usable == []


def test_tar_damaged_after_its_first_member_is_recorded(tmp_path):
    good = make_tar(tmp_path / "good.tar", {f"k{i}.png": png_bytes(photo(40, 40, i)) for i in range(3)})
    data = bytearray(good.read_bytes())
    first_size = len(png_bytes(photo(40, 40, 0)))
    second_header = 512 + (first_size + 511) // 512 * 512
    data[second_header : second_header + 512] = b"\xff" * 512  # garbage where the second header was
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "damaged.tar").write_bytes(bytes(data))
    refs, rejects = discover(str(tmp_path / "in"))
    assert [r.path for r in refs] == ["damaged.tar#k0.png"]  # the readable member is still used
    assert [r["path"] for r in rejects] == ["damaged.tar"]  # and the damage is recorded, not silently dropped
    assert "tar" in rejects[0]["reason"]


def test_tar_with_no_images_is_a_reject(tmp_path):
    tar = make_tar(tmp_path / "in" / "text.tar", {"a.txt": b"hello", "a.json": b"{}"})
    refs, rejects = discover(str(tar.parent))
    assert refs == []
    assert [r["path"] for r in rejects] == ["text.tar"]
    assert "no image" in rejects[0]["reason"]


def test_tar_member_refs_read_exact_member_bytes(tmp_path):
    payloads = {f"k{i}.png": png_bytes(photo(33 + i, 40, i)) for i in range(4)}
    refs, _ = discover(str(make_tar(tmp_path / "t.tar", payloads)))
    assert {r.path.split("#", 1)[1]: r.read() for r in refs} == payloads


# ---------------------------------------------------------------- decoding: rejects


def test_zero_bytes_is_empty():
    assert "empty" in reject_reason(b"")


def test_text_file_is_not_an_image():
    assert "not an image" in reject_reason(b"just some notes\nabout photos\n" * 10)


def test_random_bytes_are_not_an_image():
    assert "not an image" in reject_reason(np.random.default_rng(1).integers(0, 256, 4096, np.uint8).tobytes())


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_png(keep):
    data = png_bytes(np.random.default_rng(2).integers(0, 256, (60, 70, 3), dtype=np.uint8))
    assert "truncated" in reject_reason(data[: int(len(data) * keep)])


@pytest.mark.parametrize("drop", [1, 4, 12, 20])
def test_png_missing_its_last_bytes_is_truncated(drop):
    data = png_bytes(np.random.default_rng(3).integers(0, 256, (60, 70, 3), dtype=np.uint8))
    assert "truncated" in reject_reason(data[:-drop])


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.9])
def test_truncated_jpeg(keep):
    data = jpeg_bytes(np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert "truncated" in reject_reason(data[: int(len(data) * keep)])


def test_jpeg_missing_end_marker_is_truncated():
    data = jpeg_bytes(photo(64, 64, 1))
    assert "truncated" in reject_reason(data[:-2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corrupt_png_pixel_data_is_rejected(seed):
    assert "corrupt" in reject_reason(corrupt_png(seed))


def test_corrupt_16bit_png_pixel_data_is_rejected():
    v = np.random.default_rng(7).integers(0, 65536, (40, 50, 3), dtype=np.uint16)
    data = bytearray(png_bytes(v))
    i = data.find(b"IDAT") + 4
    data[i + 100 : i + 164] = b"\x00\x11" * 32
    assert "corrupt" in reject_reason(bytes(data))


def test_corrupt_header_is_rejected_as_corrupt_not_as_not_an_image():
    data = bytearray(png_bytes(photo()))
    data[16:24] = b"\xff" * 8  # IHDR width/height become absurd and the CRC no longer matches
    reason = reject_reason(bytes(data))
    assert "corrupt" in reason and "png" in reason
    jpg = jpeg_bytes(photo())
    assert "corrupt" in reject_reason(jpg[:3] + b"\x00" * 200)


@pytest.mark.parametrize("make", [animated_gif, animated_png, multiframe_tiff], ids=["gif", "apng", "tiff"])
def test_animated_or_multiframe_is_rejected(make):
    reason = reject_reason(make())
    assert "animated" in reason and "frames" in reason


def test_animated_webp_is_rejected():
    from PIL import features

    if not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    frames = [Image.fromarray(photo(40, 40, s)) for s in range(3)]
    data = pil_bytes(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50, lossless=True)
    assert "animated" in reject_reason(data)


def test_single_frame_gif_and_tiff_are_accepted():
    img = photo(40, 40, 1)
    p = Image.fromarray(img).convert("P")
    out = decode(pil_bytes(p, "GIF"))
    assert np.array_equal(out, np.asarray(p.convert("RGB")))
    assert np.array_equal(decode(pil_bytes(Image.fromarray(img), "TIFF")), img)


def test_smaller_than_crop_is_rejected_unless_pad(tmp_path):
    ref = SourceRef("small.png", str(write_png(tmp_path / "small.png", photo(20, 50))))
    with pytest.raises(BadInput) as e:
        check(ref, CROP, False, sources.DEFAULT_MAX_PIXELS)
    assert "smaller" in str(e.value)
    info = check(ref, CROP, True, sources.DEFAULT_MAX_PIXELS)
    assert (info.height, info.width) == (20, 50)
    # exactly the crop size is fine without padding
    ok = SourceRef("exact.png", str(write_png(tmp_path / "exact.png", photo(CROP, CROP))))
    assert check(ok, CROP, False, sources.DEFAULT_MAX_PIXELS).height == CROP


def test_smaller_after_exif_rotation_is_checked_on_the_rotated_size(tmp_path):
    # 40 wide x 24 high, stored rotated: the decoded image is 24 wide, below a 32 crop
    im = Image.fromarray(photo(24, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "rot.jpg"
    p.write_bytes(pil_bytes(im, "JPEG", exif=exif.tobytes(), quality=95))
    with pytest.raises(BadInput, match="smaller"):
        check(SourceRef("rot.jpg", str(p)), CROP, False, sources.DEFAULT_MAX_PIXELS)
    p2 = tmp_path / "rot_ok.jpg"
    p2.write_bytes(pil_bytes(Image.fromarray(photo(40, 64)), "JPEG", exif=exif.tobytes(), quality=95))
    info = check(SourceRef("rot_ok.jpg", str(p2)), CROP, False, sources.DEFAULT_MAX_PIXELS)
    assert (info.height, info.width) == (64, 40)


def test_decompression_bomb_limit():
    data = png_bytes(photo(50, 60))
    assert "decompression" in reject_reason(data, max_pixels=50 * 60 - 1)
    assert decode(data, max_pixels=50 * 60).shape == (50, 60, 3)


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG that declares ``w x h`` 1-bit greyscale pixels but holds almost no data."""
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def test_decompression_bomb_limit_between_one_and_two_times_max_pixels():
    # Pillow itself only errors at twice its limit; the caller's max_pixels is exact
    before = Image.MAX_IMAGE_PIXELS
    data = png_bytes(photo(50, 60))
    assert "decompression" in reject_reason(data, max_pixels=2000)
    assert "decompression" in reject_reason(data, max_pixels=1000)
    assert Image.MAX_IMAGE_PIXELS == before  # Pillow's global limit is restored


def test_huge_declared_size_is_rejected_before_decoding():
    reason = reject_reason(_png_header_only(40_000, 40_000))  # 1.6 G pixels, over the default limit
    assert "decompression" in reason


def test_max_pixels_above_pillows_own_limit_is_honoured():
    # 200 M pixels: over Pillow's built-in bomb error threshold (~179 M) but under max_pixels=250 M.
    # The user's limit decides, so this is rejected for its missing data, not as a bomb.
    reason = reject_reason(_png_header_only(20_000, 10_000), max_pixels=250_000_000)
    assert "decompression" not in reason
    assert "truncated" in reason or "corrupt" in reason
    assert "decompression" in reject_reason(_png_header_only(20_000, 10_000), max_pixels=150_000_000)


# ---------------------------------------------------------------- decoding: conversions


def test_8bit_rgb_png_is_exact():
    img = photo(37, 53, 2)
    out = decode(png_bytes(img))
    assert out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
    assert np.array_equal(out, img)


def test_16bit_rgb_png_rounds_to_8bit():
    v8 = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    out = decode(png_bytes(v8.astype(np.uint16) * 257))
    assert out.dtype == np.uint8 and out.shape == (30, 40, 3)
    assert np.array_equal(out, v8)


def test_16bit_rgb_png_rounds_to_nearest_not_high_byte():
    v = np.random.default_rng(1).integers(0, 65536, (30, 40, 3), dtype=np.uint16)
    v[0, 0] = [65280, 128, 32895]  # high bytes 255, 0, 128; nearest 8-bit 254, 0, 128
    out = decode(png_bytes(v))
    assert np.array_equal(out, to8(v))
    assert out[0, 0].tolist() == [254, 0, 128]


def test_16bit_grey_png_rounds_to_8bit():
    v8 = np.random.default_rng(2).integers(0, 256, (30, 40), dtype=np.uint8)
    out = decode(png_bytes(v8.astype(np.uint16) * 257))
    assert out.shape == (30, 40, 3)
    assert np.array_equal(out, np.repeat(v8[..., None], 3, axis=2))
    v = np.random.default_rng(3).integers(0, 65536, (30, 40), dtype=np.uint16)
    assert np.array_equal(decode(png_bytes(v)), np.repeat(to8(v)[..., None], 3, axis=2))


def test_dark_16bit_grey_png_is_not_stretched():
    v = np.full((32, 32), 200, np.uint16)  # every value < 256: still 16-bit data, so nearly black
    v[0, 0] = 0
    out = decode(png_bytes(v))
    assert out.max() <= 1


def test_dark_16bit_pgm_is_not_stretched():
    v = np.full((32, 32), 300, np.uint16)
    v[:, 16:] = 200  # every value < 256 in one half; the whole image is 16-bit data
    ok, buf = cv2.imencode(".pgm", v)
    assert ok
    assert np.array_equal(decode(buf.tobytes()), np.repeat(to8(v)[..., None], 3, axis=2))
    ok, buf = cv2.imencode(".pgm", np.full((32, 32), 200, np.uint16))
    assert decode(buf.tobytes()).max() <= 1


def test_16bit_rgba_png_composites_on_white():
    rgb = np.random.default_rng(4).integers(0, 65536, (20, 24, 3), dtype=np.uint16)
    alpha = np.zeros((20, 24, 1), np.uint16)
    alpha[:, 8:16] = 65535
    alpha[:, 16:] = 32768
    out = decode(png_bytes(np.concatenate([rgb, alpha], axis=2)))
    assert (out[:, :8] == 255).all()
    assert np.array_equal(out[:, 8:16], to8(rgb[:, 8:16]))
    a = 32768 / 65535
    half = rgb[:, 16:].astype(np.float64) * a + 65535 * (1 - a)
    assert np.abs(out[:, 16:].astype(int) - to8(half).astype(int)).max() <= 1


def test_16bit_tiff_rounds_to_8bit():
    v8 = np.random.default_rng(5).integers(0, 256, (30, 40), dtype=np.uint8)
    ok, buf = cv2.imencode(".tiff", v8.astype(np.uint16) * 257)
    assert ok
    assert np.array_equal(decode(buf.tobytes()), np.repeat(v8[..., None], 3, axis=2))
    rgb8 = np.random.default_rng(6).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".tiff", np.ascontiguousarray(rgb8[..., ::-1]).astype(np.uint16) * 257)
    assert ok
    assert np.array_equal(decode(buf.tobytes()), rgb8)


def test_greyscale_is_expanded_to_rgb():
    g = np.random.default_rng(7).integers(0, 256, (30, 40), dtype=np.uint8)
    out = decode(png_bytes(g))
    assert out.shape == (30, 40, 3)
    assert np.array_equal(out, np.repeat(g[..., None], 3, axis=2))
    assert np.array_equal(decode(jpeg_bytes(np.repeat(g[..., None], 3, axis=2)))[..., 0],
                          decode(jpeg_bytes(np.repeat(g[..., None], 3, axis=2)))[..., 2])
    one_bit = Image.fromarray(g > 128)
    out = decode(pil_bytes(one_bit, "PNG"))
    assert set(np.unique(out).tolist()) <= {0, 255}
    assert np.array_equal(out[..., 0] == 255, g > 128)


def test_palette_is_expanded_to_rgb():
    im = Image.fromarray(photo(30, 40, 3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    out = decode(pil_bytes(im, "PNG"))
    assert out.shape == (30, 40, 3)
    assert np.array_equal(out, np.asarray(im.convert("RGB")))
    assert len(np.unique(out.reshape(-1, 3), axis=0)) <= 16


def test_palette_with_transparent_index_composites_on_white():
    im = Image.new("P", (40, 36))
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    a = np.zeros((36, 40), np.uint8)
    a[:, 20:] = 1
    im = Image.fromarray(a, "P")
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    out = decode(pil_bytes(im, "PNG", transparency=0))
    assert (out[:, :20] == 255).all()
    assert (out[:, 20:] == [200, 100, 50]).all()


def test_rgb_png_with_transparent_colour_key_composites_on_white():
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[:, :10] = [255, 0, 255]  # the colour key
    rgb[:, 10:] = [10, 120, 30]
    out = decode(pil_bytes(Image.fromarray(rgb), "PNG", transparency=(255, 0, 255)))
    assert (out[:, :10] == 255).all() and (out[:, 10:] == [10, 120, 30]).all()


def test_rgba_is_composited_on_white():
    rgb = np.random.default_rng(8).integers(0, 256, (24, 30, 3), dtype=np.uint8)
    alpha = np.zeros((24, 30, 1), np.uint8)
    alpha[:, 10:20] = 255
    alpha[:, 20:] = 128
    out = decode(png_bytes(np.concatenate([rgb, alpha], axis=2)))
    assert out.shape == (24, 30, 3)
    assert (out[:, :10] == 255).all()  # fully transparent -> white, whatever the hidden colour
    assert np.array_equal(out[:, 10:20], rgb[:, 10:20])  # opaque keeps its colour
    a = 128 / 255
    expected = np.rint(rgb[:, 20:].astype(np.float64) * a + 255 * (1 - a))
    assert np.abs(out[:, 20:].astype(int) - expected).max() <= 1  # half-transparent blends with white
    assert (out[:, 20:].astype(int) >= rgb[:, 20:].astype(int)).all()


def test_greyscale_with_alpha_is_composited_on_white():
    la = np.zeros((20, 20, 2), np.uint8)
    la[..., 0] = 40
    la[:, 10:, 1] = 255
    out = decode(pil_bytes(Image.fromarray(la, "LA"), "PNG"))
    assert (out[:, :10] == 255).all() and (out[:, 10:] == 40).all()


def test_rgba_webp_is_composited_on_white():
    from PIL import features

    if not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., :3] = [0, 0, 200]
    rgba[:, 10:, 3] = 255
    out = decode(pil_bytes(Image.fromarray(rgba, "RGBA"), "WEBP", lossless=True, exact=True))
    assert (out[:, :10] == 255).all() and (out[:, 10:] == [0, 0, 200]).all()


def test_cmyk_jpeg_is_converted_to_rgb():
    img = photo(40, 48, 6)
    cmyk = Image.fromarray(img).convert("CMYK")
    data = pil_bytes(cmyk, "JPEG", quality=98)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode(data)
    assert out.shape == (40, 48, 3) and out.dtype == np.uint8
    assert np.array_equal(out, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    assert np.abs(out.astype(int) - img.astype(int)).mean() < 4


def test_cmyk_tiff_is_converted_to_rgb():
    img = photo(30, 30, 7)
    out = decode(pil_bytes(Image.fromarray(img).convert("CMYK"), "TIFF"))
    assert np.array_equal(out, img)


ORIENTATIONS = list(range(1, 9))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_exif_orientation_matches_pillow(fmt, orientation):
    base = np.random.default_rng(orientation).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = pil_bytes(Image.fromarray(base), fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    assert Image.open(io.BytesIO(data)).getexif().get(0x0112) == orientation
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    out = decode(data)
    assert out.shape == expected.shape
    assert out.shape[:2] == ((24, 40) if orientation <= 4 else (40, 24))
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_exif_orientation_on_16bit_png(orientation):
    v8 = np.random.default_rng(10 + orientation).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    data16 = with_exif_orientation_png(png_bytes(v8.astype(np.uint16) * 257), orientation)
    data8 = with_exif_orientation_png(png_bytes(v8), orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data8))).convert("RGB"))
    assert np.array_equal(decode(data8), expected)
    assert np.array_equal(decode(data16), expected)


def test_broken_exif_block_does_not_reject_the_pixels():
    img = photo(32, 40, 3)
    data = jpeg_bytes(img)
    # an APP1 Exif segment with a nonsense TIFF header right after SOI
    junk = b"Exif\x00\x00" + b"XX\x00\x2a" + b"\xff" * 20
    data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk + data[2:]
    assert decode(data).shape == (32, 40, 3)


# ---------------------------------------------------------------- end to end: build()


def bad_inputs(root: Path) -> dict[str, str]:
    """Write one file per kind of unusable input under ``root``; returns ``{relative path: reason word}``."""
    root.mkdir(parents=True, exist_ok=True)
    png = png_bytes(np.random.default_rng(0).integers(0, 256, (60, 60, 3), dtype=np.uint8))
    jpg = jpeg_bytes(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    files = {
        "empty.png": (b"", "empty"),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "truncated.jpg": (jpg[: len(jpg) // 2], "truncated"),
        "corrupt.png": (corrupt_png(), "corrupt"),
        "noise.jpg": (np.random.default_rng(2).integers(0, 256, 3000, dtype=np.uint8).tobytes(), "not an image"),
        "notes.txt": (b"this is a text file, not a photo\n", "not an image"),
        "anim.gif": (animated_gif(), "animated"),
        "anim.png": (animated_png(), "animated"),
        "pages.tif": (multiframe_tiff(), "animated"),
        "tiny.png": (png_bytes(photo(16, 20)), "smaller"),
        "sub/broken.tar": (b"not a tar at all" * 100, "tar"),
    }
    for rel, (data, _) in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return {rel: word for rel, (_, word) in files.items()}


def test_build_records_every_bad_input_and_goes_on(tmp_path, photos):
    expected = bad_inputs(photos / "bad")
    expected = {f"bad/{k}": v for k, v in expected.items()}
    big = write_png(photos / "big.png", photo(120, 120, 4))  # over max_pixels below
    expected["big.png"] = "decompression"
    out = tmp_path / "out"
    r = build(quick_config(out, photos, max_pixels=100 * 100))
    rejects = [x for x in read_rejects(out) if x.get("stage", "scan") == "scan"]
    by_path = {x["path"]: x["reason"] for x in rejects}
    assert set(by_path) == set(expected)
    for path, word in expected.items():
        assert word in by_path[path].lower(), (path, by_path[path])
        assert "\n" not in by_path[path]
    assert big.exists()
    good = 5  # the conftest photos
    m = json.loads((out / "manifest.json").read_text())["inputs"]
    assert m["usable"] == good == r.inputs_usable
    assert m["rejected"] == len(expected) == r.inputs_rejected
    assert m["seen"] == good + len(expected) == r.inputs_seen
    assert m["usable"] + m["rejected"] == m["seen"]
    assert sum(m["rejects_by_reason"].values()) == m["rejected"]
    assert r.samples == 12
    used = {rec["source_path"] for rec in read_records(out)}
    assert used and used.isdisjoint(expected)


def test_build_manifest_accounts_for_list_file_with_missing_entries(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        write_png(root / f"g{i}.png", photo(40, 40, i))
    (root / "z.png").write_bytes(b"")
    (root / "list.txt").write_text("g0.png\ng1.png\ng2.png\nz.png\ngone.png\nalso/gone.jpg\n")
    out = tmp_path / "out"
    r = build(quick_config(out, root / "list.txt"))
    m = json.loads((out / "manifest.json").read_text())["inputs"]
    assert (m["seen"], m["usable"], m["rejected"]) == (6, 3, 3)
    assert (r.inputs_seen, r.inputs_usable, r.inputs_rejected) == (6, 3, 3)
    reasons = {x["path"]: x["reason"] for x in read_rejects(out)}
    assert "empty" in reasons["z.png"]
    assert "no such file" in reasons["gone.png"] and "no such file" in reasons["also/gone.jpg"]
    assert {rec["source_path"] for rec in read_records(out)} == {"g0.png", "g1.png", "g2.png"}


def test_build_from_tars_in_a_folder(tmp_path):
    root = tmp_path / "tars"
    make_tar(root / "a.tar", {f"k{i}.jpg": jpeg_bytes(photo(40, 48, i)) for i in range(3)})
    make_tar(root / "b.tar", {"x.hq.png": png_bytes(photo(40, 40, 7)), "x.lq.png": png_bytes(photo(10, 10, 8)),
                              "x.json": b"{}", "y.png": b"", "y.json": b"{}"})
    (root / "c.tar").write_bytes(b"\x00\x01garbage" * 300)
    out = tmp_path / "out"
    r = build(quick_config(out, root))
    m = json.loads((out / "manifest.json").read_text())["inputs"]
    assert m["usable"] == 4 and m["rejected"] == 2 and m["seen"] == 6
    assert r.inputs_seen == m["seen"]
    reasons = {x["path"]: x["reason"] for x in read_rejects(out)}
    assert set(reasons) == {"b.tar#y.png", "c.tar"}
    assert "empty" in reasons["b.tar#y.png"] and "tar" in reasons["c.tar"]
    used = {rec["source_path"] for rec in read_records(out)}
    assert "b.tar#x.hq.png" in used and not any("lq" in p for p in used)


def test_build_from_a_previous_pirs_shard_uses_hq(tmp_path, photos):
    first = tmp_path / "first"
    build(quick_config(first, photos, num_samples=4, shard_size=4))
    shard = first / "shard-000000.tar"
    out = tmp_path / "second"
    r = build(quick_config(out, shard, num_samples=4))
    assert r.inputs_seen == r.inputs_usable == 4 and r.inputs_rejected == 0
    recs = read_records(out)
    assert len(recs) == 4
    assert all(rec["source_path"].startswith("shard-000000.tar#") and rec["source_path"].endswith(".hq.png")
               for rec in recs)
    assert all(rec["source_size"] == [CROP, CROP] for rec in recs)


def test_build_default_input_uses_bundled_photos(tmp_path):
    out = tmp_path / "out"
    r = build(quick_config(out, None, num_samples=3, shard_size=3))
    refs, _ = discover(None)
    assert r.inputs_seen == len(refs) and r.inputs_usable == len(refs) and r.inputs_rejected == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["args"]["input"] is None and m["inputs"]["seen"] == len(refs)
    assert {rec["source_path"] for rec in read_records(out)} <= set(sources.SAMPLE_PHOTOS)


def test_build_pads_small_inputs_when_asked(tmp_path):
    root = tmp_path / "small"
    write_png(root / "s.png", photo(20, 26, 1))
    with pytest.raises(BuildError, match="smaller"):
        build(quick_config(tmp_path / "nopad", root))
    out = tmp_path / "pad"
    r = build(quick_config(out, root, pad=True, num_samples=4))
    assert r.inputs_usable == 1 and r.inputs_rejected == 0 and r.samples == 4
    for rec in read_records(out):
        assert rec["source_size"] == [20, 26]
        assert sum(rec["pad"]) > 0 and rec["pad"] == [6, 6, 3, 3]
        assert rec["hq_size"] == [CROP, CROP]


def test_build_converts_odd_modes(tmp_path):
    root = tmp_path / "modes"
    v8 = photo(40, 40, 2)
    write_png(root / "rgb.png", v8)
    (root / "rgb16.png").write_bytes(png_bytes(v8.astype(np.uint16) * 257))
    (root / "grey.png").write_bytes(png_bytes(v8[..., 0]))
    (root / "cmyk.jpg").write_bytes(pil_bytes(Image.fromarray(v8).convert("CMYK"), "JPEG", quality=95))
    (root / "rgba.png").write_bytes(png_bytes(np.concatenate([v8, np.full((40, 40, 1), 128, np.uint8)], 2)))
    (root / "pal.png").write_bytes(pil_bytes(Image.fromarray(v8).convert("P"), "PNG"))
    out = tmp_path / "out"
    r = build(quick_config(out, root, num_samples=12))
    assert r.inputs_usable == 6 and r.inputs_rejected == 0
    assert read_rejects(out) == []
    assert {rec["source_path"] for rec in read_records(out)} == {p.name for p in root.iterdir()}


def test_build_with_nothing_usable_raises(tmp_path):
    root = tmp_path / "bad"
    bad_inputs(root)
    with pytest.raises(BuildError) as e:
        build(quick_config(tmp_path / "out", root))
    assert "no usable" in str(e.value)


# ---------------------------------------------------------------- the CLI exit status


def run_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pirs.degrade.cli", "build", "--pipeline", "realesrgan", "--crop-size", "32",
           "--num-samples", "4", "--shard-size", "4", "--quiet", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_cli_exit_status(tmp_path, photos):
    mixed = tmp_path / "mixed"
    write_png(mixed / "good.png", photo(40, 40, 1))
    (mixed / "empty.png").write_bytes(b"")
    (mixed / "notes.txt").write_text("hello")
    good_only = tmp_path / "good"
    write_png(good_only / "g.png", photo(40, 40, 2))
    all_bad = tmp_path / "allbad"
    bad_inputs(all_bad)

    r = run_cli("--input", str(mixed), "--out", str(tmp_path / "o1"))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "o1" / "manifest.json").read_text())["inputs"]
    assert (m["seen"], m["usable"], m["rejected"]) == (3, 1, 2)
    assert {x["path"] for x in read_rejects(tmp_path / "o1")} == {"empty.png", "notes.txt"}

    r = run_cli("--input", str(mixed), "--out", str(tmp_path / "o2"), "--strict")
    assert r.returncode != 0
    assert (tmp_path / "o2" / "rejects.jsonl").is_file()  # the build still ran and recorded why

    r = run_cli("--input", str(good_only), "--out", str(tmp_path / "o3"), "--strict")
    assert r.returncode == 0, r.stderr

    r = run_cli("--input", str(all_bad), "--out", str(tmp_path / "o4"))
    assert r.returncode != 0
    assert "no usable" in r.stderr

    r = run_cli("--input", str(tmp_path / "does-not-exist"), "--out", str(tmp_path / "o5"))
    assert r.returncode != 0 and "no such file" in r.stderr


def test_multi_picture_jpeg_from_a_phone_is_a_still_photo():
    """MPO files (a primary JPEG plus previews or depth maps) decode to their first frame."""
    import io

    from PIL import Image

    from pirs.degrade.sources import decode

    photo = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="MPO", save_all=True,
                                append_images=[Image.fromarray(np.zeros((20, 25, 3), np.uint8))])
    data = buf.getvalue()
    assert Image.open(io.BytesIO(data)).n_frames == 2
    expect = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(decode(data), expect)


def test_a_pirs_shard_folder_is_read_through_its_shards(tmp_path, photos):
    """Building from an earlier build's folder uses the HQ images of its shards, not its metadata files."""
    from conftest import quick_config
    from pirs.degrade.build import build

    first = tmp_path / "first"
    build(quick_config(first, photos, num_samples=6, crop_size=32, shard_size=3))
    r = build(quick_config(tmp_path / "second", first, num_samples=4, crop_size=16, strict=True))
    assert r.inputs_seen == 6 and r.inputs_rejected == 0 and r.samples == 4
