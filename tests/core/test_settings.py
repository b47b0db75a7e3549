"""Settings come from the environment and `.env`; secrets stay hidden and generated ones are kept."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from core.settings import Settings


def test_environment_variables_set_fields_case_insensitively(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_PORT", "9001")
    monkeypatch.setenv("temporal_address", "10.0.0.5:7233")
    monkeypatch.setenv("JWT_SECRET", "jwt-from-env")

    settings = Settings()

    assert settings.api_port == 9001
    assert settings.temporal_address == "10.0.0.5:7233"
    assert isinstance(settings.jwt_secret, SecretStr)
    assert settings.jwt_secret.get_secret_value() == "jwt-from-env"


def test_dotenv_in_the_working_directory_is_read(clean_env: Path) -> None:
    (clean_env / ".env").write_text("API_PORT=9002\nADMIN_PASSWORD=admin-from-dotenv\nUNKNOWN_NAME=ignored\n")

    settings = Settings()

    assert settings.api_port == 9002
    assert settings.admin_password is not None
    assert settings.admin_password.get_secret_value() == "admin-from-dotenv"


def test_environment_wins_over_dotenv(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("API_PORT=9002\nLOG_LEVEL=DEBUG\n")
    monkeypatch.setenv("API_PORT", "9003")

    settings = Settings()

    assert settings.api_port == 9003
    assert settings.log_level == "DEBUG"


def test_env_file_none_skips_dotenv(clean_env: Path) -> None:
    (clean_env / ".env").write_text("API_PORT=9002\n")

    assert Settings(_env_file=None).api_port == 8000


def test_database_url_defaults_to_a_sqlite_file_under_var_dir(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    var_dir = tmp_path / "state dir"
    monkeypatch.setenv("VAR_DIR", str(var_dir))

    url = make_url(Settings().database_url)

    assert url.drivername == "sqlite+aiosqlite"
    assert url.database == str(var_dir / "assistant.db")


def test_an_explicit_database_url_is_kept(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://app@db.internal:5432/assistant")

    assert Settings().database_url == "postgresql+asyncpg://app@db.internal:5432/assistant"


def test_model_server_url_follows_its_host_and_port(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().model_server_url == "http://127.0.0.1:8100"

    monkeypatch.setenv("MODEL_SERVER_HOST", "10.1.2.3")
    monkeypatch.setenv("MODEL_SERVER_PORT", "8111")
    assert Settings().model_server_url == "http://10.1.2.3:8111"

    monkeypatch.setenv("MODEL_SERVER_URL", "https://models.example.com/")
    assert Settings().model_server_url == "https://models.example.com/"


def test_secrets_never_show_in_str_repr_or_json(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "JWT_SECRET": "jwt-secret-value",
        "ADMIN_PASSWORD": "admin-password-value",
        "MODEL_SERVER_API_KEY": "model-key-value",
        "VAULT_TOKEN": "vault-token-value",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)

    settings = Settings()

    for shown in (str(settings), repr(settings), settings.model_dump_json(), str(settings.model_dump())):
        for value in values.values():
            assert value not in shown
    assert settings.model_server_api_key.get_secret_value() == "model-key-value"


def test_a_generated_secret_is_created_once_kept_with_mode_0600_and_stable(clean_env: Path) -> None:
    settings = Settings()
    jwt_secret = settings.secret_value("jwt_secret")
    admin_password = settings.secret_value("admin_password")

    path = settings.var_dir / "jwt_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((settings.var_dir / "admin_password").stat().st_mode) == 0o600
    assert len(jwt_secret) >= 32
    assert jwt_secret != admin_password
    modified = path.stat().st_mtime_ns
    # Another process (a fresh Settings) reads the same value and does not rewrite the file.
    assert Settings().secret_value("jwt_secret") == jwt_secret
    assert settings.secret_value("jwt_secret") == jwt_secret
    assert path.stat().st_mtime_ns == modified


def test_a_configured_secret_is_used_and_nothing_is_generated(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_SECRET", "configured-jwt-secret")

    settings = Settings()

    assert settings.secret_value("jwt_secret") == "configured-jwt-secret"
    assert not (settings.var_dir / "jwt_secret").exists()


def secrets_read_at_once(settings: Settings, readers: int) -> list[str]:
    start = threading.Barrier(readers)
    seen: list[str] = []

    def read() -> None:
        start.wait()
        seen.append(settings.secret_value("jwt_secret"))

    threads = [threading.Thread(target=read) for _ in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seen


def test_processes_starting_together_agree_on_one_generated_secret(clean_env: Path, tmp_path: Path) -> None:
    # The API and a worker may start at once on a fresh var_dir; neither may see a half-written file.
    for attempt in range(30):
        seen = secrets_read_at_once(Settings(var_dir=tmp_path / f"race-{attempt}"), readers=8)
        assert len(seen) == 8 and len(set(seen)) == 1 and seen[0], seen


def test_an_empty_secret_file_is_refused_rather_than_used_as_the_key(clean_env: Path) -> None:
    settings = Settings()
    settings.var_dir.mkdir(parents=True)
    (settings.var_dir / "jwt_secret").write_text("\n")

    with pytest.raises(RuntimeError, match="jwt_secret"):
        settings.secret_value("jwt_secret")
