"""Guards against junk and shared values: blocked, generic and suppressed values are ignored
by every write path (SPEC "Guards against junk and shared values")."""
