"""`make bench`: load generators, the database ceiling and the report they write."""
