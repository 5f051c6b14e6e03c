"""Input images: find them (folder, list file, webdataset shards, bundled samples) and decode them.

Inputs may be local paths or fsspec URLs (``s3://bucket/photos/``): a URL folder is
listed with the filesystem's ``find`` and every file is read (streamed) when used.

Decoding is strict: anything that cannot be used raises :class:`BadInput` with a
one-line reason (empty, not an image, truncated or corrupt, animated, too large).
Usable images come back as uint8 RGB with EXIF orientation applied, 16-bit data
rounded to 8 bits, greyscale and palette expanded, alpha composited on white and
CMYK converted.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DEFAULT_MAX_PIXELS = 150_000_000
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pnm", ".jfif")
SAMPLE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "ihc.png",
                 "motorcycle_left.png", "retina.jpg")


class BadInput(ValueError):
    """An input that cannot be used; ``str(e)`` is the one-line reason."""


@dataclass(frozen=True)
class SourceRef:
    """Where one input's bytes live: a file, or a member of a tar (``member = (offset, size)``)."""

    path: str  # as recorded: relative to the input root; "shard.tar#member" for tar members
    location: str  # absolute file path or URL
    member: tuple[int, int] | None = None

    def read(self) -> bytes:
        """The input's bytes."""
        from .fs import open_read

        with open_read(self.location) as f:
            if self.member is None:
                return f.read()
            f.seek(self.member[0])
            return f.read(self.member[1])


def bundled_dir() -> Path:
    """Folder of scikit-image's bundled sample photographs."""
    import skimage.data

    return Path(skimage.data.__file__).parent


def discover(input_path: str | None, exclude: str | os.PathLike | None = None) -> tuple[list[SourceRef], list[dict]]:
    """Every candidate input under ``input_path`` (None: the bundled sample photos), sorted by path.

    ``exclude`` is a folder never searched (the build's own output, when it lies inside the
    input folder). Returns the candidates and the inputs rejected while listing (unreadable
    list entries, broken tar files), each ``{"path", "reason"}``.
    """
    from .fs import is_url

    if is_url(input_path):
        return _discover_url(str(input_path), exclude)
    skip = Path(exclude).resolve() if exclude is not None and not is_url(exclude) else None
    if input_path is None:
        root = bundled_dir()
        return [SourceRef(name, str(root / name)) for name in sorted(SAMPLE_PHOTOS) if (root / name).is_file()], []
    p = Path(input_path)
    if not p.exists():
        raise FileNotFoundError(f"--input {input_path}: no such file or folder")
    refs: list[SourceRef] = []
    rejects: list[dict] = []
    if p.is_dir() and (p / "manifest.json").is_file() and any(p.glob("shard-*.tar")):
        # A pirs shard folder: its images are in the shards; the rest is the build's metadata.
        for tar in sorted(p.glob("shard-*.tar")):
            _add_file(tar, tar.name, refs, rejects)
    elif p.is_dir():
        for dirpath, dirnames, filenames in os.walk(p):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                 and (skip is None or (Path(dirpath) / d).resolve() != skip))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                full = Path(dirpath) / name
                _add_file(full, full.relative_to(p).as_posix(), refs, rejects)
    elif p.suffix.lower() in (".txt", ".lst"):
        base = p.parent
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            full = Path(line) if Path(line).is_absolute() else base / line
            if not full.is_file():
                rejects.append({"path": line, "reason": f"listed in {p.name} line {n} but no such file"})
                continue
            _add_file(full, line, refs, rejects)
    else:
        _add_file(p, p.name, refs, rejects)
    refs.sort(key=lambda r: r.path)
    return refs, rejects


def _discover_url(url: str, exclude: str | os.PathLike | None) -> tuple[list[SourceRef], list[dict]]:
    """:func:`discover` for an fsspec URL: a folder (prefix), a .txt/.lst list, a .tar, or one image."""
    from .fs import url_to_fs

    url = url.rstrip("/")
    fs, root = url_to_fs(url)
    proto = url.split("://", 1)[0]
    root = root.rstrip("/")

    def full(key: str) -> str:
        return f"{proto}://{key}"

    refs: list[SourceRef] = []
    rejects: list[dict] = []
    try:
        fs.invalidate_cache()
        is_file = fs.isfile(root)
    except OSError as e:
        raise FileNotFoundError(f"--input {url}: cannot be read ({e})") from None
    if is_file and os.path.splitext(root)[1].lower() in (".txt", ".lst"):
        with fs.open(root, "rb") as f:
            text = f.read().decode(errors="replace")
        base = root.rsplit("/", 1)[0]
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key = line.split("://", 1)[1] if "://" in line else posixpath.normpath(f"{base}/{line.lstrip('/')}")
            if not fs.isfile(key):
                where = root.rsplit("/", 1)[-1]
                rejects.append({"path": line, "reason": f"listed in {where} line {n} but no such file"})
                continue
            _add_file(full(key), line, refs, rejects, fs=fs, key=key)
    elif is_file:
        _add_file(full(root), root.rsplit("/", 1)[-1], refs, rejects, fs=fs, key=root)
    else:
        keys = sorted(fs.find(root))
        if not keys:
            raise FileNotFoundError(f"--input {url}: no such file or folder (or an empty one)")
        skip = None
        if exclude is not None and str(exclude).split("://", 1)[0] == proto and "://" in str(exclude):
            skip = str(exclude).split("://", 1)[1].rstrip("/") + "/"
        names = {k[len(root) + 1:]: k for k in keys if k.startswith(root + "/")}
        shard_folder = "manifest.json" in names and any(n.startswith("shard-") and n.endswith(".tar")
                                                        and "/" not in n for n in names)
        for rel, key in sorted(names.items()):
            if skip is not None and (key + "/").startswith(skip):
                continue
            if any(part.startswith(".") for part in rel.split("/")):
                continue
            if shard_folder and not (rel.startswith("shard-") and rel.endswith(".tar") and "/" not in rel):
                continue
            _add_file(full(key), rel, refs, rejects, fs=fs, key=key)
    refs.sort(key=lambda r: r.path)
    return refs, rejects


def _add_file(full: Path | str, rel: str, refs: list[SourceRef], rejects: list[dict], fs=None,
              key: str | None = None) -> None:
    if os.path.splitext(str(full))[1].lower() == ".tar":
        try:
            found, damage = tar_sources(full, rel, fs=fs, key=key)
        except (tarfile.TarError, OSError, ValueError) as e:
            rejects.append({"path": rel, "reason": f"unreadable tar file: {e}"})
            return
        refs.extend(found)
        if damage:
            rejects.append({"path": rel, "reason": damage})
        elif not found:
            rejects.append({"path": rel, "reason": "tar file has no image members (no .png, .jpg, ... files)"})
    else:
        refs.append(SourceRef(rel, str(full) if fs is not None else str(Path(full).resolve())))


def tar_sources(path: Path | str, rel: str, fs=None, key: str | None = None) -> tuple[list[SourceRef], str | None]:
    """One image per sample key in a webdataset tar (``hq.*`` preferred), as member references.

    Returns the references and, if the tar is damaged after its readable part (a member
    cut short by the end of the file, or an unreadable header), a one-line reason; the
    members before the damage are still returned. A tar unreadable from the start raises.
    With ``fs`` (an fsspec filesystem), ``path`` is the tar's URL and ``key`` its key in ``fs``.
    """
    by_key: dict[str, list[tarfile.TarInfo]] = {}
    if fs is None:
        path = Path(path)
        file_size = path.stat().st_size
        location = str(path.resolve())
    else:
        file_size = int(fs.info(key)["size"])
        location = str(path)
    from .shards import check_member

    tar_key = key
    damage = None
    n_members = 0
    seen: dict[str, set[str]] = {}
    last = None
    with (open(path, "rb") if fs is None else fs.open(tar_key, "rb")) as raw, \
            tarfile.open(fileobj=raw, mode="r:") as tf:
        for m in tf:
            if m.offset_data + (m.size if m.isreg() else 0) > file_size:
                damage = (f"truncated tar file: member {m.name!r} ends "
                          f"{m.offset_data + m.size - file_size} bytes past the end of the file")
                break
            n_members += 1
            if m.isdir():
                continue
            # the shard reader's member checks (links, names, keys, sizes); keys may have folder parts
            key, ext = check_member(rel, m, folders=True)
            if key != last and key in seen:
                raise ValueError(f"key {key!r} appears again after other keys (member {m.name!r})")
            if ext in seen.setdefault(key, set()):
                raise ValueError(f"member {m.name!r} appears twice")
            seen[key].add(ext)
            last = key
            if os.path.splitext(m.name)[1].lower() not in IMAGE_EXTS:
                continue
            by_key.setdefault(key, []).append(m)
        end = tf.offset  # where tarfile stopped: the end-of-archive block, or a header it could not read
    if damage is None and end < file_size:
        with (open(path, "rb") if fs is None else fs.open(tar_key, "rb")) as f:
            f.seek(end)
            block = f.read(tarfile.BLOCKSIZE)
        if block.strip(b"\0"):
            damage = (f"corrupt tar file: unreadable header at byte {end} after {n_members} members; "
                      "the rest of the file was skipped")
    out = []
    for key in sorted(by_key):
        members = sorted(by_key[key], key=lambda m: (not m.name.rsplit("/", 1)[-1].split(".", 1)[1].startswith("hq"),
                                                      m.name))
        m = members[0]
        out.append(SourceRef(f"{rel}#{m.name}", location, (m.offset_data, m.size)))
    return out, damage


def _orient(a: np.ndarray, o: int) -> np.ndarray:
    """Apply EXIF orientation ``o`` (1-8) to an ``(H, W, C)`` array."""
    if o == 2:
        return a[:, ::-1]
    if o == 3:
        return a[::-1, ::-1]
    if o == 4:
        return a[::-1]
    if o == 5:
        return a.transpose(1, 0, 2)
    if o == 6:
        return np.rot90(a, -1)
    if o == 7:
        return a[::-1, ::-1].transpose(1, 0, 2)
    if o == 8:
        return np.rot90(a, 1)
    return a


def _composite_white(rgba: np.ndarray, max_value: float) -> np.ndarray:
    rgb = rgba[..., :3].astype(np.float64)
    a = rgba[..., 3:4].astype(np.float64) / max_value
    return rgb * a + max_value * (1.0 - a)


def _to_u8(a: np.ndarray, max_value: float) -> np.ndarray:
    return np.clip(np.rint(np.asarray(a, dtype=np.float64) * (255.0 / max_value)), 0, 255).astype(np.uint8)


def _decode_16bit(data: bytes, h: int, w: int) -> np.ndarray | None:
    """16-bit colour through OpenCV (Pillow keeps only 8 bits of it); None if OpenCV cannot."""
    a = cv2.imdecode(np.frombuffer(data, np.uint8),
                     cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION)
    if a is None or a.shape[:2] != (h, w) or a.dtype not in (np.uint8, np.uint16):
        return None
    peak = 65535.0 if a.dtype == np.uint16 else 255.0
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] == 1:
        return _to_u8(np.repeat(a, 3, axis=2), peak)
    if a.shape[2] == 4:
        return _to_u8(_composite_white(a[..., [2, 1, 0, 3]], peak), peak)
    return _to_u8(a[..., 2::-1], peak)


# First bytes of the formats people feed in: a file that starts like one but that Pillow cannot
# open is a corrupt image, not "not an image".
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
          (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"))


def _sniff(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _MAGIC if data.startswith(magic)), None)


def _png_complete(data: bytes) -> bool:
    """Whether PNG ``data`` holds its whole chunk sequence up to and including IEND."""
    pos = 8
    while pos + 12 <= len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        pos += 12 + n
        if kind == b"IEND":
            return pos <= len(data)
    return False


def _pil_rgb(im, deep: bool) -> np.ndarray:
    """uint8 RGB from a loaded Pillow image: greyscale and palette expanded, alpha on white."""
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im).astype(np.float64)
        peak = 65535.0 if deep or a.max() > 255 else 255.0  # 16-bit data is 16-bit even when dark
        return _to_u8(np.repeat(a[..., None], 3, axis=2), peak)
    if im.mode == "F":
        a = np.nan_to_num(np.asarray(im).astype(np.float64))
        return _to_u8(np.repeat(a[..., None], 3, axis=2), 1.0 if a.max() <= 1.0 else 255.0)
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        return _to_u8(_composite_white(np.asarray(im.convert("RGBA")), 255.0), 255.0)
    return np.asarray(im.convert("RGB"))


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to uint8 RGB ``(H, W, 3)``; raise :class:`BadInput` with the reason."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadInput("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # ``max_pixels`` is the limit: Pillow's own check (an error at twice MAX_IMAGE_PIXELS)
        # must neither reject images the caller allows nor let much bigger ones through.
        pillow_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            kind = _sniff(data)
            if kind:
                raise BadInput(f"corrupt {kind} file (starts like one, but its header cannot be read)") from None
            raise BadInput("not an image (no known image format)") from None
        except Image.DecompressionBombError:
            raise BadInput(f"larger than the decompression-bomb limit of {max_pixels} pixels") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            reason = "truncated" if "truncat" in str(e).lower() else "corrupt"
            raise BadInput(f"{reason} image header ({e})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit
        w, h = im.size
        if w * h > max_pixels:
            raise BadInput(f"{w}x{h} = {w * h} pixels is over the decompression-bomb limit of {max_pixels}")
        if w < 1 or h < 1:
            raise BadInput(f"image has no pixels ({w}x{h})")
        frames = getattr(im, "n_frames", 1)
        # A multi-picture JPEG (MPO, as phones and stereo cameras write) is a still photo whose
        # extra frames are previews or depth maps: its first frame is the photo.
        if frames > 1 and im.format != "MPO":
            raise BadInput(f"animated or multi-frame image ({frames} frames); only still images are used")
        # Read the tile list before loading (loading empties it): it tells 16-bit samples apart.
        deep = im.mode.startswith("I;16") or any(
            ";16" in str(getattr(t, "args", t[3] if len(t) > 3 else "")) for t in (im.tile or []))
        # Load before anything else touches the pixels: Image.getexif() loads a PNG itself, and a
        # failed load there would leave an image that a second load() silently accepts.
        try:
            im.load()
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
            raise BadInput(f"truncated or corrupt image data ({e})") from None
        if im.format == "PNG" and not _png_complete(data):
            raise BadInput("truncated PNG (the file ends before its IEND chunk)")
        try:
            orientation = int(im.getexif().get(0x0112, 1) or 1)
        except Exception:  # a broken EXIF block is not worth rejecting the pixels for
            orientation = 1
        # 16-bit colour: Pillow's RGB modes hold only the high byte, so round through OpenCV
        arr = _decode_16bit(data, h, w) if deep and not im.mode.startswith("I") else None
        if arr is None:
            arr = _pil_rgb(im, deep)
    arr = _orient(arr, orientation)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def png_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG's IHDR chunk, without decoding; None when ``data`` is not a PNG."""
    if len(data) < 24 or not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def decode_png(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """uint8 RGB of a shard's PNG member (OpenCV, fast), its declared size checked against ``max_pixels``
    before any pixel is decoded; raises :class:`BadInput` with the reason.

    Every image member of a shard is decoded here or by :func:`decode` (the strict decoder
    of source images and predictions): both refuse decompression bombs the same way.
    Bytes that are not a PNG go through :func:`decode`.
    """
    size = png_size(data)
    if size is None:
        return decode(data, max_pixels)
    w, h = size
    if w < 1 or h < 1:
        raise BadInput(f"PNG has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise BadInput(f"{w}x{h} = {w * h} pixels is over the decompression-bomb limit of {max_pixels}")
    a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if a is None or a.shape[:2] != (h, w):
        raise BadInput("truncated or corrupt PNG (OpenCV cannot decode it)")
    return np.ascontiguousarray(a[..., ::-1])


@dataclass(frozen=True)
class SourceInfo:
    """A usable input: where it is, its sha256 and its decoded size."""

    ref: SourceRef
    sha256: str
    height: int
    width: int


def check(ref: SourceRef, crop_size: int, pad: bool, max_pixels: int) -> SourceInfo:
    """Read and fully decode one input; raise :class:`BadInput` if it cannot be used for this build."""
    try:
        data = ref.read()
    except OSError as e:
        raise BadInput(f"unreadable ({e.strerror or e})") from None
    arr = decode(data, max_pixels)
    h, w = arr.shape[:2]
    if not pad and (h < crop_size or w < crop_size):
        raise BadInput(f"{w}x{h} is smaller than the {crop_size}x{crop_size} crop (use --pad to pad it)")
    return SourceInfo(ref, hashlib.sha256(data).hexdigest(), h, w)
