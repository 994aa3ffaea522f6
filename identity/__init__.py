"""Identity reconciliation domain: the rules of SPEC.md, free of Flask and Celery."""
