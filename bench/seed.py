"""Seed benchmark databases by COPY, with realistic cluster shapes.

Each size gets a template database (``identity_bench_<label>_tpl``), built once by
``alembic upgrade head`` plus one COPY and reused while its seed version matches; every
measured run works on a fresh copy of it (``CREATE DATABASE ... TEMPLATE``), so runs
start from the same state and the merges of one run never leak into the next.

Key scheme (the wrk Lua script and the pgbench scripts derive the same keys):

- person ``p`` (0 <= p < people): row 0 is its primary, email ``u<p>@seed.test``,
  phone ``9`` + ``p`` in 10 digits; secondary ``i`` alternates between a new email with
  the primary's phone (odd ``i``) and the primary's email with a new phone (even ``i``),
  so every pair is distinct (I5) and every value stays inside its cluster (I3);
- cluster sizes: 55% one row, 25% two, 12% three, 6% four to six, 1.9% seven to twenty,
  0.1% 21 to 200 (about 2.1 rows a person);
- growth clusters (``--growth``): ``g<name>.<i>@grow.test`` with ``name`` in
  ``one`` (1 row), ``hundred`` (100), ``tenk`` (10,000), ``mergea`` and ``mergeb``
  (10,000 each), phone ``7<name index><i in 8 digits>``.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg2

from tests.support.db import ADMIN_URL, migrate  # the same Alembic set-up as the tests

SEED_VERSION = "3"
BASE_TIME = datetime(2024, 1, 1, tzinfo=UTC)
GROWTH_CLUSTERS = {"one": 1, "hundred": 100, "tenk": 10_000, "mergea": 10_000, "mergeb": 10_000}
HOT_PEOPLE = 10  # persons 0..9 are the hot keys of the load mix


def schema_head() -> str:
    """The newest Alembic revision: a template built on an older schema is rebuilt."""
    from alembic.script import ScriptDirectory

    from tests.support.db import alembic_config

    return str(ScriptDirectory.from_config(alembic_config("")).get_current_head())


def person_email(p: int, i: int = 0) -> str:
    return f"u{p}@seed.test" if i == 0 else f"u{p}.{i}@seed.test"


def person_phone(p: int, i: int = 0) -> str:
    return f"9{p:010d}" if i == 0 else f"8{p:010d}{i:04d}"


def growth_email(name: str, i: int = 0) -> str:
    return f"g{name}.{i}@grow.test"


def growth_phone(name: str, i: int = 0) -> str:
    return f"7{list(GROWTH_CLUSTERS).index(name)}{i:08d}"


def cluster_size(rng: random.Random) -> int:
    x = rng.random()
    if x < 0.55:
        return 1
    if x < 0.80:
        return 2
    if x < 0.92:
        return 3
    if x < 0.98:
        return rng.randint(4, 6)
    if x < 0.999:
        return rng.randint(7, 20)
    return rng.randint(21, 200)


def cluster_rows(size: int, email0: str, phone0: str, new_email, new_phone):  # type: ignore[no-untyped-def]
    """(email, phone) of each row of one cluster; row 0 is the primary."""
    yield email0, phone0
    for i in range(1, size):
        if i % 2:
            yield new_email(i), phone0
        else:
            yield email0, new_phone(i)


@dataclass(frozen=True)
class SeedPlan:
    label: str
    contacts: int
    growth: bool

    @property
    def template(self) -> str:
        return f"identity_bench_{self.label}_tpl"

    @property
    def database(self) -> str:
        return f"identity_bench_{self.label}"

    @property
    def tag(self) -> str:
        return (
            f"bench-seed v{SEED_VERSION} contacts={self.contacts} growth={int(self.growth)}"
            f" schema={schema_head()}"
        )


def generate(plan: SeedPlan) -> Iterator[tuple[int, str, str, int | None]]:
    """(id, email, phone, linked_id) for every row, ids ascending from 1."""
    rng = random.Random(20261128)
    next_id = 1
    p = 0
    growth_rows = sum(GROWTH_CLUSTERS.values()) if plan.growth else 0
    budget = plan.contacts - growth_rows
    while next_id <= budget:
        size = min(cluster_size(rng), budget - next_id + 1)
        primary = next_id
        for i, (email, phone) in enumerate(
            cluster_rows(
                size,
                person_email(p),
                person_phone(p),
                lambda i, p=p: person_email(p, i),
                lambda i, p=p: person_phone(p, i),
            )
        ):
            yield next_id, email, phone, None if i == 0 else primary
            next_id += 1
        p += 1
    if plan.growth:
        for name, size in GROWTH_CLUSTERS.items():
            primary = next_id
            rows = cluster_rows(
                size,
                growth_email(name),
                growth_phone(name),
                lambda i, n=name: growth_email(n, i),
                lambda i, n=name: growth_phone(n, i),
            )
            for i, (email, phone) in enumerate(rows):
                yield next_id, email, phone, None if i == 0 else primary
                next_id += 1


def people_count(plan: SeedPlan) -> int:
    """How many seeded persons the load mix may pick from (the Lua script needs it)."""
    rng = random.Random(20261128)
    budget = plan.contacts - (sum(GROWTH_CLUSTERS.values()) if plan.growth else 0)
    n, people = 0, 0
    while n < budget:
        n += cluster_size(rng)
        people += 1
    return people


def _copy_chunks(plan: SeedPlan, chunk_rows: int = 200_000) -> Iterator[io.StringIO]:
    buf = io.StringIO()
    rows = 0
    for row_id, email, phone, linked in generate(plan):
        # One row per millisecond of creation time: ids and ages agree, so every
        # primary is the oldest row of its cluster (I2).
        ts = (BASE_TIME + timedelta(milliseconds=row_id)).isoformat()
        if linked is None:
            buf.write(f"{row_id}\t{phone}\t{email}\t\\N\tprimary\t{ts}\t{ts}\n")
        else:
            buf.write(f"{row_id}\t{phone}\t{email}\t{linked}\tsecondary\t{ts}\t{ts}\n")
        rows += 1
        if rows == chunk_rows:
            buf.seek(0)
            yield buf
            buf, rows = io.StringIO(), 0
    buf.seek(0)
    yield buf


def _dsn(database: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(ADMIN_URL).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


def admin_connect() -> psycopg2.extensions.connection:
    conn = psycopg2.connect(_dsn("postgres"))
    conn.autocommit = True
    return conn


def database_url(database: str) -> str:
    return _dsn(database).replace("postgresql://", "postgresql+psycopg2://", 1)


def template_tag(database: str) -> str | None:
    conn = admin_connect()
    with conn.cursor() as cur:
        cur.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (database,),
        )
        row = cur.fetchone()
    conn.close()
    return row[0] if row else None


def seed_template(plan: SeedPlan, log=print) -> None:  # type: ignore[no-untyped-def]
    """Build ``plan.template`` unless an up-to-date one exists."""
    if template_tag(plan.template) == plan.tag:
        log(f"seed: {plan.template} is up to date ({plan.tag})")
        return
    admin = admin_connect()
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{plan.template}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{plan.template}"')
    migrate(database_url(plan.template))
    started = datetime.now()
    conn = psycopg2.connect(_dsn(plan.template))
    with conn, conn.cursor() as cur:
        for chunk in _copy_chunks(plan):
            cur.copy_expert(
                "COPY contact (id, phone_number, email, linked_id, link_precedence,"
                " created_at, updated_at) FROM STDIN",
                chunk,
            )
        cur.execute("SELECT setval(pg_get_serial_sequence('contact', 'id'), max(id)) FROM contact")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE contact")
    conn.close()
    with admin.cursor() as cur:
        cur.execute(f"COMMENT ON DATABASE \"{plan.template}\" IS '{plan.tag}'")
    admin.close()
    seconds = (datetime.now() - started).total_seconds()
    log(f"seed: {plan.template}: {plan.contacts:,} contacts by COPY in {seconds:.1f} s")


def fresh_copy(plan: SeedPlan) -> str:
    """(Re)create ``plan.database`` from its template; returns its SQLAlchemy URL."""
    conn = admin_connect()
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{plan.database}" WITH (FORCE)')
        cur.execute(
            f'CREATE DATABASE "{plan.database}" TEMPLATE "{plan.template}" STRATEGY FILE_COPY'
        )
    conn.close()
    return database_url(plan.database)


def drop(database: str) -> None:
    conn = admin_connect()
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    conn.close()
