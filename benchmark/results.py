"""Results: the per-image table and the summary JSON, its written-down schema, and ``bench compare``.

The summary JSON (``results_schema_version`` 1.2) has these fields, all present in every
file (``null`` where noted):

``results_schema_version`` (str)
    ``"1.2"``; a reader refuses another major version. (1.1 added ``test_set.name_source`` and
    ``test_set.partial``; 1.2 added ``metrics.*.std``, ``metrics.*.ci95``, ``statistics`` and
    ``weights``; older files lack them and are read as before.)
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
(int), ``per_image`` (bool), ``std`` (number | null), ``ci95`` ([low, high] | null)}}
    ``value`` is the mean over the scored images, or for a distribution metric (FID, KID) the
    value of the whole set (``per_image`` false). ``std`` is the sample standard deviation over
    the images (ddof 1) and ``ci95`` the 95% percentile-bootstrap interval of the mean (see
    ``statistics``); both null for a distribution metric, ``ci95`` also when a value is not
    finite or bootstrapping is off. Non-finite numbers, which JSON cannot hold, are the
    strings ``"inf"``, ``"-inf"`` and ``"nan"`` (identical images give 80 dB in pyiqa's
    ``psnr``, from its eps of 1e-8 under the MSE, and ``inf`` in BasicSR's ``psnr-ycbcr``).
``statistics`` {``interval`` (str), ``confidence`` (0.95), ``resamples`` (int, 0 = off), ``seed`` (int), ``std``
(str)}
    how ``std`` and ``ci95`` were computed: every metric is resampled with the same image
    indices (numpy ``default_rng(seed)``), so the interval is reproducible from the per-image
    table (``bench validate`` does).
``weights`` [{``path`` (relative to the weights dir), ``sha256``, ``metrics`` (list), ``check`` ("sha256" | "name
hash" | "none" | "unverified")}]
    every weight file the metrics read, with its SHA-256 and how it was checked against its
    publication (``unverified``: its content does not match the hash in its name, accepted
    with ``PIRS_UNVERIFIED_WEIGHTS``).
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

RESULTS_SCHEMA_VERSION = "1.2"
BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95
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


# ---------------------------------------------------------------------------------------------- statistics


def bootstrap_indices(n: int, resamples: int, seed: int):
    """``(resamples, n)`` image indices drawn with replacement by ``default_rng(seed)``, in chunks of rows (every
    metric of a results file, and both sides of a paired comparison, use the same draws)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 4_000_000 // max(n, 1)))
    done = 0
    while done < resamples:
        k = min(chunk, resamples - done)
        yield rng.integers(0, n, size=(k, n))
        done += k


def bootstrap_ci(values, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                 confidence: float = CONFIDENCE) -> list[float] | None:
    """The percentile-bootstrap interval ``[low, high]`` of the mean of ``values`` (None: fewer than 2 values,
    a non-finite value, or ``resamples`` 0)."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    if resamples <= 0 or v.size < 2 or not np.isfinite(v).all():
        return None
    means = np.concatenate([v[idx].mean(axis=1) for idx in bootstrap_indices(v.size, resamples, seed)])
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return [float(low), float(high)]


def sample_std(values) -> float:
    """The sample standard deviation (ddof 1); NaN for fewer than 2 values or a non-finite one."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    if v.size < 2 or not np.isfinite(v).all():
        return math.nan
    return float(v.std(ddof=1))


def statistics_settings(resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict:
    """The summary's ``statistics`` entry."""
    return {"interval": "percentile bootstrap of the mean over images; every metric resampled with the same "
                        "image indices", "confidence": CONFIDENCE, "resamples": int(resamples), "seed": int(seed),
            "std": "sample standard deviation over the images (ddof 1)"}


def metric_statistics(values, stats: dict) -> dict:
    """``{"std", "ci95"}`` of one metric's per-image values under the summary's ``statistics`` settings."""
    ci = bootstrap_ci(values, stats["resamples"], stats["seed"], stats["confidence"])
    return {"std": encode_number(sample_std(values)), "ci95": ci}


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


def metric_entries(table, specs: list, set_values: dict[str, float], stats: dict) -> dict[str, dict]:
    """The summary's ``metrics`` from the per-image table (and the set metrics' values)."""
    metrics: dict[str, dict] = {}
    for s in specs:
        if s.name in set_values:
            value, count, per = set_values[s.name], len(table), False
            extra = {"std": None, "ci95": None}
        else:
            col = table[s.name].to_numpy()
            value, count, per = _mean(col), int(table[s.name].notna().sum()), True
            extra = metric_statistics(col, stats)
        metrics[s.name] = {"value": encode_number(value), "kind": s.kind, "direction": s.direction,
                           "lower_better": bool(s.lower_better), "count": count, "per_image": per, **extra}
    return metrics


def summarize(*, method: str, pairing, specs: list, table, set_values: dict[str, float], conventions: dict,
              settings: dict, allow_missing: bool, seconds: float, per_image_file: str | None,
              statistics: dict | None = None, weights: list[dict] | None = None) -> dict:
    """The summary dict of one evaluation (``pairing`` a :class:`~pirs.benchmark.pairing.Pairing`)."""
    ref = pairing.reference
    stats = statistics or statistics_settings()
    per_image = [s.name for s in specs if s.name not in set_values]
    metrics = metric_entries(table, specs, set_values, stats)
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
        "statistics": stats,
        "conventions": {k: _jsonable(v) for k, v in conventions.items()},
        "breakdowns": breakdowns(table, labels, per_image),
        "pairing": pair_info,
        "settings": settings,
        "weights": [dict(w) for w in (weights or [])],
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
        if e.get("std") is not None:
            _number(where, f"{f}.std", e["std"])
        if e.get("ci95") is not None:
            ci = _at(where, f"{f}.ci95", e["ci95"], list, "[low, high] or null")
            if len(ci) != 2:
                raise ResultsError(f"{where}: field '{f}.ci95' must be [low, high], got {len(ci)} numbers")
            for i, x in enumerate(ci):
                _at(where, f"{f}.ci95[{i}]", x, _NUM, "a number")
            if ci[0] > ci[1]:
                raise ResultsError(f"{where}: field '{f}.ci95' is [{ci[0]}, {ci[1]}]: low above high")
    if "statistics" in d:
        st = _obj(where, "", d, "statistics", dict, "an object")
        _obj(where, "statistics", st, "resamples", int, "an integer")
        _obj(where, "statistics", st, "seed", int, "an integer")
        _number(where, "statistics.confidence", _obj(where, "statistics", st, "confidence", _NUM, "a number"))
    if "weights" in d:
        for i, w in enumerate(_obj(where, "", d, "weights", list, "a list")):
            f = f"weights[{i}]"
            _at(where, f, w, dict, "an object")
            _obj(where, f, w, "path", str, S)
            sha = _obj(where, f, w, "sha256", str, S)
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise ResultsError(f"{where}: field '{f}.sha256' must be 64 hex digits, got {sha[:70]!r}")
            _obj(where, f, w, "metrics", list, "a list")
            _obj(where, f, w, "check", str, S)
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


def per_image_path(results_path: str | os.PathLike, d: dict) -> Path | None:
    """The per-image table a results file names (relative to the file), or None when it names none."""
    name = d.get("per_image")
    if not name:
        return None
    p = Path(name)
    return p if p.is_absolute() else Path(results_path).resolve().parent / p


def paired(table_a, table_b, metric: str, lower_better: bool, resamples: int = BOOTSTRAP_RESAMPLES,
           seed: int = 0) -> dict | None:
    """Paired statistics of one metric over the images both tables scored (finite values on both sides).

    ``diff`` is the mean of b - a per image, ``ci95`` its paired-bootstrap interval (images resampled
    together), ``p`` the two-sided Wilcoxon signed-rank p-value (zero differences dropped; 1.0 when every
    difference is zero), ``b_wins`` / ``a_wins`` / ``ties`` the fractions of images where b, a or neither
    is better given the direction. None when the metric is not in both tables.
    """
    import numpy as np

    if table_a is None or table_b is None or metric not in table_a or metric not in table_b:
        return None
    m = table_a[["key", metric]].merge(table_b[["key", metric]], on="key", suffixes=("_a", "_b"))
    va, vb = m[f"{metric}_a"].to_numpy(np.float64), m[f"{metric}_b"].to_numpy(np.float64)
    ok = np.isfinite(va) & np.isfinite(vb)
    va, vb = va[ok], vb[ok]
    n = int(va.size)
    if n == 0:
        return {"n": 0, "diff": math.nan, "ci95": None, "p": math.nan, "b_wins": math.nan, "a_wins": math.nan,
                "ties": math.nan}
    d = vb - va
    b_better = d < 0 if lower_better else d > 0
    a_better = d > 0 if lower_better else d < 0
    if np.all(d == 0):
        p = 1.0
    elif n < 2:
        p = math.nan
    else:
        from scipy.stats import wilcoxon

        p = float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    return {"n": n, "diff": float(d.mean()), "ci95": bootstrap_ci(d, resamples, seed), "p": p,
            "b_wins": float(b_better.mean()), "a_wins": float(a_better.mean()),
            "ties": float(1.0 - b_better.mean() - a_better.mean())}


def compare(a: dict, b: dict, tables: tuple | None = None, resamples: int = BOOTSTRAP_RESAMPLES,
            seed: int = 0) -> list[dict]:
    """Per metric present in either: a, b, b - a, which is better given the direction, and (with the two
    per-image tables) the paired statistics of :func:`paired`."""
    table_a, table_b = tables or (None, None)
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
        stats = paired(table_a, table_b, name, e["lower_better"], resamples, seed) \
            if ea and eb and ea.get("per_image") and eb.get("per_image") else None
        rows.append({"metric": name, "direction": e["direction"], "a": va if ea else None, "b": vb if eb else None,
                     "diff": diff, "better": better, "same_convention": same_conv, "paired": stats})
    return rows


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4f}" if abs(v) < 1e5 else f"{v:.4g}"


def _fmt_p(p: float) -> str:
    if math.isnan(p):
        return "-"
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


def format_compare(a: dict, b: dict, name_a: str = "a", name_b: str = "b", tables: tuple | None = None,
                   resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, notes: list[str] = ()) -> str:
    """A text table of :func:`compare`, with a header naming both files and any mismatch in what was compared."""
    lines = [f"a = {name_a}: {a['method']['name']} on {a['test_set']['name']} ({a['count']} images)",
             f"b = {name_b}: {b['method']['name']} on {b['test_set']['name']} ({b['count']} images)"]
    if a["test_set"]["fingerprint"] != b["test_set"]["fingerprint"]:
        lines.append("WARNING: different test sets (fingerprints differ); the numbers are not comparable")
    if a["predictions"]["fingerprint"] == b["predictions"]["fingerprint"]:
        lines.append("note: identical predictions (same fingerprint)")
    if a["pairing"]["allow_missing"] or b["pairing"]["allow_missing"]:
        lines.append("note: scored with --allow-missing; counts may differ")
    lines += [f"note: {n}" for n in notes]
    rows = compare(a, b, tables, resamples, seed)
    head = ("metric", "better is", "a", "b", "b - a", "95% CI of b - a", "p", "b wins", "better")
    table = [head]
    for r in rows:
        st = r["paired"]
        ci = st["ci95"] if st else None
        table.append((r["metric"] + ("" if r["same_convention"] else " *"), r["direction"], _fmt(r["a"]),
                      _fmt(r["b"]), _fmt(r["diff"]), f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "-",
                      _fmt_p(st["p"]) if st else "-",
                      f"{100 * st['b_wins']:.0f}%" if st and not math.isnan(st["b_wins"]) else "-", r["better"]))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for j, row in enumerate(table):
        cells = zip(row, widths, strict=True)
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(cells)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    if not all(r["same_convention"] for r in rows):
        lines.append("* conventions differ between the two files for this metric")
    counts = sorted({r["paired"]["n"] for r in rows if r["paired"]})
    if counts:
        lines.append(f"paired over the images both per-image files scored ({', '.join(map(str, counts))}): 95% CI "
                     f"by paired bootstrap ({resamples} resamples, seed {seed}), p by the two-sided Wilcoxon "
                     "signed-rank test, b wins = share of images where b is better")
    elif tables is None or None in tables:
        lines.append("no paired statistics: a per-image file is missing (see the notes)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- re-deriving


def _same(x: Any, y: Any, rel: float = 1e-9) -> bool:
    """Two results numbers (possibly encoded) agree: equal non-finite values, or finite within ``rel``."""
    a, b = decode_number(x), decode_number(y)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def rederive(path: str | os.PathLike, d: dict, check_files: bool = True) -> list[str]:
    """Re-derive what a results file's own files allow; raise :class:`ResultsError` naming the first mismatch.

    From the per-image table it names: the image count, each per-image metric's count and mean, its
    ``std`` and ``ci95`` (with the recorded ``statistics``), and the breakdowns by label. With
    ``check_files``, from the files named where they exist on this machine: the test set's and the
    predictions' fingerprints (and count), and each weight file's SHA-256. Returns notes on what could
    not be checked (a path that is not here).
    """
    where = str(path)
    notes: list[str] = []
    table_path = per_image_path(path, d)
    if table_path is None:
        notes.append("no per-image file named: count and means not re-derived")
    else:
        if not table_path.is_file():
            raise ResultsError(f"{where}: field 'per_image' names {table_path}, which does not exist")
        try:
            table = read_table(table_path)
        except (OSError, ValueError) as e:
            raise ResultsError(f"{where}: the per-image file {table_path} cannot be read ({e})") from None
        _rederive_table(where, d, table, table_path)
    if check_files:
        notes += _rederive_files(where, d)
    return notes


def _rederive_table(where: str, d: dict, table, table_path: Path) -> None:
    name = table_path.name
    if "key" not in table:
        raise ResultsError(f"{where}: the per-image file {name} has no 'key' column")
    dup = table["key"][table["key"].duplicated()]
    if len(dup):
        raise ResultsError(f"{where}: the per-image file {name} lists key {dup.iloc[0]!r} twice")
    if d["count"] != len(table):
        raise ResultsError(f"{where}: field 'count' is {d['count']} but the per-image file {name} has {len(table)} "
                           "images")
    if d["pairing"]["scored"] != len(table):
        raise ResultsError(f"{where}: field 'pairing.scored' is {d['pairing']['scored']} but the per-image file "
                           f"{name} has {len(table)} images")
    stats = d.get("statistics")
    per_image = []
    for metric, e in d["metrics"].items():
        if not e["per_image"]:
            continue
        per_image.append(metric)
        if metric not in table:
            raise ResultsError(f"{where}: metric {metric!r} is per image but the per-image file {name} has no such "
                               "column")
        col = table[metric].to_numpy(dtype="float64")
        count = int(table[metric].notna().sum())
        if e["count"] != count:
            raise ResultsError(f"{where}: field 'metrics.{metric}.count' is {e['count']} but the per-image file "
                               f"{name} has {count} values")
        mean = _mean(col)
        if not _same(e["value"], mean):
            raise ResultsError(f"{where}: field 'metrics.{metric}.value' is {e['value']} but the mean of the per-image "
                               f"file {name} is {mean!r}")
        if stats and "std" in e:
            again = metric_statistics(col, stats)
            if (e["std"] is None) != (again["std"] is None) or (e["std"] is not None
                                                                 and not _same(e["std"], again["std"])):
                raise ResultsError(f"{where}: field 'metrics.{metric}.std' is {e['std']} but the per-image file "
                                   f"{name} gives {again['std']}")
            ci, ci2 = e.get("ci95"), again["ci95"]
            if (ci is None) != (ci2 is None) or (ci is not None and not all(map(_same, ci, ci2))):
                raise ResultsError(f"{where}: field 'metrics.{metric}.ci95' is {ci} but the per-image file {name} "
                                   f"with the recorded seed {stats['seed']} and {stats['resamples']} resamples gives "
                                   f"{ci2}")
    if "labels" in table:
        labels = {str(k): (str(v).split("+") if isinstance(v, str) and v else [])
                  for k, v in zip(table["key"], table["labels"], strict=True)}
        again = breakdowns(table, labels, per_image)
        for group in ("by_label", "by_combination"):
            have, want = d["breakdowns"][group], again[group]
            if set(have) != set(want):
                extra = sorted(set(have) ^ set(want))[0]
                raise ResultsError(f"{where}: field 'breakdowns.{group}' lists {sorted(have)} but the per-image file "
                                   f"{name} gives {sorted(want)} (first difference: {extra!r})")
            for label, e in have.items():
                if e["count"] != want[label]["count"]:
                    raise ResultsError(f"{where}: field 'breakdowns.{group}.{label}.count' is {e['count']} but the "
                                       f"per-image file {name} gives {want[label]['count']}")
                for metric, v in e["metrics"].items():
                    w = want[label]["metrics"].get(metric, "nan")
                    if not _same(v, w):
                        raise ResultsError(f"{where}: field 'breakdowns.{group}.{label}.metrics.{metric}' is {v} but "
                                           f"the per-image file {name} gives {w}")


def _rederive_files(where: str, d: dict) -> list[str]:
    from .pairing import PairingError, ReferenceError, load_reference, pair
    from .weights import sha256_of

    notes = []
    ts, pr = d["test_set"], d["predictions"]
    ref_path = Path(ts["path"])
    reference = None
    if not ref_path.exists() or "://" in ts["path"]:
        notes.append(f"test set {ts['path']} is not here: its fingerprint was not re-derived")
    else:
        try:
            reference = load_reference(ref_path)
        except (ReferenceError, OSError, ValueError) as e:
            raise ResultsError(f"{where}: the test set {ref_path} named by 'test_set.path' cannot be read "
                               f"({e})") from None
        if reference.fingerprint != ts["fingerprint"]:
            raise ResultsError(f"{where}: field 'test_set.fingerprint' is {ts['fingerprint'][:16]}... but the test set "
                               f"at {ref_path} has {reference.fingerprint[:16]}...")
        if len(reference.items) != ts["count"]:
            raise ResultsError(f"{where}: field 'test_set.count' is {ts['count']} but the test set at {ref_path} has "
                               f"{len(reference.items)} records")
    pred_path = Path(pr["path"])
    if reference is None or not pred_path.exists() or "://" in pr["path"]:
        notes.append(f"predictions {pr['path']} not re-fingerprinted (" + ("not here" if not pred_path.exists()
                     else "needs the test set") + ")")
    else:
        try:
            pairing = pair(pred_path, reference)
        except (PairingError, ReferenceError, OSError, ValueError) as e:
            raise ResultsError(f"{where}: the predictions {pred_path} cannot be paired again ({e})") from None
        if pairing.fingerprint != pr["fingerprint"]:
            raise ResultsError(f"{where}: field 'predictions.fingerprint' is {pr['fingerprint'][:16]}... but the "
                               f"predictions at {pred_path} have {pairing.fingerprint[:16]}...")
    wdir = d["settings"].get("weights_dir")
    for i, w in enumerate(d.get("weights") or []):
        f = Path(wdir) / w["path"] if wdir else None
        if f is None or not f.is_file():
            notes.append(f"weight file {w['path']} is not here: its SHA-256 was not re-derived")
            continue
        sha = sha256_of(f)
        if sha != w["sha256"]:
            raise ResultsError(f"{where}: field 'weights[{i}].sha256' is {w['sha256'][:16]}... but {f} has "
                               f"{sha[:16]}...")
    return notes
