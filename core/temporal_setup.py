"""Registers the search attributes jobs carry, on any Temporal server (dev server or cluster)."""

from __future__ import annotations

import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client

from core.jobs import SEARCH_ATTRIBUTES

log = logging.getLogger(__name__)


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Adds the missing ones; logs and goes on when Temporal is not reachable yet."""
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        missing = {
            name: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{kind.upper()}")
            for name, kind in SEARCH_ATTRIBUTES.items()
            if name not in existing.custom_attributes
        }
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
            )
    except Exception as exc:
        log.warning(
            "could not check Temporal search attributes (%s); jobs cannot start until they exist", exc
        )
