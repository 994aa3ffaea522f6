"""Asynchronous events: validation and routing (``messages``); applying batches, the
inbox and dead letters (``services``)."""
