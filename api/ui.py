"""The explorer page (``GET /ui/``): static HTML, JS and CSS that call the JSON API.

The page is served without a key (it holds no data); every data call it makes sends
the key the person typed, like any other API client. Nothing here reads the
database. Every answer carries a Content-Security-Policy that forbids inline
scripts, so a value that slipped into the page as markup could still not run.
"""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response, redirect, send_from_directory
from flask.typing import ResponseReturnValue

bp = Blueprint("ui", __name__)

STATIC_DIR = str(resources.files("api").joinpath("static", "ui"))

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # The files change with each release; the browser revalidates (cheap 304s).
    "Cache-Control": "no-cache",
}


@bp.after_request
def _secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@bp.get("/ui", endpoint="root")
def root() -> ResponseReturnValue:
    return redirect("/ui/", code=308)


@bp.get("/ui/", endpoint="index")
def index() -> ResponseReturnValue:
    return send_from_directory(STATIC_DIR, "index.html")


@bp.get("/ui/<path:name>", endpoint="asset")
def asset(name: str) -> ResponseReturnValue:
    # send_from_directory refuses paths that leave STATIC_DIR (404).
    return send_from_directory(STATIC_DIR, name)
