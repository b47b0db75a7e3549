"""GET /providers: every registered provider, whether it is configured, its default model, the models it
lists and whether it answered, each asked in parallel within settings.provider_check_timeout_s."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import BaseModel

from activities.providers import PROVIDER_NAMES, get_provider
from api.deps import CurrentUser, SettingsDep

router = APIRouter(tags=["providers"])


class ProviderStatus(BaseModel):
    name: str
    configured: bool
    default_model: str
    models: list[str]
    reachable: bool
    error: str | None = None


@router.get("/providers")
async def list_providers(user: CurrentUser, settings: SettingsDep) -> list[ProviderStatus]:
    # A model list is a read, not a model call: asking from the API process needs no workflow.
    checks = await asyncio.gather(*(get_provider(name).check(settings) for name in PROVIDER_NAMES))
    return [ProviderStatus(**check) for check in checks]
