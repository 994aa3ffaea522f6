"""value_hash is HMAC-SHA256 exactly: erased and suppressed values stored by earlier
releases (hmac.digest) must still be found."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from identity.guards.hashing import EMAIL, PHONE, value_hash


@given(
    key=st.binary(min_size=0, max_size=200),
    kind=st.sampled_from([EMAIL, PHONE]),
    value=st.text(max_size=300),
)
def test_value_hash_is_the_standard_hmac(key: bytes, kind: str, value: str) -> None:
    expected = hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    assert value_hash(key, kind, value) == expected


def test_keys_of_every_length_around_the_block_size() -> None:
    # 64 bytes is SHA-256's block: shorter keys are padded, longer ones hashed first.
    for length in (0, 1, 32, 63, 64, 65, 128):
        key = bytes(range(length % 256)) * (length // 256 + 1)
        key = key[:length]
        for value in ("a@b.co", "+15550000000", ""):
            expected = hmac.digest(key, f"{EMAIL}:{value}".encode(), hashlib.sha256).hex()
            assert value_hash(key, EMAIL, value) == expected


def test_two_keys_give_two_hashes_and_each_stays_its_own() -> None:
    a = value_hash(b"one", EMAIL, "x@y.co")
    b = value_hash(b"two", EMAIL, "x@y.co")
    assert a != b
    assert value_hash(b"one", EMAIL, "x@y.co") == a
