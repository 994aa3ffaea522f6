"""The request mix of the sync benchmark, shared by wrk (bench/identify.lua) and pgbench.

Weights are percentages of requests:

- ``lookup``: a seeded person's email, phone, or both (one third each): rule 4;
- ``hot``: one of ten hot persons, email and phone: rule 4 on contended keys;
- ``secondary``: a seeded person's email with a new phone: rule 2;
- ``person``: a new email and a new phone: rule 1;
- ``merge``: one person's email with another person's phone: rule 3.
"""

from __future__ import annotations

MIX = {"lookup": 68, "hot": 5, "secondary": 12, "person": 12, "merge": 3}


def mix_spec(mix: dict[str, int] = MIX) -> str:
    """The form the Lua script reads from BENCH_MIX."""
    return ",".join(f"{name}:{weight}" for name, weight in mix.items())
