"""Vault (KV v2) as the highest-priority settings source.

Switched on by `VAULT_ADDR` (with `VAULT_TOKEN`) in the environment or `.env`. The secret at
`VAULT_MOUNT`/`VAULT_PATH` holds keys named like the settings (`jwt_secret` or `JWT_SECRET`); each one
present overrides every other source. An unreachable Vault is an error at start, never a silent
fallback to weaker secrets.
"""

from __future__ import annotations

import os
from typing import Any

import hvac
from dotenv import dotenv_values
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource


class VaultUnavailable(RuntimeError):
    pass


def _vault_config() -> dict[str, str]:
    """Vault's own coordinates come from the environment or `.env`, never from Vault itself."""
    names = ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_MOUNT", "VAULT_PATH")
    from_file = {k.upper(): v for k, v in dotenv_values(".env").items() if v is not None}
    return {name: os.environ.get(name) or from_file.get(name, "") for name in names}


def read_vault_secrets(addr: str, token: str, mount: str, path: str) -> dict[str, Any]:
    client = hvac.Client(url=addr, token=token, timeout=10)
    try:
        response = client.secrets.kv.v2.read_secret_version(
            path=path, mount_point=mount, raise_on_deleted_version=True
        )
    except hvac.exceptions.InvalidPath:
        return {}
    except Exception as exc:  # connection refused, forbidden, sealed: all mean no secrets
        raise VaultUnavailable(f"cannot read secrets from Vault at {addr} ({mount}/{path}): {exc}") from exc
    return dict(response["data"]["data"])


class VaultSettingsSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        config = _vault_config()
        self._values: dict[str, Any] = {}
        if config["VAULT_ADDR"]:
            raw = read_vault_secrets(
                config["VAULT_ADDR"],
                config["VAULT_TOKEN"],
                config["VAULT_MOUNT"] or "secret",
                config["VAULT_PATH"] or "ai-assistant",
            )
            self._values = {key.lower(): value for key, value in raw.items()}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        known = self.settings_cls.model_fields
        return {name: value for name, value in self._values.items() if name in known}
