"""Standard test sets as data: one YAML file per set in the top-level ``datasets/`` folder.

A test-set file says where its source comes from (data set, split, where to obtain it,
how many files to expect), how the set is made from it (``kind: build`` runs a degradation
recipe on source photos; ``kind: ingest`` reads a paired data set in its authors' layout,
optionally with a further recipe), which metrics the papers report on it, and its
``fingerprint``: the ``content_sha256`` of the built shards' manifest (sha256 over the
shards' sha256s), so two people can tell they hold the same test set. ``degrade testset``
builds one from a local copy of its source and checks the counts and the fingerprint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TESTSET_KEYS = {"name", "version", "description", "citation", "source", "kind", "build", "ingest", "metrics",
                "fingerprint", "notes"}
SOURCE_KEYS = {"dataset", "split", "obtain", "expected", "layout_hint"}
BUILD_KEYS = {"recipe", "num_samples", "crop_size", "scale", "upsample_lq", "seed", "pad", "flip_prob"}
INGEST_KEYS = {"layout", "scale", "match", "then", "crop_size", "seed"}
METRIC_KEYS = {"name", "better", "reported_by"}


class TestsetError(ValueError):
    """A test-set file that cannot be used, or a source that does not match it."""

    __test__ = False  # not a pytest class


@dataclass(frozen=True)
class Source:
    """Where the source comes from and how many files (build: images; ingest: pairs) to expect."""

    dataset: str
    split: str
    obtain: str
    expected: int
    layout_hint: str = ""


@dataclass(frozen=True)
class Testset:
    """One standard test set, loaded from its YAML file and validated."""

    __test__ = False  # not a pytest class

    name: str
    version: str
    description: str
    citation: str
    source: Source
    kind: str
    params: dict[str, Any]
    metrics: list[dict[str, Any]]
    fingerprint: str | None
    path: str
    notes: str = ""
    raw: dict = field(default_factory=dict, repr=False)


def testsets_dir() -> Path:
    """The folder of test-set files: shipped as ``pirs.testsets`` in a wheel, ``datasets/`` in a checkout."""
    checkout = Path(__file__).resolve().parents[1] / "datasets"
    import importlib.util

    try:  # a folder without __init__.py: find it through the import system, not importlib.resources
        spec = importlib.util.find_spec("pirs.testsets")
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if any(Path(loc).glob("*.yaml")):
            return Path(loc)
    return checkout


def list_testsets() -> list[str]:
    """Names of the shipped test sets."""
    return sorted(p.stem for p in testsets_dir().glob("*.yaml"))


def load_testset(name_or_path: str) -> Testset:
    """Load a shipped test set by name or a YAML file by path; raises :class:`TestsetError`."""
    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") and p.is_file()):
        p = testsets_dir() / f"{name_or_path}.yaml"
        if not p.is_file():
            import difflib

            known = list_testsets()
            close = difflib.get_close_matches(name_or_path, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TestsetError(f"unknown test set {name_or_path!r}.{hint} Known: {', '.join(known)}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise TestsetError(f"{p}: not valid YAML: {e}") from None
    return _validate(raw, p)


def _keys(d: Any, allowed: set[str], where: str, required: set[str] = frozenset()) -> dict:
    if not isinstance(d, dict):
        raise TestsetError(f"{where} must be a mapping")
    unknown = set(d) - allowed
    if unknown:
        raise TestsetError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    missing = set(required) - set(d)
    if missing:
        raise TestsetError(f"{where}: missing keys {sorted(missing)}")
    return d


def _validate(raw: Any, p: Path) -> Testset:
    where = str(p)
    _keys(raw, TESTSET_KEYS, where, {"name", "version", "description", "citation", "source", "kind", "metrics"})
    if raw["name"] != p.stem:
        raise TestsetError(f"{where}: name {raw['name']!r} must equal the file name {p.stem!r}")
    src = _keys(raw["source"], SOURCE_KEYS, f"{where}: source", {"dataset", "split", "obtain", "expected"})
    if not isinstance(src["expected"], int) or src["expected"] < 1:
        raise TestsetError(f"{where}: source.expected must be a positive integer, got {src['expected']!r}")
    kind = raw["kind"]
    if kind not in ("build", "ingest"):
        raise TestsetError(f"{where}: kind must be 'build' or 'ingest', got {kind!r}")
    if kind == "build":
        params = dict(_keys(raw.get("build"), BUILD_KEYS, f"{where}: build", {"recipe", "num_samples", "crop_size"}))
    else:
        params = dict(_keys(raw.get("ingest"), INGEST_KEYS, f"{where}: ingest", {"layout"}))
    other = "ingest" if kind == "build" else "build"
    if other in raw:
        raise TestsetError(f"{where}: a kind {kind!r} test set has no {other!r} section")
    metrics = raw["metrics"]
    if not isinstance(metrics, list) or not metrics:
        raise TestsetError(f"{where}: metrics must be a non-empty list")
    for i, m in enumerate(metrics):
        _keys(m, METRIC_KEYS, f"{where}: metrics[{i}]", {"name", "better"})
        if m["better"] not in ("higher", "lower"):
            raise TestsetError(f"{where}: metrics[{i}].better must be 'higher' or 'lower'")
    fp = raw.get("fingerprint")
    if fp is not None and (not isinstance(fp, str) or len(fp) != 64):
        raise TestsetError(f"{where}: fingerprint must be null or a 64-character sha256, got {fp!r}")
    return Testset(name=raw["name"], version=str(raw["version"]), description=raw["description"],
                   citation=raw["citation"], source=Source(**src), kind=kind, params=params, metrics=list(metrics),
                   fingerprint=fp, path=str(p), notes=str(raw.get("notes", "")), raw=raw)


def missing_source_message(ts: Testset, source: str, found: int | None = None, detail: str = "") -> str:
    """What is missing, where it was looked for, and where to obtain it."""
    s = ts.source
    what = f"{s.dataset} ({s.split})"
    head = (f"test set {ts.name}: source folder {source} not found" if found is None else
            f"test set {ts.name}: found {found} of the {s.expected} expected "
            f"{'images' if ts.kind == 'build' else 'pairs'} in {source}")
    lines = [head, f"  it needs {what}: {s.expected} {'images' if ts.kind == 'build' else 'pairs'}"]
    if s.layout_hint:
        lines.append(f"  expected layout under --source: {s.layout_hint}")
    if detail:
        lines.append(f"  {detail}")
    lines.append(f"  obtain it from: {s.obtain}")
    return "\n".join(lines)


def count_source(ts: Testset, source: str) -> tuple[int, str]:
    """How many usable source files (build: images; ingest: pairs) ``source`` holds, and a note on problems."""
    if ts.kind == "build":
        from .sources import discover

        refs, rejects = discover(source)
        return len(refs), (f"{len(rejects)} other files were not images" if rejects else "")
    from .ingest import find_pairs
    from .layouts import get_layout

    cfg = _ingest_config(ts, source, out="", workers=1, progress=False)
    pairs, problems = find_pairs(cfg, get_layout(cfg.layout))
    note = ""
    if problems:
        first = problems[0]
        note = f"{len(problems)} pairing problems, first: {first['path']}: {first['reason']}"
    return len(pairs), note


def _ingest_config(ts: Testset, source: str, out: str, workers: int, progress: bool):
    from .ingest import IngestConfig

    p = ts.params
    match = p.get("match")
    return IngestConfig(layout=p["layout"], input=source, out=out, scale=p.get("scale"), crop_size=p.get("crop_size"),
                        then=p.get("then"), match=[match] if isinstance(match, str) else match,
                        seed=int(p.get("seed", 0)), workers=workers, progress=progress)


def build_testset(ts: Testset, source: str, out: str, workers: int = 1, progress: bool = True,
                  allow_partial: bool = False, overwrite: bool = False, limit: int | None = None) -> dict:
    """Build ``ts`` from a local copy of its source into ``out``; returns the manifest.

    Raises :class:`TestsetError` when the source is absent or holds another number of
    files than the test set expects (unless ``allow_partial``). ``limit`` builds only the
    first samples (a quick look; such a build is not the test set and has another fingerprint).
    """
    if not Path(source).is_dir():
        raise TestsetError(missing_source_message(ts, source))
    found, note = count_source(ts, source)
    if found == 0 or (found != ts.source.expected and not allow_partial):
        raise TestsetError(missing_source_message(ts, source, found, note))
    if ts.kind == "build":
        from .build import BuildConfig, build

        p = ts.params
        n = int(p["num_samples"]) if limit is None else min(limit, int(p["num_samples"]))
        cfg = BuildConfig(pipeline=p["recipe"], input=source, out=out, num_samples=n,
                          seed=int(p.get("seed", 0)), crop_size=int(p["crop_size"]), scale=p.get("scale"),
                          upsample_lq=p.get("upsample_lq"), pad=bool(p.get("pad", False)),
                          flip_prob=float(p.get("flip_prob", 0.0)), workers=workers, progress=progress,
                          overwrite=overwrite)
        return build(cfg).manifest
    from .ingest import ingest

    cfg = _ingest_config(ts, source, out, workers, progress)
    cfg.overwrite, cfg.limit = overwrite, limit
    return ingest(cfg).manifest


def describe(ts: Testset) -> list[str]:
    """Lines for ``degrade testset --show``."""
    s = ts.source
    how = ", ".join(f"{k}={v}" for k, v in sorted(ts.params.items()))
    return [f"{ts.name} (version {ts.version}): {ts.description}", f"  citation: {ts.citation}",
            f"  source: {s.dataset}, {s.split}: {s.expected} {'images' if ts.kind == 'build' else 'pairs'}; "
            f"obtain: {s.obtain}", f"  {ts.kind}: {how}",
            "  metrics: " + ", ".join(f"{m['name']} ({m['better']})" for m in ts.metrics),
            f"  fingerprint: {ts.fingerprint or 'not published yet (build it and compare)'}"]


def as_dict(ts: Testset) -> dict:
    """The test set as plain data (for JSON output)."""
    d = dataclasses.asdict(ts)
    d.pop("raw")
    return d
