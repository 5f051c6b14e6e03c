"""Property-based fuzzing (issue 18) of the three readers of untrusted files: shards, recipes, results.

Whatever the bytes, each reader returns something valid or raises its own error class
(``ShardError``, ``RecipeError``, ``ResultsError``), never anything else. Examples are few
(``max_examples``) so the module runs in seconds, and no example database is written.
"""

from __future__ import annotations

import copy
import io
import json
import tarfile
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pirs.degrade.limits import bad_key_reason  # noqa: E402
from pirs.degrade.schema import empty_record  # noqa: E402
from pirs.degrade.shards import ShardError, index_samples, iter_records, parse_record  # noqa: E402

FUZZ = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20)

names = st.lists(st.sampled_from(list("ab0.-_/\\ \n\x00\x1b\u202e") + ["json", "png", "..", "a.json", "a.lq.png"]),
                max_size=6).map("".join)


def _tar(entries: list[tuple[str, bytes, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data, kind in entries:
            ti = tarfile.TarInfo(name or "x")
            if kind == b"link":
                ti.type, ti.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _valid_record(key: str) -> bytes:
    rec = empty_record()
    rec.update(key=key, ops="[]")
    return json.dumps(rec).encode()


members = st.tuples(names, st.one_of(st.binary(max_size=64), json_values.map(lambda v: json.dumps(v).encode()),
                                     st.sampled_from([_valid_record("a"), _valid_record("b"), b"[" * 3000])),
                    st.sampled_from([b"file", b"file", b"file", b"link"]))


def _check_reader(path: Path) -> None:
    try:
        keys = [k for k, _, _ in iter_records(path)]
    except ShardError:
        keys = None
    if keys is not None:
        assert len(keys) == len(set(keys)) and all(bad_key_reason(k) is None for k in keys)
    try:
        index = index_samples(path)
    except ShardError:
        return
    assert all(bad_key_reason(k) is None for k in index)


@FUZZ
@given(st.lists(members, max_size=6))
def test_shard_reader_on_generated_tars(tmp_path_factory, entries):
    path = tmp_path_factory.mktemp("fz") / "shard-000000.tar"
    path.write_bytes(_tar(entries))
    _check_reader(path)


@FUZZ
@given(st.data())
def test_shard_reader_on_damaged_shards(tmp_path_factory, data):
    good = _tar([("a.json", _valid_record("a"), b"file"), ("a.lq.png", b"png", b"file"),
                 ("b.json", _valid_record("b"), b"file")])
    raw = bytearray(good)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    path = tmp_path_factory.mktemp("fz") / "shard-000000.tar"
    path.write_bytes(bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw))
    _check_reader(path)


@FUZZ
@given(json_values, st.text(max_size=6))
def test_record_parser(value, key):
    rec = empty_record()
    rec.update(key="k", ops="[]")
    for candidate in (json.dumps(value).encode(), json.dumps(dict(rec, key=key)).encode(),
                      json.dumps(dict(rec, ops=json.dumps(value))).encode()):
        try:
            out = parse_record(candidate, "fuzz", "k")
        except ShardError:
            continue
        assert out["key"] == "k"


# ---------------------------------------------------------------- recipes

ops = st.sampled_from(["blur", "noise", "jpeg", "resize", "haze", 5, None, [1], {"a": 1}])
stage = st.fixed_dictionaries({"op": ops}, optional={"p": json_values, "sigma": json_values, "id": json_values,
                                                     "range": st.lists(st.floats(allow_nan=True), max_size=3)})
recipe_docs = st.fixed_dictionaries(
    {"name": st.text(max_size=5), "version": st.text(max_size=3)},
    optional={"stages": st.lists(stage | json_values, max_size=4), "include": json_values | st.just("realesrgan"),
              "scale": json_values, "prompt": json_values, "override": json_values, "extra": json_values})


@FUZZ
@given(recipe_docs)
def test_recipe_loader_on_generated_recipes(tmp_path_factory, doc):
    from pirs.degrade.recipe import RecipeError, load_recipe

    p = tmp_path_factory.mktemp("fz") / "r.yaml"
    p.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        load_recipe(str(p))
    except RecipeError as e:
        assert "\n" not in str(e)


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_recipe_loader_on_arbitrary_bytes(tmp_path_factory, data):
    from pirs.degrade.recipe import RecipeError, load_recipe

    p = tmp_path_factory.mktemp("fz") / "r.yaml"
    p.write_bytes(b"name: x\nversion: '1'\n" + data)
    try:
        load_recipe(str(p))
    except RecipeError as e:
        assert "\n" not in str(e)


# ---------------------------------------------------------------- results


@pytest.fixture(scope="module")
def valid_results(tmp_path_factory) -> dict:
    """A real results summary: two records scored with PSNR."""
    from test_hostile import png, sample, shard_folder

    from pirs.benchmark.evaluate import EvalConfig, evaluate

    base = tmp_path_factory.mktemp("res")
    ref = shard_folder(base / "ref", [sample("a"), sample("b")])
    pred = base / "pred"
    pred.mkdir()
    for k in ("a", "b"):
        (pred / f"{k}.png").write_bytes(png(seed=5))
    evaluate(EvalConfig(predictions=str(pred), reference=str(ref), metrics="psnr", out=str(base / "r.json"),
                        device="cpu", cache_dir=None, progress=False))
    return json.loads((base / "r.json").read_text())


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@FUZZ
@given(st.data())
def test_results_validator_on_mutated_results(tmp_path_factory, valid_results, data):
    from pirs.benchmark.results import ResultsError, validate_results

    d = copy.deepcopy(valid_results)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(d) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = d
        for k in path[:-1]:
            parent = parent[k]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(json_values)
    p = tmp_path_factory.mktemp("fz") / "r.json"
    p.write_text(json.dumps(d))
    try:
        validate_results(p)
    except ResultsError:
        pass


@FUZZ
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_results_validator_on_arbitrary_files(tmp_path_factory, data):
    from pirs.benchmark.results import ResultsError, validate_results

    p = tmp_path_factory.mktemp("fz") / "r.json"
    p.write_bytes(data)
    with pytest.raises(ResultsError):
        validate_results(p)
