"""Custom search attributes the project registers with Temporal, so operators can filter runs."""

from __future__ import annotations

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

