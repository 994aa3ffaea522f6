"""Errors mapped at one edge: domain codes to JSON 4xx, unavailability to 503."""

from __future__ import annotations

import logging

from flask import Flask, g, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from identity.errors import IdentityError, InvalidInput, Unavailable

log = logging.getLogger(__name__)


def error_response(status: int, message: str, **extra: object) -> ResponseReturnValue:
    return jsonify({"error": message, **extra}), status


def register(app: Flask) -> None:
    @app.errorhandler(InvalidInput)
    def _invalid(error: InvalidInput) -> ResponseReturnValue:
        extra = {"field": error.field} if error.field else {}
        # A well-formed request whose every value a guard ignores is 422, not 400.
        status = 422 if error.code == "all_ignored" else 400
        return error_response(status, error.message, **extra)

    @app.errorhandler(IdentityError)
    def _domain(error: IdentityError) -> ResponseReturnValue:
        """Domain refusals by code: not_found 404, conflict 409, unprocessable 422."""
        status = {"not_found": 404, "conflict": 409, "unprocessable": 422}.get(error.code)
        if status is None:
            return _unexpected(error)
        return error_response(status, str(error))

    @app.errorhandler(Unavailable)
    def _unavailable(error: Unavailable) -> ResponseReturnValue:
        g.unavailable_reason = error.reason  # counted by api.metrics
        log.warning("503: %s (%s, %s)", error, error.reason, type(error.__cause__).__name__)
        body, status = error_response(503, str(error))  # type: ignore[misc]
        return body, status, {"Retry-After": "1"}

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> ResponseReturnValue:
        messages = {
            413: "request body is larger than the limit",
            404: "no such endpoint",
            405: "method not allowed for this endpoint",
        }
        status = error.code or 500
        custom = error.description != type(error).description
        message = error.description if custom else messages.get(status, error.name)
        # Keep what the exception says beyond its body (405's Allow), never its Content-Type.
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        return jsonify({"error": message or error.name}), status, headers

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> ResponseReturnValue:
        log.exception("unhandled error")
        return error_response(500, "internal error")
