"""The openai provider: OpenAI's API (or any server behind OPENAI_BASE_URL) through the `openai` SDK."""

from __future__ import annotations

from activities.providers import register
from activities.providers.openai_wire import provider
from core.settings import Settings


def _api_key(settings: Settings) -> str:
    return settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""


def _endpoint(settings: Settings) -> tuple[str, str]:
    return settings.openai_base_url, _api_key(settings)


register(
    provider(
        "openai",
        _endpoint,
        supported_params=frozenset(
            {"stop", "seed", "presence_penalty", "frequency_penalty", "response_format"}
        ),
        default_model=lambda settings: settings.openai_default_model,
        is_configured=lambda settings: bool(_api_key(settings)),
    )
)
