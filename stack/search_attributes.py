"""Custom search attributes the project registers with Temporal, so operators can filter runs."""

from __future__ import annotations

from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.client import Client
from temporalio.common import SearchAttributeKey

UNIT = SearchAttributeKey.for_keyword("VppUnit")
REGION = SearchAttributeKey.for_keyword("VppRegion")
DISPATCH_INTERVAL = SearchAttributeKey.for_datetime("VppDispatchInterval")
STAGE = SearchAttributeKey.for_keyword("VppStage")
BID_ID = SearchAttributeKey.for_keyword("VppBidId")
OUTCOME = SearchAttributeKey.for_keyword("VppOutcome")

ALL_KEYS = (UNIT, REGION, DISPATCH_INTERVAL, STAGE, BID_ID, OUTCOME)


def dev_server_flags() -> list[str]:
    """``--search-attribute NAME=Type`` flags for ``temporal server start-dev``."""
    kinds = {"KEYWORD": "Keyword", "DATETIME": "Datetime"}
    flags: list[str] = []
    for key in ALL_KEYS:
        flags += ["--search-attribute", f"{key.name}={kinds[key.indexed_value_type.name]}"]
    return flags


async def register(client: Client, namespace: str) -> None:
    """Register the project's search attributes on a server that lacks them (idempotent).

    The dev server started by ``vpp up`` gets them from its command line; this serves other servers
    (the time-skipping test server, a self-hosted cluster).
    """
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace))
    missing = {key.name: key.indexed_value_type for key in ALL_KEYS if key.name not in existing.custom_attributes}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace,
                                       search_attributes={name: IndexedValueType.ValueType(int(kind)) for name, kind in missing.items()}))
