"""Pairing: match predictions to the test set's references by key, and say what does not match.

**Reference** (``--reference``): a pirs shard folder (or one ``.tar``): HQ and LQ, the
degradation labels, captions and scale of every record, read through the one safe shard
reader of :mod:`pirs.degrade.shards`; or a folder of images whose keys are the file
stems (no LQ, no labels, scale 1). A broken reference (unreadable shard or image,
duplicate keys) always stops the run.

**Predictions**: a folder of images named by key (``KEY.png``; any of
:data:`~pirs.benchmark.images.IMAGE_EXTS`, top level only), or a folder of webdataset
``.tar`` shards whose samples carry the restored image as ``pred.<ext>`` or ``<ext>``
(the first found of :data:`PRED_MEMBERS`: any ``pred.<ext>`` before a bare ``<ext>``,
each in the order png, jpg, jpeg, webp, bmp, tif, tiff; other members such as ``json``
are ignored). ``hq.*`` and ``lq.*`` members are never taken as predictions: a pirs shard
folder given by mistake must not score the ground truth against itself. ``run.json``
(the method's description, copied into the results), hidden files and other non-image
files are ignored and listed as such.

Every problem is collected and reported together, with counts and the first few names:
missing predictions, extra predictions (keys the reference does not have), size
mismatches (a prediction must have the HQ size, i.e. the LQ size times the declared
scale), unreadable files, duplicate keys (``a.png`` and ``a.jpg``). Headers are read
here; pixels are decoded once, later, while scoring (:func:`iter_decoded`), and a file
whose pixels turn out to be corrupt joins the same report.

Fingerprints: the test set's is its manifest's ``content_sha256`` (sha256 over the shard
sha256s), verified against the shard files; without a manifest, the same over the shard
files, or for an image folder a sha256 over the sorted ``name<TAB>sha256`` lines of its
images. The predictions' is a sha256 over the sorted ``key<TAB>sha256`` lines of the
prediction files (shard members) matched to reference keys.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .images import IMAGE_EXTS, BadImage, decode_image, decode_shard_png, header_size, is_image_name, size_text

_EXTS = tuple(e.lstrip(".") for e in IMAGE_EXTS)
PRED_MEMBERS = tuple(f"pred.{e}" for e in _EXTS) + _EXTS
RUN_FILE = "run.json"
SHOW = 5  # names shown per problem in messages


class PairingError(RuntimeError):
    """Predictions that do not pair with the reference; the message lists every problem."""


class ReferenceError(RuntimeError):
    """A reference that cannot be used; the message names the file."""


@dataclass
class RefItem:
    """One reference image and what the test set says about it."""

    key: str
    name: str  # for messages: a file name or "shard.tar:KEY"
    hq_size: tuple[int, int] | None  # (h, w); None: no HQ (a real photo without ground truth)
    lq_size: tuple[int, int] | None = None
    scale: int = 1
    lq_upsampled: bool = False
    labels: list[str] = field(default_factory=list)
    captions: dict[str, str] = field(default_factory=dict)
    restoration_prompt: str = ""
    path: Path | None = None  # image file (image-folder reference)


@dataclass
class Reference:
    """A test set: its items in order, where it is, and its fingerprint."""

    path: Path
    kind: str  # "shards" or "images"
    items: dict[str, RefItem]
    fingerprint: str
    fingerprint_source: str
    shards: list[Path] = field(default_factory=list)
    manifest: dict | None = None

    @property
    def name(self) -> str:
        """The test set's id: ``test_set.id`` of its manifest (``degrade testset`` writes it), else its folder name."""
        return self.manifest_test_set_id or self.folder_name

    @property
    def name_source(self) -> str:
        """Where :attr:`name` comes from: ``"manifest"`` (the test set's id) or ``"folder"``."""
        return "manifest" if self.manifest_test_set_id else "folder"

    @property
    def folder_name(self) -> str:
        """The reference folder's name."""
        return (self.path.parent.name if self.path.is_file() else self.path.name) or str(self.path)

    @property
    def manifest_test_set_id(self) -> str | None:
        """The manifest's ``test_set.id``, or None (no manifest, or shards not built as a standard test set)."""
        entry = self.manifest.get("test_set") if isinstance(self.manifest, dict) else None
        ident = entry.get("id") if isinstance(entry, dict) else None
        return ident if isinstance(ident, str) and ident.strip() else None

    @property
    def has_labels(self) -> bool:
        """Whether any record carries degradation labels."""
        return any(it.labels for it in self.items.values())

    @property
    def unpaired(self) -> list[str]:
        """Keys of records without an HQ image (real photos): only no-reference metrics apply."""
        return [k for k, it in self.items.items() if it.hq_size is None]

    @property
    def has_lq(self) -> bool:
        """Whether the reference carries LQ images (pirs shards)."""
        return self.kind == "shards"

    def iter_lq(self) -> Iterator[tuple[RefItem, np.ndarray]]:
        """``(item, LQ uint8 RGB)`` for every record, in order (shard references only)."""
        if self.kind != "shards":
            raise ReferenceError(f"{self.path}: an image-folder reference has no LQ images; a pirs shard folder has")
        for key, members in _iter_ref_shards(self, "lq.png", set(self.items)):
            yield self.items[key], decode_shard_png(members)


@dataclass
class PredItem:
    """One prediction: where its bytes are, their sha256 and the header size."""

    key: str
    name: str  # file name, or "shard.tar:KEY.member"
    sha256: str
    size: tuple[int, int] | None
    path: Path | None = None  # image file
    shard: Path | None = None
    member: str | None = None


@dataclass
class Report:
    """Every pairing problem, by kind; each entry a one-line description naming the file or key."""

    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # not an error: non-image files, run.json

    KINDS = ("missing", "extra", "size_mismatch", "unreadable", "duplicates")
    TITLES = {"missing": "missing predictions", "extra": "extra predictions (keys not in the reference)",
              "size_mismatch": "size mismatches", "unreadable": "unreadable files",
              "duplicates": "duplicate keys"}

    @property
    def problems(self) -> int:
        """Number of problems (ignored files are not problems)."""
        return sum(len(getattr(self, k)) for k in self.KINDS)

    def text(self, show: int = SHOW) -> str:
        """The problems, one paragraph per kind with its count and the first ``show`` names."""
        lines = []
        for kind in self.KINDS:
            items = getattr(self, kind)
            if items:
                more = f" ... and {len(items) - show} more" if len(items) > show else ""
                lines.append(f"  {len(items)} {self.TITLES[kind]}: " + "; ".join(items[:show]) + more)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Counts and full lists, for the results file."""
        out: dict = {k: {"count": len(getattr(self, k)), "items": list(getattr(self, k))} for k in self.KINDS}
        out["ignored"] = {"count": len(self.ignored), "items": list(self.ignored)}
        return out


@dataclass
class Pairing:
    """Predictions matched to a reference: the keys to score, the problems, both fingerprints."""

    reference: Reference
    predictions_path: Path
    predictions_kind: str  # "images" or "shards"
    preds: dict[str, PredItem]  # matched keys, reference order
    report: Report
    fingerprint: str
    run: dict | None = None  # run.json of the predictions folder

    @property
    def keys(self) -> list[str]:
        """Keys with a usable prediction, in reference order."""
        return list(self.preds)

    def check(self, allow_missing: bool = False) -> None:
        """Raise :class:`PairingError` listing every problem, unless there are none or ``allow_missing``."""
        if self.report.problems and not allow_missing:
            raise PairingError(self.message())
        if not self.preds:
            raise PairingError(f"{self.predictions_path}: no prediction pairs with the reference "
                               f"{self.reference.path}; nothing to score\n{self.report.text()}")

    def message(self) -> str:
        """A multi-line error message naming both folders and every problem."""
        return (f"predictions {self.predictions_path} do not pair with the reference {self.reference.path} "
                f"({len(self.reference.items)} images):\n{self.report.text()}\n"
                "Fix the predictions, or pass --allow-missing to score the pairs that are usable "
                "(what was left out is recorded in the results).")


# ---------------------------------------------------------------------------------------------- reference


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_shard_folder(p: Path) -> bool:
    return p.is_file() and p.suffix == ".tar" or p.is_dir() and any(p.glob("*.tar"))


def load_reference(path: str | os.PathLike) -> Reference:
    """Read a reference (pirs shard folder, one shard, or a folder of images): records, sizes, fingerprint.

    A URL (``s3://bucket/testset``, see :mod:`pirs.degrade.fs`) is read the same way, streamed.
    """
    from pirs.degrade.fs import as_path

    p = as_path(path)
    if not p.exists():
        raise ReferenceError(f"--reference {path}: no such folder or file")
    if _is_shard_folder(p):
        return _load_ref_shards(p)
    if p.is_dir():
        return _load_ref_images(p)
    raise ReferenceError(f"--reference {path}: neither a folder of images nor a pirs shard folder")


def _load_ref_shards(p: Path) -> Reference:
    from pirs.degrade.build import content_sha256
    from pirs.degrade.fs import basename
    from pirs.degrade.shards import ShardError, file_digest, iter_records, shard_paths

    try:
        shards = shard_paths(p)
    except (FileNotFoundError, ValueError) as e:
        raise ReferenceError(f"--reference {p}: {e}") from None
    if not shards:
        raise ReferenceError(f"--reference {p}: no *.tar shards there")
    items: dict[str, RefItem] = {}
    for shard in shards:
        try:
            for key, rec, members in iter_records(shard):
                where = f"{basename(shard)}:{key}"
                if key in items:
                    raise ReferenceError(f"{shard}: key {key!r} appears twice in the reference "
                                         f"(also {items[key].name})")
                paired = bool(rec["hq_size"])  # [] marks an unpaired record (no ground truth)
                for m in ("hq.png", "lq.png") if paired else ("lq.png",):
                    if m not in members:
                        raise ReferenceError(f"{shard}: sample {key!r} has no {m} member")
                items[key] = RefItem(
                    key=key, name=where, hq_size=tuple(rec["hq_size"]) if paired else None,
                    lq_size=tuple(rec["lq_size"]),
                    scale=int(rec["scale"]), lq_upsampled=bool(rec["lq_upsampled"]), labels=list(rec["degradations"]),
                    captions={k: rec[k] for k in ("caption_high", "caption_low", "caption_source")},
                    restoration_prompt=rec["restoration_prompt"])
        except ShardError as e:
            raise ReferenceError(f"reference shard unreadable: {e}") from None
    if not items:
        raise ReferenceError(f"--reference {p}: its shards hold no samples")
    digests = [file_digest(s)[1] for s in shards]
    fp = content_sha256(digests)
    manifest = None
    source = "sha256 over the shard files' sha256 (no manifest.json)"
    text = None
    if p.is_dir() and (p / "manifest.json").is_file():
        try:
            text = (p / "manifest.json").read_bytes()
        except OSError as e:
            raise ReferenceError(f"{p / 'manifest.json'}: not readable ({e})") from None
    if text is not None:
        from pirs.degrade.limits import InputError, load_json

        try:
            manifest = load_json(text, str(p / "manifest.json"))
        except InputError as e:
            raise ReferenceError(str(e)) from None
        declared = manifest.get("content_sha256") if isinstance(manifest, dict) else None
        if declared == fp:
            source = "manifest.json content_sha256 (verified against the shard files)"
        elif declared:
            source = ("sha256 over the shard files' sha256; manifest.json content_sha256 "
                      f"{declared[:12]}... does not match the shards (changed since the build)")
        else:
            source = "sha256 over the shard files' sha256 (manifest.json has no content_sha256)"
    return Reference(path=p, kind="shards", items=items, fingerprint=fp, fingerprint_source=source,
                     shards=shards, manifest=manifest)


def _list_images(p: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """Top-level image files of a folder grouped by key (file stem), and the names of other files."""
    by_key: dict[str, list[Path]] = {}
    other: list[str] = []
    for f in sorted(p.iterdir()):
        if f.name.startswith("."):
            continue
        if f.is_file() and is_image_name(f.name):
            by_key.setdefault(f.stem, []).append(f)
        else:
            other.append(f.name + ("/" if f.is_dir() else ""))
    return by_key, other


def _load_ref_images(p: Path) -> Reference:
    by_key, _ = _list_images(p)
    if not by_key:
        raise ReferenceError(f"--reference {p}: no image files ({', '.join(IMAGE_EXTS)}) and no .tar shards")
    dups = [f"{k}: {', '.join(f.name for f in fs)}" for k, fs in by_key.items() if len(fs) > 1]
    if dups:
        raise ReferenceError(f"--reference {p}: {len(dups)} duplicate keys (one image per key): "
                             + "; ".join(dups[:SHOW]))
    items: dict[str, RefItem] = {}
    lines, bad = [], []
    for key, (f,) in by_key.items():
        data = f.read_bytes()
        lines.append(f"{f.name}\t{_sha256(data)}\n")
        try:
            size = header_size(data)
        except BadImage as e:
            bad.append(f"{f.name}: {e}")
            continue
        items[key] = RefItem(key=key, name=f.name, hq_size=size, path=f)
    if bad:
        raise ReferenceError(f"--reference {p}: {len(bad)} unreadable images: " + "; ".join(bad[:SHOW]))
    fp = _sha256("".join(sorted(lines)).encode())
    return Reference(path=p, kind="images", items=items, fingerprint=fp,
                     fingerprint_source="sha256 over the sorted name and sha256 of the reference images")


# ---------------------------------------------------------------------------------------------- predictions


def pair(predictions: str | os.PathLike, reference: Reference | str | os.PathLike) -> Pairing:
    """Match a predictions folder (images or shards) to a reference; collect every problem.

    Reads every prediction's bytes once to hash them and read the header (no pixel
    decoding). Raises :class:`PairingError` only when the folder itself is unusable; call
    :meth:`Pairing.check` to stop on problems.
    """
    from pirs.degrade.fs import as_path

    ref = reference if isinstance(reference, Reference) else load_reference(reference)
    p = as_path(predictions)
    if not p.is_dir():
        raise PairingError(f"predictions {predictions}: no such folder (a folder of images or of .tar shards)")
    report = Report()
    run = _read_run(p)
    by_key, other = _list_images(p)
    tars = [name for name in other if name.endswith(".tar")]
    if tars and not by_key:
        kind = "shards"
        candidates, other = _list_pred_shards(p, report)
    else:
        kind = "images"
        candidates = {k: [_Candidate(f.name, path=f) for f in fs] for k, fs in by_key.items()}
    report.ignored.extend(name for name in other if name != RUN_FILE)
    dup_keys: set[str] = set()
    preds: dict[str, PredItem] = {}
    lines = []
    for key, found in candidates.items():
        if not found:  # a shard sample without a prediction member: already reported
            continue
        if len(found) > 1:
            dup_keys.add(key)
            report.duplicates.append(f"{key}: {', '.join(c.name for c in found)}")
            continue
        c = found[0]
        if key not in ref.items:
            report.extra.append(c.name)
            continue
        if c.sha256 is None:  # an image file: read it now
            try:
                c.inspect(c.path.read_bytes())
            except OSError as e:
                c.error = f"cannot read ({e.strerror or e})"
        if c.sha256:
            lines.append(f"{key}\t{c.sha256}\n")
        if c.error:
            report.unreadable.append(f"{c.name}: {c.error}")
            continue
        item = PredItem(key=key, name=c.name, sha256=c.sha256, size=c.size, path=c.path, shard=c.shard,
                        member=c.member)
        problem = _size_problem(item, item.size, ref.items[key])
        if problem:
            report.size_mismatch.append(problem)
            continue
        preds[key] = item
    report.missing.extend(k for k in ref.items if k not in candidates and k not in dup_keys)
    ordered = {k: preds[k] for k in ref.items if k in preds}
    fp = _sha256("".join(sorted(lines)).encode())
    return Pairing(reference=ref, predictions_path=p, predictions_kind=kind, preds=ordered, report=report,
                   fingerprint=fp, run=run)


def _size_problem(item: PredItem, size: tuple[int, int], ref: RefItem) -> str | None:
    if ref.hq_size is None or tuple(size) == tuple(ref.hq_size):  # no HQ: any size can be scored without one
        return None
    why = f"{item.name} is {size_text(size)}, the reference {ref.name} is {size_text(ref.hq_size)}"
    if ref.lq_size and not ref.lq_upsampled and ref.scale != 1:
        why += f" (LQ {size_text(ref.lq_size)} x scale {ref.scale})"
        if tuple(size) == tuple(ref.lq_size):
            why += "; the prediction has the LQ size: was it upscaled?"
    return why


def _read_run(p: Path) -> dict | None:
    f = p / RUN_FILE
    if not f.is_file():
        return None
    from pirs.degrade.limits import InputError, read_json_file

    try:
        run = read_json_file(f)
    except OSError as e:
        raise PairingError(f"{f}: not readable ({e.strerror or e})") from None
    except InputError as e:
        raise PairingError(str(e)) from None
    if not isinstance(run, dict):
        raise PairingError(f"{f}: must hold a JSON object (method, checkpoint, prompts...), got {type(run).__name__}")
    return run


@dataclass
class _Candidate:
    """A file (or shard member) that may be a prediction; hashed and its header read once."""

    name: str
    path: Path | None = None
    shard: Path | None = None
    member: str | None = None
    sha256: str | None = None
    size: tuple[int, int] | None = None
    error: str = ""

    def inspect(self, data: bytes) -> None:
        self.sha256 = _sha256(data)
        try:
            self.size = header_size(data)
        except BadImage as e:
            self.error = str(e)


def _pick_member(members: dict[str, bytes]) -> str | None:
    return next((m for m in PRED_MEMBERS if m in members), None)


def _list_pred_shards(p: Path, report: Report) -> tuple[dict[str, list[_Candidate]], list[str]]:
    """Prediction shards: key -> candidates (hashed and header read as the shards stream by)."""
    from pirs.degrade.shards import ShardError, iter_samples

    found: dict[str, list[_Candidate]] = {}
    for shard in sorted(p.glob("*.tar")):
        try:
            for key, members in iter_samples(shard):
                member = _pick_member(members)
                if member is None:
                    report.unreadable.append(
                        f"{shard.name}:{key}: no prediction member (has {', '.join(sorted(members))}; "
                        f"expected one of pred.png, png, pred.jpg, jpg, ...)")
                    found.setdefault(key, [])  # not missing: it is reported as unreadable
                    continue
                c = _Candidate(f"{shard.name}:{key}.{member}", shard=shard, member=member)
                c.inspect(members[member])
                found.setdefault(key, []).append(c)
        except ShardError as e:
            report.unreadable.append(str(e))
    others = sorted(f.name for f in p.iterdir() if not f.name.startswith(".") and f.suffix != ".tar")
    return found, others


# ---------------------------------------------------------------------------------------------- decoding


def _iter_ref_shards(ref: Reference, member: str, wanted: set[str]) -> Iterator[tuple[str, bytes]]:
    from pirs.degrade.shards import ShardError, iter_records

    for shard in ref.shards:
        try:
            for key, _, members in iter_records(shard, validate=False):
                if key in wanted:
                    yield key, members.get(member)  # None: no hq.png (an unpaired record)
        except ShardError as e:
            raise ReferenceError(f"reference shard unreadable: {e}") from None


def _iter_pred_shards(pairing: Pairing, wanted: set[str]) -> Iterator[tuple[str, bytes]]:
    from pirs.degrade.shards import ShardError, iter_samples

    for shard in sorted({it.shard for it in pairing.preds.values()}):
        try:
            for key, members in iter_samples(shard):
                it = pairing.preds.get(key)
                if key in wanted and it is not None and it.shard == shard:
                    yield key, members[it.member]
        except ShardError as e:
            raise PairingError(f"prediction shard unreadable: {e}") from None


def _joined(pairing: Pairing, keys: list[str]) -> Iterator[tuple[str, bytes, bytes]]:
    """``(key, prediction bytes, reference bytes)`` for ``keys``, reading each file once.

    Image files are read on demand; two shard streams are merged, holding the bytes of
    whichever side is ahead (little when both follow the same key order).
    """
    ref = pairing.reference
    wanted = set(keys)
    pred_files = pairing.predictions_kind == "images"
    if ref.kind == "images" and pred_files:
        for k in keys:
            yield k, pairing.preds[k].path.read_bytes(), ref.items[k].path.read_bytes()
        return
    if ref.kind == "images":
        for k, pb in _iter_pred_shards(pairing, wanted):
            yield k, pb, ref.items[k].path.read_bytes()
        return
    if pred_files:
        for k, rb in _iter_ref_shards(ref, "hq.png", wanted):
            yield k, pairing.preds[k].path.read_bytes(), rb
        return
    pend_r: dict[str, bytes] = {}
    pend_p: dict[str, bytes] = {}
    streams = [(_iter_ref_shards(ref, "hq.png", wanted), pend_r, pend_p, True),
               (_iter_pred_shards(pairing, wanted), pend_p, pend_r, False)]
    live = [True, True]
    while any(live):
        for i, (it, mine, theirs, is_ref) in enumerate(streams):
            if not live[i]:
                continue
            try:
                k, b = next(it)
            except StopIteration:
                live[i] = False
                continue
            if k in theirs:
                other = theirs.pop(k)
                yield (k, other, b) if is_ref else (k, b, other)
            else:
                mine[k] = b


def _decode_pair(pairing: Pairing, key: str, pb: bytes, rb: bytes | None
                 ) -> tuple[str, np.ndarray | None, np.ndarray | None, str]:
    """Decode one pair; a prediction that fails gives ``(key, None, ref, "kind\\treason")``."""
    ref = pairing.reference
    item = ref.items[key]
    pi = pairing.preds[key]
    if rb is None or item.hq_size is None:  # an unpaired record: no-reference metrics only
        try:
            return key, decode_image(pb), None, ""
        except BadImage as e:
            return key, None, None, f"unreadable\t{pi.name}: {e}"
    try:
        r = decode_shard_png(rb) if ref.kind == "shards" else decode_image(rb)
    except BadImage as e:
        raise ReferenceError(f"reference {item.name}: {e}") from None
    if r.shape[:2] != tuple(item.hq_size):
        raise ReferenceError(f"reference {item.name}: decodes to {size_text(r.shape[:2])}, "
                             f"its header or record says {size_text(item.hq_size)}")
    try:
        p = decode_image(pb)
    except BadImage as e:
        return key, None, r, f"unreadable\t{pi.name}: {e}"
    if p.shape[:2] != r.shape[:2]:
        return key, None, r, "size_mismatch\t" + (_size_problem(pi, p.shape[:2], item) or "")
    return key, p, r, ""


def iter_decoded(pairing: Pairing, keys: list[str] | None = None, workers: int | None = None,
                 on_problem: Callable[[str, str], None] | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(key, prediction, reference)`` uint8 RGB arrays for each paired key, each decoded exactly once.

    Decoding runs on a few threads (OpenCV and Pillow release the GIL) with bounded
    read-ahead. A prediction whose pixels cannot be decoded, or that decodes to another
    size than its header said, is added to ``pairing.report`` (and passed to
    ``on_problem(kind, text)``) and skipped.
    """
    keys = pairing.keys if keys is None else keys
    workers = workers or min(4, os.cpu_count() or 1)
    ahead = 2 * workers + 2
    with ThreadPoolExecutor(workers, thread_name_prefix="pirs-decode") as pool:
        queue: deque[Future] = deque()

        def drain(n: int):
            while len(queue) > n:
                key, p, r, problem = queue.popleft().result()
                if problem:
                    kind, text = problem.split("\t", 1)
                    getattr(pairing.report, kind).append(text)
                    if on_problem:
                        on_problem(kind, text)
                    continue
                yield key, p, r

        for key, pb, rb in _joined(pairing, keys):
            queue.append(pool.submit(_decode_pair, pairing, key, pb, rb))
            yield from drain(ahead)
        yield from drain(0)
