"""The results cache table on SQLite and PostgreSQL, and ``script-ec2 results``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy.engine import Engine

from script_ec2 import results
from script_ec2.errors import UsageError

VERSIONS = {"sessions-dc-fast-weekday": {"version": 3, "content_hash": "ab" * 32}}


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    from script_ec2.db import migrate
    from script_ec2.db.engine import connect

    engine = connect(db_url, check_schema=False)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"uncontrolled_96": rng.random((96, 7)), "uncontrolled_1440": rng.random((1440, 7))}


def _save(engine: Engine, key: str, **kwargs: Any) -> results.StoredResult:
    values: dict[str, Any] = {
        "algorithm": "load-forecast",
        "canonical": json.dumps({"params": {"num_evs": 10, "seed": 1}}),
        "model_versions": VERSIONS,
        "meta": {"vehicles": 10},
        "arrays": _arrays(),
        "compute_seconds": 1.5,
    }
    values.update(kwargs)
    return results.save(engine, key=key, **values)


def test_save_and_lookup_round_trip(engine: Engine) -> None:
    key = "1" * 64
    assert results.lookup(engine, key) is None
    saved = _save(engine, key)
    assert saved.hits == 0 and saved.last_hit_at is None
    found = results.lookup(engine, key)
    assert found is not None
    assert found.params == {"num_evs": 10, "seed": 1}
    assert found.model_versions == VERSIONS
    assert found.meta == {"vehicles": 10}
    for name, array in _arrays().items():
        np.testing.assert_array_equal(found.arrays[name], array)
        assert found.arrays[name].dtype == np.float64
    assert found.hits == 1 and found.last_hit_at is not None
    assert found.created_at.tzinfo is not None and found.compute_seconds == 1.5
    assert results.lookup(engine, key).hits == 2  # type: ignore[union-attr]


def test_direct_lookup_reads_and_counts_like_the_ordinary_one(engine: Engine, db_url: str) -> None:
    """The driver-only hit path (no SQLAlchemy) gives the same result and counts the hit."""
    key = "5" * 64
    assert results.lookup_direct(db_url, key) is None  # a miss
    saved = _save(engine, key)
    direct = results.lookup_direct(db_url, key)
    assert direct is not None
    for name in ("key", "algorithm", "params", "model_versions", "meta", "canonical"):
        assert getattr(direct, name) == getattr(saved, name), name
    assert direct.created_at == saved.created_at and direct.compute_seconds == 1.5
    assert direct.hits == 1 and direct.last_hit_at is not None
    assert direct.last_hit_at.tzinfo is not None
    for name, array in _arrays().items():
        np.testing.assert_array_equal(direct.arrays[name], array)
    ordinary = results.lookup(engine, key)  # reads what the direct path wrote
    assert ordinary is not None and ordinary.hits == 2
    assert ordinary.last_hit_at is not None and ordinary.last_hit_at >= direct.last_hit_at


def test_direct_lookup_leaves_what_it_does_not_handle_to_the_ordinary_path(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    from sqlalchemy import text

    from script_ec2.db.revision import script_head

    key = "6" * 64
    _save(engine, key)
    with engine.begin() as conn:  # a schema at another revision than this code's
        conn.execute(text("UPDATE alembic_version SET version_num = '0004'"))
    assert results.lookup_direct(db_url, key) is None
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": script_head()})
    assert results.lookup_direct(db_url, key) is not None
    missing = f"sqlite:///{tmp_path / 'absent.db'}"
    assert results.lookup_direct(missing, key) is None
    assert not (tmp_path / "absent.db").exists()  # not created behind SQLAlchemy's back
    assert results.lookup_direct(db_url + ("&" if "?" in db_url else "?") + "x=1", key) is None
    assert results.lookup_direct("mysql://nobody@127.0.0.1/none", key) is None
    assert results.lookup(engine, key, count_hit=False).hits == 1  # type: ignore[union-attr]


def test_arrays_are_stored_as_binary_npz(engine: Engine) -> None:
    from sqlalchemy import select

    from script_ec2.db.models import ResultRecord

    _save(engine, "2" * 64)
    with engine.connect() as conn:
        blob = conn.execute(select(ResultRecord.arrays)).scalar_one()
    assert bytes(blob[:2]) == b"PK"  # a zip archive of .npy members
    assert len(blob) < 1.1 * (96 + 1440) * 7 * 8


def test_a_second_save_of_one_key_returns_the_first_row(engine: Engine) -> None:
    key = "3" * 64
    first = _save(engine, key, meta={"worker": 1})
    second = _save(engine, key, meta={"worker": 2}, compute_seconds=9.0)
    assert second.meta == {"worker": 1} and second.created_at == first.created_at
    assert len(results.list_results(engine)) == 1


def test_replace_overwrites_and_resets_hits(engine: Engine) -> None:
    key = "4" * 64
    first = _save(engine, key)
    results.lookup(engine, key)
    again = _save(engine, key, meta={"v": 2}, compute_seconds=0.5, replace=True)
    assert again.meta == {"v": 2} and again.hits == 0 and again.compute_seconds == 0.5
    assert again.created_at >= first.created_at
    fresh = _save(engine, "5" * 64, replace=True)  # replace of an absent key inserts it
    assert fresh.key == "5" * 64


def test_list_newest_first_filter_and_limit(engine: Engine) -> None:
    for i, algorithm in enumerate(["load-forecast", "load-control", "load-forecast"]):
        _save(engine, f"{i}" * 64, algorithm=algorithm)
    listed = results.list_results(engine)
    assert [r.key[0] for r in listed] == ["2", "1", "0"]
    assert [r.key[0] for r in results.list_results(engine, algorithm="load-forecast")] == ["2", "0"]
    assert len(results.list_results(engine, limit=1)) == 1
    assert listed[0].size_bytes > 0


def test_get_and_remove_by_prefix(engine: Engine) -> None:
    _save(engine, "abcdef" + "0" * 58)
    _save(engine, "abcdef" + "1" * 58)
    _save(engine, "123456" + "0" * 58)
    assert results.get(engine, "123456").key == "123456" + "0" * 58
    with pytest.raises(UsageError, match="ambiguous"):
        results.get(engine, "abcdef")
    with pytest.raises(UsageError, match="at least 6"):
        results.get(engine, "abc")
    with pytest.raises(UsageError, match="invalid result key"):
        results.get(engine, "abcdef%")
    with pytest.raises(results.ResultNotFound):
        results.get(engine, "ffffff")
    assert results.remove(engine, "abcdef1") == "abcdef" + "1" * 58
    assert results.get(engine, "ABCDEF").key == "abcdef" + "0" * 58
    with pytest.raises(results.ResultNotFound):
        results.remove(engine, "abcdef1")


def test_prune_older_than(engine: Engine) -> None:
    _save(engine, "6" * 64)
    _save(engine, "7" * 64)
    assert results.prune(engine, timedelta(days=30)) == 0
    later = results.now() + timedelta(days=31)
    assert results.prune(engine, timedelta(days=30), at=later) == 2
    assert results.list_results(engine) == []


def test_describe_summarises_arrays(engine: Engine) -> None:
    described = results.describe(_save(engine, "8" * 64))
    assert described["arrays"]["uncontrolled_96"]["shape"] == [96, 7]
    assert described["model_versions"] == VERSIONS
    json.dumps(described)  # plain JSON values only


def test_core_table_matches_the_orm_model() -> None:
    """results.py queries a Core table(); it must keep the ORM model's columns and types."""
    from script_ec2.db.models import ResultRecord

    orm = ResultRecord.__table__.columns
    core = results._table().columns
    assert [c.name for c in core] == [c.name for c in orm]
    for column in orm:
        assert repr(core[column.name].type) == repr(column.type), column.name


def test_lookup_reads_arrays_without_decoding_them(engine: Engine) -> None:
    from script_ec2.registry import NpzArrays

    key = "9" * 64
    _save(engine, key)
    found = results.lookup(engine, key)
    assert found is not None and isinstance(found.arrays, NpzArrays)
    assert sorted(found.arrays) == ["uncontrolled_1440", "uncontrolled_96"]
    table = _arrays()["uncontrolled_96"]
    assert found.arrays.float64_columns("uncontrolled_96") == (96, table.T.tolist())


def test_model_versions_encoding_round_trips() -> None:
    text = results.encode_model_versions(VERSIONS)
    assert json.loads(text) == {
        "sessions-dc-fast-weekday": f"sessions-dc-fast-weekday@3 {'ab' * 32}"
    }
    assert results.decode_model_versions(text) == VERSIONS


# --------------------------------------------------------------------------- the commands


@pytest.fixture
def stored(
    cli: Callable[..., Any], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Engine]:
    monkeypatch.setenv("SCRIPT_EC2_DATABASE_URL", db_url)
    assert cli("db", "upgrade").exit_code == 0
    from script_ec2.db.engine import connect

    engine = connect(db_url)
    _save(engine, "a" * 64, algorithm="load-control")
    _save(engine, "b" * 64)
    yield engine
    engine.dispose()


def test_results_list_show_rm_prune(stored: Engine, cli: Callable[..., Any]) -> None:
    listed = cli("results", "list", "--format", "json")
    assert listed.exit_code == 0
    rows = json.loads(listed.stdout)
    assert [r["key"] for r in rows] == ["b" * 64, "a" * 64]
    assert set(rows[0]) == {
        "key",
        "algorithm",
        "created_at",
        "compute_seconds",
        "hits",
        "last_hit_at",
        "size_bytes",
    }
    table = cli("results", "list", "--algorithm", "load-control")
    assert "a" * 64 in table.stdout and "b" * 64 not in table.stdout

    shown = cli("results", "show", "aaaaaa", "--format", "json")
    assert shown.exit_code == 0
    document = json.loads(shown.stdout)
    assert document["algorithm"] == "load-control" and document["params"]["num_evs"] == 10
    assert document["arrays"]["uncontrolled_1440"]["shape"] == [1440, 7]
    assert "arrays.uncontrolled_96" in cli("results", "show", "a" * 64).stdout

    missing = cli("results", "show", "cccccc")
    assert missing.exit_code == 2 and "no stored result with key 'cccccc'" in missing.stderr
    removed = cli("results", "rm", "aaaaaaa")
    assert removed.exit_code == 0 and "removed result " + "a" * 64 in removed.stderr
    assert cli("results", "rm", "aaaaaaa").exit_code == 2

    bad = cli("results", "prune", "--older-than", "soon")
    assert bad.exit_code == 2 and "--older-than" in bad.stderr
    kept = cli("results", "prune", "--older-than", "30d")
    assert kept.exit_code == 0 and "removed 0 result(s)" in kept.stderr
    gone = cli("results", "prune", "--older-than", "0s")
    assert gone.exit_code == 0 and "removed 1 result(s)" in gone.stderr
    assert json.loads(cli("results", "list", "--format", "json").stdout) == []
