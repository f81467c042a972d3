"""The declarative tables, typed with SQLAlchemy 2.0 ``Mapped`` annotations.

Every table hangs off :class:`Base`, whose metadata carries a constraint naming convention: Alembic
needs predictable constraint names to alter or drop them later, on PostgreSQL and in SQLite batch
mode alike. A schema change here needs a new migration in ``db/migrations/versions``; the test
suite compares these models with the migrated database.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class County(Base):
    """A California county, by its bare name ("Santa Clara", not "Santa Clara County")."""

    __tablename__ = "counties"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    # The lookup file's arbitrary 0-57 index (not a FIPS code), kept to join legacy files.
    lookup_number: Mapped[int] = mapped_column(unique=True)

    zip_codes: Mapped[list[ZipCode]] = relationship(back_populates="county")


class ZipCode(Base):
    """A 5-digit zip code as text, so leading zeros survive, and the county it lies in."""

    __tablename__ = "zip_codes"
    __table_args__ = (CheckConstraint("length(code) = 5", name="code_length"),)

    code: Mapped[str] = mapped_column(String(5), primary_key=True)
    city: Mapped[str] = mapped_column(Text)
    county_id: Mapped[int] = mapped_column(ForeignKey("counties.id"), index=True)

    county: Mapped[County] = relationship(back_populates="zip_codes")


class LedgerEntry(Base):
    """What sync knows of one object under a data source (the ``data_uri``): never its rows.

    ``status`` is ``ok`` or ``quarantined``. A quarantined object keeps the ``cache_stem`` of its
    last good version (if any), so its previous rows keep counting until a corrected file arrives.
    """

    __tablename__ = "ledger"
    __table_args__ = (UniqueConstraint("source", "key", name="uq_ledger_source_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(1024))
    key: Mapped[str] = mapped_column(String(1024))
    etag: Mapped[str] = mapped_column(String(256))
    size: Mapped[int] = mapped_column(BigInteger)
    last_modified: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sha256: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    rows: Mapped[int] = mapped_column(BigInteger)
    counties: Mapped[str] = mapped_column(Text)  # JSON list of county names
    cache_stem: Mapped[str | None] = mapped_column(String(64))
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)


class StatsDirty(Base):
    """Counties whose statistics need a rebuild: set with a ledger change, cleared by it."""

    __tablename__ = "stats_dirty"

    source: Mapped[str] = mapped_column(String(1024), primary_key=True)
    county: Mapped[str] = mapped_column(Text, primary_key=True)


class CountyStats(Base):
    __tablename__ = "stats_county"

    source: Mapped[str] = mapped_column(String(1024), primary_key=True)
    county: Mapped[str] = mapped_column(Text, primary_key=True)
    sessions: Mapped[int] = mapped_column(BigInteger)
    energy_kwh: Mapped[float] = mapped_column(Float)
    first_date: Mapped[date | None] = mapped_column(Date)
    last_date: Mapped[date | None] = mapped_column(Date)
    zips: Mapped[int] = mapped_column(Integer)
    stations: Mapped[int] = mapped_column(Integer)
    peak_power_kw: Mapped[float] = mapped_column(Float)
    peak_daily_energy_kwh: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CountyMonthStats(Base):
    __tablename__ = "stats_county_month"

    source: Mapped[str] = mapped_column(String(1024), primary_key=True)
    county: Mapped[str] = mapped_column(Text, primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    month: Mapped[int] = mapped_column(Integer, primary_key=True)
    sessions: Mapped[int] = mapped_column(BigInteger)
    energy_kwh: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CountySegmentStats(Base):
    __tablename__ = "stats_county_segment"

    source: Mapped[str] = mapped_column(String(1024), primary_key=True)
    county: Mapped[str] = mapped_column(Text, primary_key=True)
    segment: Mapped[str] = mapped_column(String(32), primary_key=True)
    sessions: Mapped[int] = mapped_column(BigInteger)
    energy_kwh: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ZipStats(Base):
    __tablename__ = "stats_zip"

    source: Mapped[str] = mapped_column(String(1024), primary_key=True)
    zip: Mapped[str] = mapped_column(String(5), primary_key=True)
    county: Mapped[str] = mapped_column(Text, index=True)
    sessions: Mapped[int] = mapped_column(BigInteger)
    energy_kwh: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ModelRecord(Base):
    """A model version in the registry, so results can name exactly what produced them.

    The registry's files are the source of truth; this row mirrors them (name, version, content
    hash) for joins and for the frontend. ``content_hash`` identifies the content across registries.
    """

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "content_hash", name="uq_model_versions_name_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    content_hash: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    registry_uri: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    metrics: Mapped[str] = mapped_column(Text)  # JSON
    published_to: Mapped[str | None] = mapped_column(String(1024))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ResultRecord(Base):
    """One computed result, keyed by the sha256 of its canonical parameters.

    ``arrays`` holds the result's arrays as deterministic ``.npz`` bytes (see
    :func:`script_ec2.registry.npz_bytes`), not JSON lists of numbers; ``meta`` is small JSON.
    """

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    algorithm: Mapped[str] = mapped_column(String(64))
    params: Mapped[str] = mapped_column(Text)  # canonical JSON
    model_versions: Mapped[str] = mapped_column(Text)  # JSON {name: "name@version content_hash"}
    meta: Mapped[str] = mapped_column(Text)  # JSON
    arrays: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    compute_seconds: Mapped[float] = mapped_column(Float)
    hits: Mapped[int] = mapped_column(Integer, default=0)
    last_hit_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobRecord(Base):
    """An asynchronous job; this table, not the broker, is the source of truth for its state.

    ``state`` is queued, running, succeeded or failed. At most one queued-or-running job exists
    per ``key`` (a partial unique index), so identical in-flight requests join one computation.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index(
            "uq_jobs_inflight_key",
            "key",
            unique=True,
            sqlite_where=text("state IN ('queued', 'running')"),
            postgresql_where=text("state IN ('queued', 'running')"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # fit or sync
    algorithm: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[str] = mapped_column(Text)  # JSON
    state: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    result_key: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    notify: Mapped[str] = mapped_column(Text, default="{}")  # JSON: webhook URL, email
    notifications: Mapped[str] = mapped_column(Text, default="[]")  # JSON delivery log
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # When the broker accepted its message; None while only the table knows the job (embedded
    # jobs never get one). See jobs.never_enqueued.
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    summary: Mapped[str | None] = mapped_column(Text)  # JSON a runner left, e.g. a sync summary
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
