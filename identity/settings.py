"""The one reader of the environment.

Every other module receives a :class:`Settings`; tests build one explicitly.
A ``.env`` file in the working directory is read first (real environment
variables win over it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

#: Used when neither DATABASE_URL nor DATABASE_URI is set: a SQLite file in the
#: working directory, so a newcomer can run the service anywhere.
EMBEDDED_DATABASE_FILE = "identity.sqlite3"


class Secret:
    """A string that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__


class SettingsError(ValueError):
    """A setting has a value the service cannot use."""


def _int(
    env: Mapping[str, str], name: str, default: int, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name} must be <= {maximum}, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (the first is the default), case-insensitive."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return choices[0]
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _database_url(real: Mapping[str, str], dotenv: Mapping[str, str]) -> str:
    """DATABASE_URL, or the older DATABASE_URI; blank counts as unset.

    The real environment wins over .env under either name: a database exported in
    the shell is never overridden by a .env file that uses the other name.
    """
    for source in (real, dotenv):
        for name in ("DATABASE_URL", "DATABASE_URI"):
            value = source.get(name, "").strip()
            if value:
                return value
    return ""


def _mask_url(url: str) -> str:
    """Hide the password of a database or broker URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


@dataclass(frozen=True)
class Settings:
    database_url: Secret = field(default_factory=lambda: Secret(""))
    port: int = 8000
    bind_host: str = "127.0.0.1"
    default_phone_region: str | None = None
    db_pool_size: int = 5
    db_max_overflow: int = 5
    db_pool_timeout_s: float = 5.0
    db_statement_timeout_ms: int = 10_000
    db_lock_timeout_ms: int = 5_000
    db_retry_attempts: int = 8
    max_body_bytes: int = 64 * 1024
    redis_url: Secret = field(default_factory=lambda: Secret(""))
    identity_partitions: int = 4
    events_max_batch: int = 1000  # events per POST /events
    events_max_body_bytes: int = 1024 * 1024  # body limit of POST /events
    events_redrive_after_s: int = 30  # republish inbox rows unapplied this long after publish
    flower_port: int = 5555
    api_keys: Secret = field(default_factory=lambda: Secret(""))
    admin_api_keys: Secret = field(default_factory=lambda: Secret(""))
    graph_limit: int = 200  # contacts shown by GET /persons/{id}/graph before it says "cut"
    history_limit: int = 1000  # changes shown by GET /persons/{id}/history
    changes_retention_days: int = 30  # the change feed keeps this long (0: forever)
    changes_stream: str = "identity:changes"  # Redis Stream the relay publishes changes to
    changes_stream_maxlen: int = 1_000_000  # approximate cap of that stream
    suppression_hash_key: Secret = field(default_factory=lambda: Secret(""))
    erased_hash_retention_days: int = 7  # erased values' hashes, for events in flight
    generic_threshold: int = 20  # distinct partners before a value is generic (0: off)
    blocked_emails: str = ""  # extra full-match patterns (newline or ;; separated)
    blocked_phones: str = ""
    blocked_defaults: bool = True
    flower_basic_auth: Secret = field(default_factory=lambda: Secret(""))
    log_level: str = "INFO"
    log_format: str = "json"  # json (one object a line) or text (for a terminal)
    log_hash_key: Secret = field(default_factory=lambda: Secret(""))  # keys PII hashes in logs
    access_log_every: int = 1  # INFO access line for 1 in N answers below 400 (errors: all)
    db_prepared_statements: bool = True  # off behind a transaction-mode pooler

    @property
    def embedded(self) -> bool:
        """True when no database is configured and the SQLite file is used."""
        return not self.database_url

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url.get()
            # Heroku-style and bare URLs both mean psycopg2 here.
            for prefix in ("postgres://", "postgresql://"):
                if url.startswith(prefix):
                    return "postgresql+psycopg2://" + url[len(prefix) :]
            return url
        return f"sqlite:///{Path.cwd() / EMBEDDED_DATABASE_FILE}"

    @property
    def safe_database_url(self) -> str:
        """The database URL with its password hidden, fit for logs."""
        return _mask_url(self.sqlalchemy_url)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, dotenv_path: str | None = ".env"
    ) -> Settings:
        dotenv: dict[str, str] = {}
        if dotenv_path and Path(dotenv_path).is_file():
            dotenv = {k: v for k, v in dotenv_values(dotenv_path).items() if v is not None}
        real = os.environ if environ is None else environ
        env = {**dotenv, **real}

        region = env.get("DEFAULT_PHONE_REGION", "").strip().upper() or None
        if region is not None:
            import phonenumbers

            if region not in phonenumbers.SUPPORTED_REGIONS:
                raise SettingsError(f"DEFAULT_PHONE_REGION {region!r} is not a known region")
        settings = cls(
            database_url=Secret(_database_url(real, dotenv)),
            port=_int(env, "PORT", 8000, minimum=1, maximum=65535),
            bind_host=env.get("BIND_HOST", "").strip() or "127.0.0.1",
            default_phone_region=region,
            db_pool_size=_int(env, "DB_POOL_SIZE", 5, minimum=1),
            db_max_overflow=_int(env, "DB_MAX_OVERFLOW", 5),
            db_pool_timeout_s=float(_int(env, "DB_POOL_TIMEOUT_MS", 5_000, minimum=1)) / 1000,
            db_statement_timeout_ms=_int(env, "DB_STATEMENT_TIMEOUT_MS", 10_000),
            db_lock_timeout_ms=_int(env, "DB_LOCK_TIMEOUT_MS", 5_000),
            db_retry_attempts=_int(env, "DB_RETRY_ATTEMPTS", 8, minimum=1),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 64 * 1024, minimum=256),
            redis_url=Secret(env.get("REDIS_URL", "").strip()),
            identity_partitions=_int(env, "IDENTITY_PARTITIONS", 4, minimum=1),
            events_max_batch=_int(env, "EVENTS_MAX_BATCH", 1000, minimum=1),
            events_max_body_bytes=_int(env, "EVENTS_MAX_BODY_BYTES", 1024 * 1024, minimum=256),
            events_redrive_after_s=_int(env, "EVENTS_REDRIVE_AFTER_S", 30, minimum=1),
            flower_port=_int(env, "FLOWER_PORT", 5555, minimum=1, maximum=65535),
            api_keys=Secret(env.get("API_KEYS", "").strip()),
            admin_api_keys=Secret(env.get("ADMIN_API_KEYS", "").strip()),
            graph_limit=_int(env, "GRAPH_LIMIT", 200, minimum=2, maximum=5000),
            history_limit=_int(env, "HISTORY_LIMIT", 1000, minimum=1, maximum=100_000),
            changes_retention_days=_int(env, "CHANGES_RETENTION_DAYS", 30),
            changes_stream=env.get("CHANGES_STREAM", "").strip() or "identity:changes",
            changes_stream_maxlen=_int(env, "CHANGES_STREAM_MAXLEN", 1_000_000, minimum=1),
            suppression_hash_key=Secret(env.get("SUPPRESSION_HASH_KEY", "").strip()),
            erased_hash_retention_days=_int(env, "ERASED_HASH_RETENTION_DAYS", 7, minimum=1),
            generic_threshold=_int(env, "GENERIC_THRESHOLD", 20),
            blocked_emails=env.get("BLOCKED_EMAILS", ""),
            blocked_phones=env.get("BLOCKED_PHONES", ""),
            blocked_defaults=_choice(env, "BLOCKED_DEFAULTS", ("on", "off")) == "on",
            flower_basic_auth=Secret(env.get("FLOWER_BASIC_AUTH", "").strip()),
            log_level=env.get("LOG_LEVEL", "").strip().upper() or "INFO",
            log_format=_choice(env, "LOG_FORMAT", ("json", "text")),
            log_hash_key=Secret(env.get("LOG_HASH_KEY", "").strip()),
            access_log_every=_int(env, "ACCESS_LOG_EVERY", 1, minimum=1),
            db_prepared_statements=_choice(env, "DB_PREPARED_STATEMENTS", ("on", "off")) == "on",
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse what cannot run: a blocked pattern that does not compile names itself."""
        from identity.guards.policy import GuardPolicy, GuardSettingsError

        try:
            GuardPolicy.from_settings(self)
        except GuardSettingsError as error:
            raise SettingsError(str(error)) from None


def shell_summary(settings: Settings) -> str:
    """Non-secret facts for the launch scripts, as shell assignments (`eval`-safe)."""
    import shlex

    facts = {
        "IDENTITY_EMBEDDED": "1" if settings.embedded else "0",
        "IDENTITY_DATABASE": settings.safe_database_url,
        "IDENTITY_BROKER": "1" if settings.redis_url else "0",
        "IDENTITY_FLOWER_AUTH": "1" if settings.flower_basic_auth else "0",
        "IDENTITY_BIND": f"{settings.bind_host}:{settings.port}",
    }
    return "\n".join(f"{k}={shlex.quote(v)}" for k, v in facts.items())


if __name__ == "__main__":  # `python -m identity.settings`: what bin/run and make migrate use
    print(shell_summary(Settings.from_env()))
