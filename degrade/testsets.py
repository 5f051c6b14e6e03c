"""Standard test sets as data: one YAML file per set in the top-level ``datasets/`` folder.

A test-set file says where its source comes from (data set, split, where to obtain it,
how many files to expect), how the set is made from it (``kind: build`` runs a degradation
recipe on source photos; ``kind: ingest`` reads a paired data set in its authors' layout,
optionally with a further recipe), which metrics the papers report on it, and its
``fingerprint``: the ``content_sha256`` of the built shards' manifest (sha256 over the
shards' sha256s), so two people can tell they hold the same test set. ``degrade testset``
builds one from a local copy of its source and checks the counts and the fingerprint.

A test set has one id: its file name, which is also the ``test_set`` id of the paper tables
in ``leaderboard/papers/`` (``diffrestorer-haze``, ``mscoco-val3000-parameterized``, ...). The
built shards' ``manifest.json`` carries it in ``test_set.id``, ``bench evaluate`` copies it
into the results' ``test_set.name``, and the leaderboard puts the scores on that paper page.
Older names stay usable as ``aliases`` (``dr-haze``); :func:`load_testset` resolves them.
``paper_tables`` lists the (paper CSV, setting) parts that report the set; a set no paper
table reports says why in ``no_paper_table_reason``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTSET_KEYS = {"name", "version", "description", "citation", "source", "kind", "build", "ingest", "metrics",
                "fingerprint", "notes", "aliases", "paper_tables", "no_paper_table_reason"}
SOURCE_KEYS = {"dataset", "split", "obtain", "expected", "layout_hint"}
BUILD_KEYS = {"recipe", "num_samples", "crop_size", "scale", "upsample_lq", "seed", "pad", "flip_prob"}
INGEST_KEYS = {"layout", "scale", "match", "then", "crop_size", "seed"}
METRIC_KEYS = {"name", "better", "reported_by"}
PAPER_TABLE_KEYS = {"file", "setting"}


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
    aliases: tuple[str, ...] = ()
    paper_tables: tuple[dict, ...] = ()  # {file: a CSV of leaderboard/papers/, setting: its setting id}
    no_paper_table_reason: str = ""
    raw: dict = field(default_factory=dict, repr=False)

    def manifest_entry(self, partial: bool) -> dict:
        """The ``test_set`` field of the built shards' manifest: the id every later step uses."""
        return {"id": self.name, "version": self.version, "aliases": list(self.aliases), "partial": bool(partial)}


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
    """Ids of the shipped test sets (their file names; aliases not included)."""
    return sorted(p.stem for p in testsets_dir().glob("*.yaml"))


def testset_aliases() -> dict[str, str]:
    """Every alias of a shipped test set and the id it stands for.

    Raises :class:`TestsetError` when an alias is also a test-set id or is claimed by two sets:
    a name must resolve to exactly one test set.
    """
    ids = set(list_testsets())
    out: dict[str, str] = {}
    for name in sorted(ids):
        for alias in _read(testsets_dir() / f"{name}.yaml").get("aliases") or []:
            if alias in ids:
                raise TestsetError(f"test set {name}: alias {alias!r} is the id of another test set")
            if alias in out:
                raise TestsetError(f"alias {alias!r} is claimed by both {out[alias]} and {name}")
            out[str(alias)] = name
    return out


def canonical_id(name: str) -> str | None:
    """The id of the shipped test set called ``name`` (its id or one of its aliases), else None."""
    if name in set(list_testsets()):
        return name
    return testset_aliases().get(name)


def _read(p: Path) -> Any:
    from .limits import InputError, read_yaml_file

    try:
        return read_yaml_file(p, max_bytes=1 << 20)
    except OSError as e:
        raise TestsetError(f"{p}: cannot be read ({e.strerror or e})") from None
    except InputError as e:
        raise TestsetError(str(e)) from None


def load_testset(name_or_path: str) -> Testset:
    """Load a shipped test set by id or alias, or a YAML file by path; raises :class:`TestsetError`.

    An alias loads the set it stands for: the returned ``name`` is always the canonical id.
    """
    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") and p.is_file()):
        canonical = canonical_id(name_or_path)
        if canonical is None:
            import difflib

            known = list_testsets()
            close = difflib.get_close_matches(name_or_path, known + sorted(testset_aliases()), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TestsetError(f"unknown test set {name_or_path!r}.{hint} Known: {', '.join(known)}")
        p = testsets_dir() / f"{canonical}.yaml"
    return _validate(_read(p), p)


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
    aliases = raw.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        raise TestsetError(f"{where}: aliases must be a list of names, got {aliases!r}")
    if raw["name"] in aliases:
        raise TestsetError(f"{where}: the id {raw['name']!r} cannot also be one of its aliases")
    tables = raw.get("paper_tables")
    tables = [] if tables is None else tables
    if not isinstance(tables, list):
        raise TestsetError(f"{where}: paper_tables must be a list of {{file, setting}}, got {tables!r}")
    for i, t in enumerate(tables):
        _keys(t, PAPER_TABLE_KEYS, f"{where}: paper_tables[{i}]", PAPER_TABLE_KEYS)
    reason = raw.get("no_paper_table_reason")
    if reason is not None and (not isinstance(reason, str) or not reason.strip()):
        raise TestsetError(f"{where}: no_paper_table_reason must be a sentence, got {reason!r}")
    if reason and tables:
        raise TestsetError(f"{where}: a test set with paper_tables has no no_paper_table_reason")
    return Testset(name=raw["name"], version=str(raw["version"]), description=raw["description"],
                   citation=raw["citation"], source=Source(**src), kind=kind, params=params, metrics=list(metrics),
                   fingerprint=fp, path=str(p), notes=str(raw.get("notes", "")), aliases=tuple(aliases),
                   paper_tables=tuple(dict(t) for t in tables), no_paper_table_reason=str(reason or ""), raw=raw)


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
    The manifest's ``test_set`` field names the set by its id (``partial`` when the source
    held another count or ``limit`` was given).
    """
    if not Path(source).is_dir():
        raise TestsetError(missing_source_message(ts, source))
    found, note = count_source(ts, source)
    if found == 0 or (found != ts.source.expected and not allow_partial):
        raise TestsetError(missing_source_message(ts, source, found, note))
    entry = ts.manifest_entry(partial=limit is not None or found != ts.source.expected)
    if ts.kind == "build":
        from .build import BuildConfig, build

        p = ts.params
        n = int(p["num_samples"]) if limit is None else min(limit, int(p["num_samples"]))
        cfg = BuildConfig(pipeline=p["recipe"], input=source, out=out, num_samples=n,
                          seed=int(p.get("seed", 0)), crop_size=int(p["crop_size"]), scale=p.get("scale"),
                          upsample_lq=p.get("upsample_lq"), pad=bool(p.get("pad", False)),
                          flip_prob=float(p.get("flip_prob", 0.0)), workers=workers, progress=progress,
                          overwrite=overwrite, test_set=entry)
        return build(cfg).manifest
    from .ingest import ingest

    cfg = _ingest_config(ts, source, out, workers, progress)
    cfg.overwrite, cfg.limit, cfg.test_set = overwrite, limit, entry
    return ingest(cfg).manifest


def describe(ts: Testset) -> list[str]:
    """Lines for ``degrade testset --show``."""
    s = ts.source
    how = ", ".join(f"{k}={v}" for k, v in sorted(ts.params.items()))
    tables = (", ".join(f"{t['file']} ({t['setting']})" for t in ts.paper_tables) if ts.paper_tables
              else f"none ({ts.no_paper_table_reason or 'not stated'})")
    return [f"{ts.name} (version {ts.version}): {ts.description}",
            f"  aliases: {', '.join(ts.aliases) if ts.aliases else 'none'}", f"  citation: {ts.citation}",
            f"  source: {s.dataset}, {s.split}: {s.expected} {'images' if ts.kind == 'build' else 'pairs'}; "
            f"obtain: {s.obtain}", f"  {ts.kind}: {how}",
            "  metrics: " + ", ".join(f"{m['name']} ({m['better']})" for m in ts.metrics),
            f"  paper tables: {tables}",
            f"  fingerprint: {ts.fingerprint or 'not published yet (build it and compare)'}"]


def as_dict(ts: Testset) -> dict:
    """The test set as plain data (for JSON output)."""
    d = dataclasses.asdict(ts)
    d.pop("raw")
    return d
