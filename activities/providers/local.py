"""The local provider: the project's own model server, which speaks OpenAI's wire format."""

from __future__ import annotations

from activities.providers import register
from activities.providers.openai_wire import provider
from core.settings import Settings


def _endpoint(settings: Settings) -> tuple[str, str]:
    return f"{settings.model_server_url}/v1", settings.model_server_api_key.get_secret_value()


def _default_model(settings: Settings) -> str:
    return settings.model_path(settings.local_chat_model).name


register(
    provider(
        "local",
        _endpoint,
        # The model server samples with a stop list and a seed; it has no penalties and no JSON mode.
        supported_params=frozenset({"stop", "seed"}),
        default_model=_default_model,
        is_configured=lambda settings: True,
    )
)
