"""The one reader of the environment, on pydantic-settings.

Every other module receives a :class:`Settings`; tests build one explicitly
(``Settings(port=...)`` reads nothing but its arguments). ``Settings.from_env()``
reads the environment and a ``.env`` file in the working directory (real
environment variables win over it). Each field's alias is its variable's name;
README.md's configuration table is checked against these fields by a test.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import phonenumbers
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

#: Used when neither DATABASE_URL nor DATABASE_URI is set: a SQLite file in the
#: working directory, so a newcomer can run the service anywhere.
EMBEDDED_DATABASE_FILE = "identity.sqlite3"


class Secret(SecretStr):
    """A string that never shows itself in repr, str or logs; ``get()`` reveals it."""

    def get(self) -> str:
        return self.get_secret_value()


#: Addresses that only this machine reaches.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class SettingsError(ValueError):
    """A setting has a value the service cannot use."""


def env(name: str, default: Any, **constraints: Any) -> Any:
    """A field read from the variable ``name`` (also settable by field name in code)."""
    return Field(default, validation_alias=name, **constraints)


Port = Annotated[int, Field(ge=1, le=65535)]
Positive = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
_UNSET = Secret("")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        frozen=True,
        case_sensitive=True,
        env_file=".env",
        extra="ignore",  # the environment holds much more than ours
        validate_by_name=True,
        hide_input_in_errors=True,  # a refused secret is not echoed back
    )

    database_url: Secret = Field(
        _UNSET, validation_alias=AliasChoices("DATABASE_URL", "DATABASE_URI")
    )
    #: a streaming replica for the read endpoints (optional); reads go to the primary
    #: when it lags past REPLICA_MAX_LAG_MS or cannot be reached
    database_replica_url: Secret = env("DATABASE_REPLICA_URL", _UNSET)
    replica_max_lag_ms: NonNegative = env("REPLICA_MAX_LAG_MS", 1000)
    port: Port = env("PORT", 8000)
    bind_host: str = env("BIND_HOST", "127.0.0.1")
    default_phone_region: str | None = env("DEFAULT_PHONE_REGION", None)
    db_pool_size: Positive = env("DB_POOL_SIZE", 5)
    db_max_overflow: NonNegative = env("DB_MAX_OVERFLOW", 5)
    db_pool_timeout_ms: Positive = env("DB_POOL_TIMEOUT_MS", 5_000)
    db_statement_timeout_ms: NonNegative = env("DB_STATEMENT_TIMEOUT_MS", 10_000)
    db_lock_timeout_ms: NonNegative = env("DB_LOCK_TIMEOUT_MS", 5_000)
    db_retry_attempts: Positive = env("DB_RETRY_ATTEMPTS", 8)
    max_body_bytes: int = env("MAX_BODY_BYTES", 64 * 1024, ge=256)
    redis_url: Secret = env("REDIS_URL", _UNSET)
    #: the Sentinel service name, for sentinel:// REDIS_URLs
    redis_sentinel_master: str = env("REDIS_SENTINEL_MASTER", "mymaster")
    identity_partitions: Positive = env("IDENTITY_PARTITIONS", 4)
    events_max_batch: Positive = env("EVENTS_MAX_BATCH", 1000)  # events per POST /events
    events_max_body_bytes: int = env("EVENTS_MAX_BODY_BYTES", 1024 * 1024, ge=256)
    #: republish inbox rows unapplied this long after publish
    events_redrive_after_s: Positive = env("EVENTS_REDRIVE_AFTER_S", 30)
    #: an event partition's owner renews within this, or a standby takes over
    partition_lease_s: int = env("PARTITION_LEASE_S", 10, ge=1, le=3600)
    flower_port: Port = env("FLOWER_PORT", 5555)
    api_keys: Secret = env("API_KEYS", _UNSET)
    admin_api_keys: Secret = env("ADMIN_API_KEYS", _UNSET)
    #: contacts shown by GET /persons/{id}/graph before it says "cut"
    graph_limit: int = env("GRAPH_LIMIT", 200, ge=2, le=5000)
    history_limit: int = env("HISTORY_LIMIT", 1000, ge=1, le=100_000)
    changes_retention_days: NonNegative = env("CHANGES_RETENTION_DAYS", 30)  # 0: forever
    changes_stream: str = env("CHANGES_STREAM", "identity:changes")
    changes_stream_maxlen: Positive = env("CHANGES_STREAM_MAXLEN", 1_000_000)
    suppression_hash_key: Secret = env("SUPPRESSION_HASH_KEY", _UNSET)
    #: erased values' hashes are kept this long, for events in flight
    erased_hash_retention_days: Positive = env("ERASED_HASH_RETENTION_DAYS", 7)
    #: distinct partners before a value is generic (0: off)
    generic_threshold: NonNegative = env("GENERIC_THRESHOLD", 20)
    blocked_emails: str = env("BLOCKED_EMAILS", "")  # full-match patterns, newline or ;;
    blocked_phones: str = env("BLOCKED_PHONES", "")
    blocked_defaults: bool = env("BLOCKED_DEFAULTS", True)
    flower_basic_auth: Secret = env("FLOWER_BASIC_AUTH", _UNSET)
    log_level: str = env("LOG_LEVEL", "INFO")
    log_format: Literal["json", "text"] = env("LOG_FORMAT", "json")
    log_hash_key: Secret = env("LOG_HASH_KEY", _UNSET)  # keys the hashes of PII in logs
    #: at INFO, one access line per N answers below 400 (every error is logged)
    access_log_every: Positive = env("ACCESS_LOG_EVERY", 1)
    #: prepared statements on the hot path; off behind a transaction-mode pooler
    db_prepared_statements: bool = env("DB_PREPARED_STATEMENTS", True)

    @field_validator("default_phone_region", mode="before")
    @classmethod
    def _known_region(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.upper()
            if value not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(f"{value!r} is not a known region")
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _case(cls, value: object, info: Any) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    @field_validator("blocked_defaults", "db_prepared_statements", mode="before")
    @classmethod
    def _on_off(cls, value: object) -> object:
        if isinstance(value, str):
            choice = {"on": True, "off": False}.get(value.lower())
            if choice is None:
                raise ValueError("must be one of on, off")
            return choice
        return value

    def model_post_init(self, context: Any) -> None:
        """Refuse what cannot run: a blocked pattern that does not compile names itself."""
        from identity.guards.policy import GuardPolicy, GuardSettingsError

        try:
            GuardPolicy.from_settings(self)
        except GuardSettingsError as error:
            raise SettingsError(str(error)) from None

    @property
    def open_mode(self) -> bool:
        """No API key of either kind: open development mode (loopback only, SPEC "Access")."""
        return not self.api_keys and not self.admin_api_keys

    @property
    def db_pool_timeout_s(self) -> float:
        return self.db_pool_timeout_ms / 1000

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
    def redis_transport_options(self) -> dict[str, str]:
        """Kombu transport options the broker URL needs: Sentinel's service name."""
        if self.redis_url.get().startswith("sentinel://"):
            return {"master_name": self.redis_sentinel_master}
        return {}

    @property
    def replica_sqlalchemy_url(self) -> str | None:
        """The read replica's URL for SQLAlchemy (psycopg2), or None without one."""
        url = self.database_replica_url.get()
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg2://" + url[len(prefix) :]
        return url or None

    @property
    def safe_database_url(self) -> str:
        """The database URL with its password hidden, fit for logs."""
        return _mask_url(self.sqlalchemy_url)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, dotenv_path: str | None = ".env"
    ) -> Settings:
        """Read ``environ`` (the process environment when None) over the ``.env`` file."""
        token = _ENVIRON.set(os.environ if environ is None else environ)
        try:
            settings = cls(_env_file=dotenv_path)  # type: ignore[call-arg]
        except ValidationError as error:
            raise SettingsError(_explain(error)) from None
        finally:
            _ENVIRON.reset(token)
        if settings.open_mode and settings.bind_host not in LOOPBACK_HOSTS:
            raise SettingsError(
                f"BIND_HOST={settings.bind_host} without API_KEYS or ADMIN_API_KEYS: with no"
                " key the service is in open development mode and listens on loopback only;"
                " set keys to listen on other addresses"
            )
        return settings

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if _ENVIRON.get() is None:  # built in code: its arguments and the defaults only
            return (init_settings,)
        assert isinstance(dotenv_settings, DotEnvSettingsSource)
        return (init_settings, _Cleaned(_Environ(settings_cls)), _Cleaned(dotenv_settings))


#: The environment ``Settings.from_env`` reads, while it runs.
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("environ", default=None)


class _Environ(EnvSettingsSource):
    def _load_env_vars(self) -> Mapping[str, str | None]:
        return dict(_ENVIRON.get() or {})


class _Cleaned(PydanticBaseSettingsSource):
    """One source, values trimmed, blank ones dropped (blank means unset).

    DATABASE_URI counts as DATABASE_URL within the source that holds it, so that the
    environment under either name wins over a ``.env`` file under the other.
    """

    def __init__(self, source: EnvSettingsSource) -> None:
        super().__init__(source.settings_cls)
        self.source = source

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads the whole source at once

    def __call__(self) -> dict[str, Any]:
        names = ("DATABASE_URL", "DATABASE_URI")
        values = {k: v.strip() if isinstance(v, str) else v for k, v in self.source().items()}
        values = {k: v for k, v in values.items() if v != "" and k not in names}
        urls = [(self.source.env_vars.get(n) or "").strip() for n in names]
        if any(urls):
            values["DATABASE_URL"] = next(url for url in urls if url)
        return values


def _explain(error: ValidationError) -> str:
    """One clause per refused variable, each naming it; a secret's value is never shown."""
    secrets = {name for n, f in Settings.model_fields.items() if f.annotation is Secret
               for name in variable_names(n)}  # fmt: skip
    clauses = []
    for item in error.errors(include_url=False):
        name = str(item["loc"][0]) if item["loc"] else ""
        message = str(item["msg"]).removeprefix("Value error, ")
        shown = "" if name in secrets or not name else f", got {item['input']!r}"
        clauses.append(f"{name}: {message}{shown}" if name else message)
    return "; ".join(clauses)


def variable_names(field_name: str) -> list[str]:
    """The environment variables a field is read from (DATABASE_URL has two)."""
    alias = Settings.model_fields[field_name].validation_alias
    return [str(a) for a in alias.choices] if isinstance(alias, AliasChoices) else [str(alias)]


def _mask_url(url: str) -> str:
    """Hide the password of a database or broker URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def shell_summary(settings: Settings) -> str:
    """Non-secret facts for the launch scripts, as shell assignments (`eval`-safe)."""
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
