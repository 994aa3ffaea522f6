"""Settings.from_env: the one reader of the environment (and of an optional .env file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from identity.settings import EMBEDDED_DATABASE_FILE, Secret, Settings, SettingsError

PG = "postgresql://app:s3cr3t-pw@db.internal:5432/identity"


def from_env(environ: dict[str, str], dotenv: Path | None = None) -> Settings:
    return Settings.from_env(environ, dotenv_path=str(dotenv) if dotenv else None)


def write_dotenv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".env"
    path.write_text(text)
    return path


def test_nothing_configured_means_the_embedded_sqlite_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = from_env({})
    assert settings.embedded
    assert settings.sqlalchemy_url == f"sqlite:///{tmp_path / EMBEDDED_DATABASE_FILE}"
    assert settings.port == 8000
    assert settings.bind_host == "127.0.0.1"
    assert settings.default_phone_region is None


def test_database_url_selects_postgresql_through_psycopg2() -> None:
    settings = from_env({"DATABASE_URL": PG})
    assert not settings.embedded
    assert settings.database_url.get() == PG
    assert (
        settings.sqlalchemy_url == "postgresql+psycopg2://app:s3cr3t-pw@db.internal:5432/identity"
    )


def test_heroku_style_postgres_scheme_is_accepted() -> None:
    settings = from_env({"DATABASE_URL": "postgres://u@h/db"})
    assert settings.sqlalchemy_url == "postgresql+psycopg2://u@h/db"


def test_explicit_driver_is_kept() -> None:
    settings = from_env({"DATABASE_URL": "sqlite:////tmp/x.sqlite3"})
    assert settings.sqlalchemy_url == "sqlite:////tmp/x.sqlite3"
    assert not settings.embedded


def test_older_database_uri_is_read_when_database_url_is_absent() -> None:
    settings = from_env({"DATABASE_URI": PG})
    assert settings.database_url.get() == PG


def test_database_url_wins_over_database_uri() -> None:
    settings = from_env({"DATABASE_URL": PG, "DATABASE_URI": "postgresql://other@h/db"})
    assert settings.database_url.get() == PG


def test_blank_database_url_falls_back_to_database_uri_then_embedded() -> None:
    assert from_env({"DATABASE_URL": "  ", "DATABASE_URI": PG}).database_url.get() == PG
    assert from_env({"DATABASE_URL": "", "DATABASE_URI": " "}).embedded


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    dotenv = write_dotenv(
        tmp_path, f"DATABASE_URL={PG}\nPORT=9123\nDEFAULT_PHONE_REGION=gb\n# a comment\n"
    )
    settings = from_env({}, dotenv)
    assert settings.database_url.get() == PG
    assert settings.port == 9123
    assert settings.default_phone_region == "GB"


def test_real_environment_wins_over_dotenv(tmp_path: Path) -> None:
    dotenv = write_dotenv(tmp_path, f"DATABASE_URL={PG}\nPORT=9123\n")
    settings = from_env({"DATABASE_URL": "postgresql://env@h/db", "PORT": "7001"}, dotenv)
    assert settings.database_url.get() == "postgresql://env@h/db"
    assert settings.port == 7001


def test_database_uri_in_the_environment_wins_over_database_url_in_dotenv(tmp_path: Path) -> None:
    # "Real environment variables win": a database chosen in the environment, under either
    # name, is not overridden by a checked-out .env file.
    dotenv = write_dotenv(tmp_path, f"DATABASE_URL={PG}\n")
    settings = from_env({"DATABASE_URI": "postgresql://env@h/db"}, dotenv)
    assert settings.database_url.get() == "postgresql://env@h/db"


def test_missing_dotenv_file_is_not_an_error(tmp_path: Path) -> None:
    settings = from_env({"PORT": "8080"}, tmp_path / "does-not-exist.env")
    assert settings.port == 8080


def test_from_env_reads_the_process_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("PORT", "8765")
    monkeypatch.setenv("DATABASE_URL", PG)
    settings = Settings.from_env()
    assert settings.port == 8765
    assert settings.database_url.get() == PG


@pytest.mark.parametrize(("raw", "port"), [("1", 1), ("8000", 8000), (" 65535 ", 65535)])
def test_port(raw: str, port: int) -> None:
    assert from_env({"PORT": raw}).port == port


@pytest.mark.parametrize("raw", ["abc", "80.5", "0", "-1", "65536", "99999"])
def test_port_out_of_range_or_not_a_number_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="PORT"):
        from_env({"PORT": raw})


@pytest.mark.parametrize(
    ("raw", "region"), [("US", "US"), ("us", "US"), (" gb ", "GB"), ("", None)]
)
def test_default_phone_region_is_upper_cased(raw: str, region: str | None) -> None:
    assert from_env({"DEFAULT_PHONE_REGION": raw}).default_phone_region == region


@pytest.mark.parametrize("raw", ["XX", "USA", "001", "1"])
def test_unknown_default_phone_region_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="DEFAULT_PHONE_REGION"):
        from_env({"DEFAULT_PHONE_REGION": raw})


def test_integer_settings_are_validated() -> None:
    settings = from_env({"DB_POOL_SIZE": "20", "DB_MAX_OVERFLOW": "0", "DB_POOL_TIMEOUT_MS": "250"})
    assert (settings.db_pool_size, settings.db_max_overflow) == (20, 0)
    assert settings.db_pool_timeout_s == 0.25
    with pytest.raises(SettingsError, match="DB_POOL_SIZE"):
        from_env({"DB_POOL_SIZE": "0"})
    with pytest.raises(SettingsError, match="MAX_BODY_BYTES"):
        from_env({"MAX_BODY_BYTES": "lots"})


def test_secrets_never_show_in_repr_str_or_the_safe_url() -> None:
    settings = from_env(
        {
            "DATABASE_URL": PG,
            "REDIS_URL": "redis://:redis-pw@127.0.0.1:6379/0",
            "API_KEYS": "key-one,key-two",
            "FLOWER_BASIC_AUTH": "admin:flower-pw",
        }
    )
    for shown in (repr(settings), str(settings), settings.safe_database_url):
        for secret in ("s3cr3t-pw", "redis-pw", "key-one", "key-two", "flower-pw"):
            assert secret not in shown
    assert "**" in repr(settings)
    assert settings.safe_database_url == "postgresql+psycopg2://app:***@db.internal:5432/identity"
    assert settings.redis_url.get() == "redis://:redis-pw@127.0.0.1:6379/0"  # still usable


def test_secret_behaves_like_a_value_but_hides_it() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in f"{secret}"
    assert secret.get() == "hunter2"
    assert secret == Secret("hunter2")
    assert secret != Secret("other")
    assert bool(secret)
    assert not Secret("")


def test_url_without_password_is_shown_as_is() -> None:
    settings = from_env({"DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/identity"})
    assert settings.safe_database_url == "postgresql+psycopg2://postgres@127.0.0.1:5432/identity"


def test_shell_summary_for_launch_scripts_hides_secrets_and_reads_dotenv(tmp_path) -> None:
    """bin/run and `make migrate` decide from the same Settings the service uses (.env too)."""
    from identity.settings import Settings, shell_summary

    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "DATABASE_URL=postgresql://u:hunter2@db/identity\nREDIS_URL=redis://x:6379/0\n"
    )
    summary = shell_summary(Settings.from_env(environ={}, dotenv_path=str(dotenv)))
    assert "IDENTITY_EMBEDDED=0" in summary
    assert "IDENTITY_BROKER=1" in summary
    assert "hunter2" not in summary
    assert "IDENTITY_EMBEDDED=1" in shell_summary(Settings.from_env(environ={}, dotenv_path=None))


def test_open_mode_listens_on_loopback_only() -> None:
    with pytest.raises(SettingsError, match="BIND_HOST=0.0.0.0 without API_KEYS"):
        from_env({"BIND_HOST": "0.0.0.0"})
    assert from_env({"BIND_HOST": "0.0.0.0", "API_KEYS": "k"}).bind_host == "0.0.0.0"
    assert from_env({"BIND_HOST": "0.0.0.0", "ADMIN_API_KEYS": "k"}).open_mode is False
    assert from_env({"BIND_HOST": "::1"}).open_mode is True


def test_a_blocked_pattern_that_does_not_compile_names_itself() -> None:
    with pytest.raises(SettingsError, match=r"BLOCKED_PHONES: pattern .* is not valid"):
        from_env({"BLOCKED_PHONES": r"(\d"})
    with pytest.raises(SettingsError, match="BLOCKED_EMAILS"):
        from_env({"BLOCKED_EMAILS": "ok@shop.test;;[a-"})
    settings = from_env({"BLOCKED_PHONES": r"555\d{4}", "BLOCKED_DEFAULTS": "off"})
    assert settings.blocked_phones == r"555\d{4}" and settings.blocked_defaults is False
