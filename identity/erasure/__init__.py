"""Erasure: the right to be forgotten, and the repair of a wrong merge (SPEC "Erasure")."""
