"""Results: the per-image table and the summary JSON, its written-down schema, and ``bench compare``.

The summary JSON (``results_schema_version`` 1.1) has these fields, all present in every
file (``null`` where noted):

``results_schema_version`` (str)
    ``"1.1"``; a reader refuses another major version. (1.1 added ``test_set.name_source`` and
    ``test_set.partial``; 1.0 files lack them and are read as before.)
``method`` {``name`` (str), ``run`` (object | null)}
    ``run`` is the predictions folder's ``run.json`` (checkpoint, prompts...), verbatim.
``test_set`` {``name``, ``name_source`` ("manifest" | "folder"), ``partial`` (bool | null), ``path``, ``kind``
("shards" | "images"), ``fingerprint``, ``fingerprint_source`` (str), ``count`` (int: images in the reference),
``scales`` (list of int), ``recipe`` (object | null: name, version, hash from the shard manifest)}
    ``name`` is the test set's id: the shard manifest's ``test_set.id`` (``degrade testset`` writes
    it: ``diffrestorer-haze``, ``div2k-val``..., the ids of the paper tables), else the reference
    folder's name; ``name_source`` says which. ``partial`` is the manifest's ``test_set.partial``
    (built from a stand-in or with ``--limit``: not the published test set), null without one.
``predictions`` {``path``, ``kind`` ("images" | "shards"), ``fingerprint`` (str), ``count`` (int: paired)}
``count`` (int)
    images scored.
``metrics`` {NAME: {``value``, ``kind``, ``direction`` ("lower" | "higher"), ``lower_better`` (bool), ``count``
(int), ``per_image`` (bool)}}
    ``value`` is the mean over the scored images, or for a distribution metric (FID) the
    value of the whole set (``per_image`` false). Non-finite numbers, which JSON cannot
    hold, are the strings ``"inf"``, ``"-inf"`` and ``"nan"`` (a PSNR of identical images
    is finite in pyiqa: 80 dB, from its eps of 1e-8 under the MSE).
``conventions`` {NAME: object}
    what each metric computed: colour space, Y formula, border crop, data range, variant...
``breakdowns`` {``by_label``: {LABEL: {``count``, ``metrics``: {NAME: value}}}, ``by_combination``: {...}}
    per degradation label (a record counts under each of its labels; ``"none"`` for a
    record without labels) and, for records with several labels, per combination joined
    with ``+`` in the record's order (``"blur+noise+jpeg"``); empty when the reference has
    no labels. Per-image metrics only.
``pairing`` {``allow_missing`` (bool), ``expected`` (int), ``scored`` (int), ``problems`` (int), and for each of
``missing``, ``extra``, ``size_mismatch``, ``unreadable``, ``duplicates``, ``ignored``: {``count``, ``items``}}
``settings`` {``metrics`` (list of str), ``batch_size`` (int), ``device`` (str), ``crop_border`` (int),
``options`` (object: the metric options used, e.g. crop_border, clip_model), ``weights_dir`` (str | null),
``cache_dir`` (str | null)}
``environment`` {``versions`` {package: str | null}, ``python`` (str), ``platform`` (str), ``git`` ({``commit``,
``dirty``} | null)}
``date`` (str, ISO 8601 UTC), ``seconds`` (number), ``per_image`` (str | null: the per-image table's file name,
relative to the JSON)

The per-image table (CSV, or Parquet when the name ends in ``.parquet``) has the columns
``key``, ``prediction`` (file), ``height``, ``width``, one column per per-image metric and
``labels`` (joined with ``+``).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS_SCHEMA_VERSION = "1.1"
PACKAGES = ("pirs", "torch", "torchvision", "pyiqa", "numpy", "pandas", "opencv-python-headless", "pillow",
            "scikit-image", "transformers", "scipy")
NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class ResultsError(ValueError):
    """A results file that does not follow the schema; the message names the file and the field."""


# ---------------------------------------------------------------------------------------------- numbers


def encode_number(x: float) -> float | str:
    """A float for JSON: non-finite values as ``"inf"``, ``"-inf"``, ``"nan"``."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def decode_number(x: float | int | str) -> float:
    """The float a results file stores (inverse of :func:`encode_number`)."""
    return NONFINITE[x] if isinstance(x, str) else float(x)


def _mean(values) -> float:
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return math.nan
    with np.errstate(invalid="ignore"):
        return float(a.mean())


# ---------------------------------------------------------------------------------------------- environment


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions (from package metadata; nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_info() -> dict | None:
    """``{"commit", "dirty"}`` of the pirs checkout this code runs from, or None (installed from a wheel)."""
    here = Path(__file__).resolve().parent
    try:
        top = subprocess.run(["git", "-C", str(here), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10)
        if top.returncode or not (Path(top.stdout.strip()) / "benchmark" / "results.py").is_file():
            return None
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        status = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())} if commit else None


def environment() -> dict:
    """Versions, Python, platform and git state, for the results file."""
    return {"versions": package_versions(), "python": sys.version.split()[0], "platform": platform.platform(),
            "git": git_info()}


# ---------------------------------------------------------------------------------------------- building


def per_image_table(rows: list[dict], metric_names: list[str]):
    """The per-image ``pandas.DataFrame``: key, prediction, height, width, metrics, labels."""
    import pandas as pd

    cols = ["key", "prediction", "height", "width", *metric_names, "labels"]
    return pd.DataFrame(rows, columns=cols)


def breakdowns(table, labels: dict[str, list[str]], metric_names: list[str]) -> dict:
    """Metric means per degradation label and per label combination (see the module docstring)."""
    if not any(labels.values()) or table.empty:
        return {"by_label": {}, "by_combination": {}}
    groups: dict[str, list[int]] = {}
    combos: dict[str, list[int]] = {}
    for i, key in enumerate(table["key"]):
        labs = labels.get(key, [])
        for lab in dict.fromkeys(labs or ["none"]):
            groups.setdefault(lab, []).append(i)
        if len(labs) > 1:
            combos.setdefault("+".join(labs), []).append(i)

    def stats(idx: list[int]) -> dict:
        sub = table.iloc[idx]
        return {"count": len(idx), "metrics": {m: encode_number(_mean(sub[m].to_numpy())) for m in metric_names}}

    return {"by_label": {k: stats(v) for k, v in sorted(groups.items())},
            "by_combination": {k: stats(v) for k, v in sorted(combos.items())}}


def summarize(*, method: str, pairing, specs: list, table, set_values: dict[str, float], conventions: dict,
              settings: dict, allow_missing: bool, seconds: float, per_image_file: str | None) -> dict:
    """The summary dict of one evaluation (``pairing`` a :class:`~pirs.benchmark.pairing.Pairing`)."""
    ref = pairing.reference
    metrics: dict[str, dict] = {}
    per_image = [s.name for s in specs if s.name not in set_values]
    for s in specs:
        if s.name in set_values:
            value, count, per = set_values[s.name], len(table), False
        else:
            value, count, per = _mean(table[s.name].to_numpy()), int(table[s.name].notna().sum()), True
        metrics[s.name] = {"value": encode_number(value), "kind": s.kind, "direction": s.direction,
                           "lower_better": bool(s.lower_better), "count": count, "per_image": per}
    labels = {k: it.labels for k, it in ref.items.items()}
    recipe = None
    if ref.manifest and isinstance(ref.manifest.get("recipe"), dict):
        r = ref.manifest["recipe"]
        recipe = {"name": r.get("name"), "version": r.get("version"), "hash": r.get("hash")}
    pair_info = {"allow_missing": bool(allow_missing), "expected": len(ref.items), "scored": len(table),
                 "problems": pairing.report.problems, **pairing.report.to_dict()}
    return {
        "results_schema_version": RESULTS_SCHEMA_VERSION,
        "method": {"name": method, "run": pairing.run},
        "test_set": {"name": ref.name, "name_source": ref.name_source, "partial": _partial(ref.manifest),
                     "path": str(ref.path.resolve()), "kind": ref.kind,
                     "fingerprint": ref.fingerprint, "fingerprint_source": ref.fingerprint_source,
                     "count": len(ref.items), "scales": sorted({it.scale for it in ref.items.values()}),
                     "recipe": recipe},
        "predictions": {"path": str(pairing.predictions_path.resolve()), "kind": pairing.predictions_kind,
                        "fingerprint": pairing.fingerprint, "count": len(pairing.preds)},
        "count": len(table),
        "metrics": metrics,
        "conventions": {k: _jsonable(v) for k, v in conventions.items()},
        "breakdowns": breakdowns(table, labels, per_image),
        "pairing": pair_info,
        "settings": settings,
        "environment": environment(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(float(seconds), 3),
        "per_image": per_image_file,
    }


def _partial(manifest: dict | None) -> bool | None:
    """The manifest's ``test_set.partial`` (null when the shards were not built as a standard test set)."""
    entry = manifest.get("test_set") if isinstance(manifest, dict) else None
    return bool(entry.get("partial")) if isinstance(entry, dict) and "partial" in entry else None


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float):
        return encode_number(v)
    if v is None or isinstance(v, str | int | bool):
        return v
    return str(v)


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_summary(summary: dict, path: str | os.PathLike) -> Path:
    """Validate ``summary`` and write it as JSON (atomically); return the path."""
    p = Path(path)
    check_summary(summary, str(p))
    text = json.dumps(summary, indent=2, allow_nan=False) + "\n"
    _atomic_write(p, lambda t: t.write_text(text))
    return p


def write_table(table, path: str | os.PathLike) -> Path:
    """Write the per-image table: Parquet for ``.parquet``, else CSV."""
    p = Path(path)
    if p.suffix == ".parquet":
        _atomic_write(p, lambda t: table.to_parquet(t, index=False))
    else:
        _atomic_write(p, lambda t: table.to_csv(t, index=False))
    return p


def read_table(path: str | os.PathLike):
    """Read a per-image table written by :func:`write_table`."""
    import pandas as pd

    p = Path(path)
    return pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p, dtype={"key": str})


# ---------------------------------------------------------------------------------------------- validation

_NUM = (int, float)
_STR_OR_NONE = (str, type(None))


def _at(where: str, field: str, obj: Any, types: tuple | type, what: str) -> Any:
    if isinstance(obj, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ResultsError(f"{where}: field {field!r} must be {what}, got {obj!r}")
    if not isinstance(obj, types):
        raise ResultsError(f"{where}: field {field!r} must be {what}, got {type(obj).__name__} {str(obj)[:60]!r}")
    return obj


def _obj(where: str, field: str, parent: dict, name: str, types, what: str) -> Any:
    full = f"{field}.{name}" if field else name
    if name not in parent:
        raise ResultsError(f"{where}: field {full!r} is missing")
    return _at(where, full, parent[name], types, what)


def _number(where: str, field: str, v: Any) -> None:
    if isinstance(v, str):
        if v not in NONFINITE:
            raise ResultsError(f"{where}: field {field!r} must be a number or one of 'inf', '-inf', 'nan', got {v!r}")
    else:
        _at(where, field, v, _NUM, "a number")


def check_summary(d: Any, where: str = "results") -> dict:
    """Check a summary dict against the schema; raise :class:`ResultsError` naming ``where`` and the field."""
    S = "a string"
    _at(where, "(top level)", d, dict, "a JSON object")
    version = _obj(where, "", d, "results_schema_version", str, S)
    if version.split(".")[0] != RESULTS_SCHEMA_VERSION.split(".")[0]:
        raise ResultsError(f"{where}: field 'results_schema_version' is {version!r}; this pirs reads "
                           f"{RESULTS_SCHEMA_VERSION.split('.')[0]}.x")
    m = _obj(where, "", d, "method", dict, "an object")
    _obj(where, "method", m, "name", str, S)
    _obj(where, "method", m, "run", (dict, type(None)), "an object or null")
    t = _obj(where, "", d, "test_set", dict, "an object")
    for k in ("name", "path", "kind", "fingerprint", "fingerprint_source"):
        _obj(where, "test_set", t, k, str, S)
    _obj(where, "test_set", t, "count", int, "an integer")
    for i, s in enumerate(_obj(where, "test_set", t, "scales", list, "a list")):
        _at(where, f"test_set.scales[{i}]", s, int, "an integer")
    _obj(where, "test_set", t, "recipe", (dict, type(None)), "an object or null")
    if "name_source" in t and t["name_source"] not in ("manifest", "folder"):  # 1.1; absent in 1.0 files
        raise ResultsError(f"{where}: field 'test_set.name_source' must be 'manifest' or 'folder', "
                           f"got {t['name_source']!r}")
    if "partial" in t:
        _at(where, "test_set.partial", t["partial"], (bool, type(None)), "true, false or null")
    p = _obj(where, "", d, "predictions", dict, "an object")
    for k in ("path", "kind", "fingerprint"):
        _obj(where, "predictions", p, k, str, S)
    _obj(where, "predictions", p, "count", int, "an integer")
    _obj(where, "", d, "count", int, "an integer")
    metrics = _obj(where, "", d, "metrics", dict, "an object")
    if not metrics:
        raise ResultsError(f"{where}: field 'metrics' is empty")
    for name, e in metrics.items():
        f = f"metrics.{name}"
        _at(where, f, e, dict, "an object")
        if "value" not in e:
            raise ResultsError(f"{where}: field '{f}.value' is missing")
        _number(where, f"{f}.value", e["value"])
        _obj(where, f, e, "kind", str, S)
        direction = _obj(where, f, e, "direction", str, S)
        lower = _obj(where, f, e, "lower_better", bool, "true or false")
        if direction not in ("lower", "higher") or (direction == "lower") != lower:
            raise ResultsError(f"{where}: field '{f}.direction' is {direction!r}, which does not agree with "
                               f"lower_better={lower}")
        _obj(where, f, e, "count", int, "an integer")
        _obj(where, f, e, "per_image", bool, "true or false")
    conv = _obj(where, "", d, "conventions", dict, "an object")
    for name in metrics:
        if name not in conv:
            raise ResultsError(f"{where}: field 'conventions.{name}' is missing (every metric states its convention)")
        _at(where, f"conventions.{name}", conv[name], dict, "an object")
    b = _obj(where, "", d, "breakdowns", dict, "an object")
    for group in ("by_label", "by_combination"):
        for label, e in _obj(where, "breakdowns", b, group, dict, "an object").items():
            f = f"breakdowns.{group}.{label}"
            _at(where, f, e, dict, "an object")
            _obj(where, f, e, "count", int, "an integer")
            for name, v in _obj(where, f, e, "metrics", dict, "an object").items():
                _number(where, f"{f}.metrics.{name}", v)
    pr = _obj(where, "", d, "pairing", dict, "an object")
    _obj(where, "pairing", pr, "allow_missing", bool, "true or false")
    for k in ("expected", "scored", "problems"):
        _obj(where, "pairing", pr, k, int, "an integer")
    for k in ("missing", "extra", "size_mismatch", "unreadable", "duplicates", "ignored"):
        e = _obj(where, "pairing", pr, k, dict, "an object")
        _obj(where, f"pairing.{k}", e, "count", int, "an integer")
        _obj(where, f"pairing.{k}", e, "items", list, "a list")
    if pr["problems"] and not pr["allow_missing"]:
        raise ResultsError(f"{where}: field 'pairing.problems' is {pr['problems']} but allow_missing is false")
    st = _obj(where, "", d, "settings", dict, "an object")
    for i, n in enumerate(_obj(where, "settings", st, "metrics", list, "a list")):
        _at(where, f"settings.metrics[{i}]", n, str, S)
    _obj(where, "settings", st, "batch_size", int, "an integer")
    _obj(where, "settings", st, "device", str, S)
    _obj(where, "settings", st, "crop_border", int, "an integer")
    _obj(where, "settings", st, "options", dict, "an object")
    _obj(where, "settings", st, "weights_dir", _STR_OR_NONE, "a string or null")
    _obj(where, "settings", st, "cache_dir", _STR_OR_NONE, "a string or null")
    env = _obj(where, "", d, "environment", dict, "an object")
    for k, v in _obj(where, "environment", env, "versions", dict, "an object").items():
        _at(where, f"environment.versions.{k}", v, _STR_OR_NONE, "a string or null")
    _obj(where, "environment", env, "python", str, S)
    _obj(where, "environment", env, "platform", str, S)
    g = _obj(where, "environment", env, "git", (dict, type(None)), "an object or null")
    if g is not None:
        _obj(where, "environment.git", g, "commit", str, S)
        _obj(where, "environment.git", g, "dirty", bool, "true or false")
    date = _obj(where, "", d, "date", str, S)
    try:
        _dt.datetime.fromisoformat(date)
    except ValueError:
        raise ResultsError(f"{where}: field 'date' must be an ISO 8601 date, got {date!r}") from None
    _number(where, "seconds", _obj(where, "", d, "seconds", _NUM, "a number"))
    _obj(where, "", d, "per_image", _STR_OR_NONE, "a string or null")
    return d


def load_results(path: str | os.PathLike) -> dict:
    """Read and validate a results file (see :func:`validate_results`)."""
    return validate_results(path)


def validate_results(path: str | os.PathLike) -> dict:
    """Check a results JSON file against the schema and return it; :class:`ResultsError` names file and field."""
    from pirs.degrade.limits import InputError, read_json_file

    p = Path(path)
    try:
        d = read_json_file(p)  # bounded size and depth; non-finite values are the strings "inf", "nan"
    except OSError as e:
        raise ResultsError(f"{p}: cannot read ({e.strerror or e})") from None
    except InputError as e:
        raise ResultsError(str(e)) from None
    try:
        return check_summary(d, str(p))
    except ResultsError:
        raise
    except (TypeError, AttributeError, KeyError, IndexError, ValueError, RecursionError) as e:
        raise ResultsError(f"{p}: malformed results ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None


# ---------------------------------------------------------------------------------------------- compare


def compare(a: dict, b: dict) -> list[dict]:
    """Per metric present in either: a, b, b - a, and which is better given the direction."""
    rows = []
    names = list(a["metrics"]) + [n for n in b["metrics"] if n not in a["metrics"]]
    for name in names:
        ea, eb = a["metrics"].get(name), b["metrics"].get(name)
        e = ea or eb
        va = decode_number(ea["value"]) if ea else math.nan
        vb = decode_number(eb["value"]) if eb else math.nan
        diff = vb - va if ea and eb and not (math.isinf(va) and math.isinf(vb) and va == vb) else math.nan
        if ea and eb and va == vb:
            diff, better = 0.0, "="
        elif not (ea and eb) or math.isnan(va) or math.isnan(vb):
            better = "n/a"
        else:
            better = "a" if (va < vb) == e["lower_better"] else "b"
        same_conv = a["conventions"].get(name) == b["conventions"].get(name)
        rows.append({"metric": name, "direction": e["direction"], "a": va if ea else None, "b": vb if eb else None,
                     "diff": diff, "better": better, "same_convention": same_conv})
    return rows


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4f}" if abs(v) < 1e5 else f"{v:.4g}"


def format_compare(a: dict, b: dict, name_a: str = "a", name_b: str = "b") -> str:
    """A text table of :func:`compare`, with a header naming both files and any mismatch in what was compared."""
    lines = [f"a = {name_a}: {a['method']['name']} on {a['test_set']['name']} ({a['count']} images)",
             f"b = {name_b}: {b['method']['name']} on {b['test_set']['name']} ({b['count']} images)"]
    if a["test_set"]["fingerprint"] != b["test_set"]["fingerprint"]:
        lines.append("WARNING: different test sets (fingerprints differ); the numbers are not comparable")
    if a["predictions"]["fingerprint"] == b["predictions"]["fingerprint"]:
        lines.append("note: identical predictions (same fingerprint)")
    if a["pairing"]["allow_missing"] or b["pairing"]["allow_missing"]:
        lines.append("note: scored with --allow-missing; counts may differ")
    rows = compare(a, b)
    head = ("metric", "better is", "a", "b", "b - a", "better")
    table = [head] + [(r["metric"] + ("" if r["same_convention"] else " *"), r["direction"], _fmt(r["a"]),
                       _fmt(r["b"]), _fmt(r["diff"]), r["better"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for j, row in enumerate(table):
        cells = zip(row, widths, strict=True)
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(cells)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    if not all(r["same_convention"] for r in rows):
        lines.append("* conventions differ between the two files for this metric")
    return "\n".join(lines)
