"""Chat providers: one module each, all registered in one registry by name.

A provider turns a GenerateInput into a GenerateResult, and raises ProviderError for every failure,
saying whether trying again can help. Retrying itself is Temporal's job, never the provider's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from core.schemas import GenerateInput, GenerateResult
from core.settings import Settings


class ProviderError(Exception):
    def __init__(self, provider: str, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.retryable = retryable
        self.status = status


Provider = Callable[[GenerateInput, Settings], Awaitable[GenerateResult]]

PROVIDERS: dict[str, Provider] = {}


def register(name: str) -> Callable[[Provider], Provider]:
    def add(provider: Provider) -> Provider:
        PROVIDERS[name] = provider
        return provider

    return add


def get_provider(name: str) -> Provider:
    # Importing the modules fills the registry; a new provider is one new module listed here.
    from activities.providers import local  # noqa: F401

    try:
        return PROVIDERS[name]
    except KeyError:
        raise ProviderError(name, f"unknown provider {name!r}", retryable=False) from None
