"""Vault (KV v2) as the highest-priority settings source.

Switched on by `VAULT_ADDR` (with `VAULT_TOKEN`) in the environment, `.env` or Settings' arguments.
The secret at `VAULT_MOUNT`/`VAULT_PATH` holds keys named like the settings (`jwt_secret` or
`JWT_SECRET`); each one present overrides every other source. An unreachable Vault is an error at
start, never a silent fallback to weaker secrets.
"""

from __future__ import annotations

from typing import Any

import hvac
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource


class VaultUnavailable(RuntimeError):
    pass


_COORDINATES = ("vault_addr", "vault_token", "vault_mount", "vault_path")


def _vault_config(*sources: PydanticBaseSettingsSource) -> dict[str, str]:
    """Vault's own coordinates, from the first of the given sources that has each; never from Vault."""
    config = dict.fromkeys(_COORDINATES, "")
    for source in reversed(sources):
        values = source()
        for name in _COORDINATES:
            value = values.get(name)
            if value:
                config[name] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    return config


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
    def __init__(
        self, settings_cls: type[BaseSettings], *coordinate_sources: PydanticBaseSettingsSource
    ) -> None:
        """`coordinate_sources`, highest priority first, say where Vault is (arguments, environment,
        `.env`), so `Settings(_env_file=None)` means for Vault what it means for every other setting."""
        super().__init__(settings_cls)
        config = _vault_config(*coordinate_sources)
        self._values: dict[str, Any] = {}
        if config["vault_addr"]:
            raw = read_vault_secrets(
                config["vault_addr"],
                config["vault_token"],
                config["vault_mount"] or "secret",
                config["vault_path"] or "ai-assistant",
            )
            self._values = {key.lower(): value for key, value in raw.items()}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        known = self.settings_cls.model_fields
        return {name: value for name, value in self._values.items() if name in known}
