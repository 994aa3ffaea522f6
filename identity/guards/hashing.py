"""Keyed hashes of values: what erasure keeps instead of a value (never the value itself).

The key is SUPPRESSION_HASH_KEY when configured (kept outside the database, so a dump
alone cannot test guesses against the hashes). Without it, the hashes that erasure keeps
for events still in flight use a random key generated once and stored in ``service_key``:
weaker (a dump holds key and hashes together), which is why ``"suppress": true`` is
refused without SUPPRESSION_HASH_KEY (docs/OPERATIONS.md, "Erasure").
"""

from __future__ import annotations

import hashlib
import secrets
import weakref
from typing import TYPE_CHECKING

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from identity.storage.models import ServiceKey

if TYPE_CHECKING:
    from hashlib import _Hash

service_key: Table = ServiceKey.__table__  # type: ignore[assignment]

EMAIL, PHONE = "email", "phoneNumber"


def value_hash(key: bytes, kind: str, value: str) -> str:
    """HMAC-SHA256 of ``kind:value`` under ``key``, in hex (RFC 2104).

    The same digest as ``hmac.new(key, msg, sha256).hexdigest()`` (tests/unit/
    test_hashing.py), from the key's two padded states hashed once and copied per value:
    half the CPU of ``hmac.digest``, which sets up the HMAC afresh for every call (a batch
    of 500 events hashes ~1,000 values).
    """
    pads = _pads.get(key)
    if pads is None:
        pads = _pads[key] = _padded_states(key)
    inner = pads[0].copy()
    inner.update(f"{kind}:{value}".encode())
    outer = pads[1].copy()
    outer.update(inner.digest())
    return outer.hexdigest()


def _padded_states(key: bytes) -> tuple[_Hash, _Hash]:
    """SHA-256 states after the key XOR ipad and the key XOR opad blocks (RFC 2104)."""
    block = hashlib.sha256().block_size
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    return inner, outer


#: key -> its padded states; a service has one key (two when a test switches it)
_pads: dict[bytes, tuple[_Hash, _Hash]] = {}


#: The database's own key, per database URL: it never changes once created.
_database_keys: dict[str, bytes] = {}
#: The same, per engine: rendering the URL to look it up cost ~60 us a request.
_engine_keys: weakref.WeakKeyDictionary[Engine, bytes] = weakref.WeakKeyDictionary()


def resolve_key(conn: Connection, configured: str) -> bytes:
    """SUPPRESSION_HASH_KEY, or the database's own key (created on first use)."""
    if configured:
        return configured.encode()
    fast = _engine_keys.get(conn.engine)
    if fast is not None:
        return fast
    cache_key = str(conn.engine.url)
    cached = _database_keys.get(cache_key)
    if cached is not None:
        _engine_keys[conn.engine] = cached
        return cached
    row = conn.execute(select(service_key.c.key).where(service_key.c.id == 1)).first()
    if row is None:
        module = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(
            module.insert(service_key)
            .values(id=1, key=secrets.token_hex(32))
            .on_conflict_do_nothing()
        )
        row = conn.execute(select(service_key.c.key).where(service_key.c.id == 1)).one()
    key = str(row.key).encode()
    _database_keys[cache_key] = key
    _engine_keys[conn.engine] = key
    return key
