"""Storage and locking: engines and the unit of work, the schema's models, the locks."""
