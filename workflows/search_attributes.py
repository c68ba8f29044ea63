"""Custom search attributes the project registers with Temporal, so operators can filter runs."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

UNIT = SearchAttributeKey.for_keyword("VppUnit")
REGION = SearchAttributeKey.for_keyword("VppRegion")
# The dispatch interval (interval-ending) as a point in time, for range queries; Temporal keeps datetimes
# in UTC and the UI shows them in the viewer's zone. VppMarketInterval is the same interval as the market
# names it: "2021-01-15 16:10 AEST".
DISPATCH_INTERVAL = SearchAttributeKey.for_datetime("VppDispatchInterval")
MARKET_INTERVAL = SearchAttributeKey.for_keyword("VppMarketInterval")
STAGE = SearchAttributeKey.for_keyword("VppStage")
BID_ID = SearchAttributeKey.for_keyword("VppBidId")
OUTCOME = SearchAttributeKey.for_keyword("VppOutcome")

ALL_KEYS = (UNIT, REGION, DISPATCH_INTERVAL, MARKET_INTERVAL, STAGE, BID_ID, OUTCOME)


def dev_server_flags() -> list[str]:
    """``--search-attribute NAME=Type`` flags for ``temporal server start-dev``."""
    kinds = {"KEYWORD": "Keyword", "DATETIME": "Datetime"}
    flags: list[str] = []
    for key in ALL_KEYS:
        flags += ["--search-attribute", f"{key.name}={kinds[key.indexed_value_type.name]}"]
    return flags

