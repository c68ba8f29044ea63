"""Price-forecast distribution and plan collection at the fleet gateway (no gRPC: testable directly).

Every 15 minutes the platform publishes a new forecast version. Sites receive it one of two ways, chosen
per site (in practice per programme, :meth:`ForecastDistribution.set_push`):

- **push**: the gateway writes the forecast once down every stream (concentrator) that serves a
  push-mode site, at publication and again when a stream (re)connects and its sites hold an older
  version. Fast (one message per stream, at once) but a reconnect storm means a burst of full forecasts.
- **poll**: the stream asks ``ForecastPoll(after_version=v)`` on its own schedule and gets the newest
  version only when it is newer than ``v``. Cheaper when nothing changed and spread out in time, but a
  site learns of a version only at its next poll.

The gateway tracks the version each site holds (delivered by push or poll, or named by a plan the site
sent) and keeps every site's latest plan (:mod:`algorithms.fleet.plan_store`). A site that misses a version
keeps planning on the last one it holds; its plans say which.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from algorithms.fleet.fleet_types import BoolArray, IntArray, SiteParameters, StrArray, site_positions
from algorithms.fleet.plan_store import PlanIngestResult, PlanStore, ingest_plans
from algorithms.fleet.site_plan_types import NO_VERSION, SitePlans
from services.fleet_codec import MalformedBatchError, forecast_prices
from vpp.v1 import fleet_pb2


class ForecastRequestError(ValueError):
    """A forecast that cannot be published (no version, malformed prices, non-finite values)."""


@dataclass
class DistributionCounters:
    """Totals since the gateway started (messages and bytes pushed, polls, plans by outcome)."""

    forecasts_pushed: int = 0
    forecast_bytes_pushed: int = 0
    polls: int = 0
    polls_answered: int = 0
    plans_accepted: int = 0
    plans_superseded: int = 0
    plans_quarantined: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class PushTarget:
    """One stream a forecast goes down: its id and how many push-mode sites it serves."""

    stream_id: int
    sites: int


class ForecastDistribution:
    """The newest forecast, the version every site holds, push/poll modes and the sites' latest plans."""

    def __init__(self, parameters: SiteParameters, *, plan_interval_minutes: int, plan_horizon_intervals: int,
                 push_by_default: bool = True) -> None:
        self.parameters = parameters
        self.latest: fleet_pb2.PriceForecast | None = None
        self._latest_bytes = 0
        self.held_version: IntArray = np.full(parameters.site_count, NO_VERSION, dtype=np.int64)
        self.push: BoolArray = np.full(parameters.site_count, push_by_default, dtype=np.bool_)
        self.plans = PlanStore.empty(parameters.site_count, plan_interval_minutes=plan_interval_minutes,
                                     horizon_intervals=plan_horizon_intervals)
        self.counters = DistributionCounters()

    @property
    def latest_message_bytes(self) -> int:
        """Size of the downlink message carrying the newest forecast (bytes; 0 before the first)."""
        return self._latest_bytes

    @property
    def latest_version(self) -> int:
        """Newest published version (``NO_VERSION`` before the first)."""
        return int(self.latest.version) if self.latest is not None else NO_VERSION

    def set_push(self, site_ids: StrArray, push: bool) -> StrArray:
        """Deliver forecasts to ``site_ids`` by push (True) or poll (False); returns the unknown ids."""
        rows = site_positions(self.parameters.site_ids, site_ids)
        self.push[rows[rows >= 0]] = push
        unknown: StrArray = site_ids[rows < 0]
        return unknown

    def publish(self, forecast: fleet_pb2.PriceForecast, stream_of_site: IntArray) -> list[PushTarget] | None:
        """Make ``forecast`` the newest version; the streams to push it down (None: not newer, ignored).

        Raises ForecastRequestError for a forecast without a version, region or finite prices.
        """
        if forecast.version == NO_VERSION:
            raise ForecastRequestError("a forecast needs a version > 0")
        if not forecast.region:
            raise ForecastRequestError(f"forecast v{forecast.version} names no region")
        try:
            prices = forecast_prices(forecast)
        except MalformedBatchError as error:
            raise ForecastRequestError(str(error)) from error
        if not prices.size or not np.isfinite(prices).all():
            raise ForecastRequestError(f"forecast v{forecast.version}: prices must be finite and not empty")
        if forecast.version <= self.latest_version:
            return None
        self.latest = forecast
        self._latest_bytes = fleet_pb2.ConnectResponse(forecast=forecast).ByteSize()
        return self._push_targets(stream_of_site, np.ones(self.parameters.site_count, dtype=np.bool_))

    def catch_up_targets(self, stream_of_site: IntArray, stream_id: int) -> list[PushTarget]:
        """After a (re)connect: push the newest version down ``stream_id`` if a push-mode site of it lacks it."""
        if self.latest is None:
            return []
        on_stream = stream_of_site == stream_id
        lacking = on_stream & (self.held_version < self.latest_version)
        return self._push_targets(stream_of_site, lacking)

    def _push_targets(self, stream_of_site: IntArray, eligible: BoolArray) -> list[PushTarget]:
        routed = (stream_of_site >= 0) & self.push & eligible
        if not routed.any():
            return []
        streams, counts = np.unique(stream_of_site[routed], return_counts=True)
        return [PushTarget(stream_id=int(s), sites=int(c)) for s, c in zip(streams.tolist(), counts.tolist(),
                                                                            strict=True)]

    def pushed(self, target: PushTarget, stream_of_site: IntArray) -> None:
        """Record that the newest forecast went down ``target``'s stream: its push-mode sites hold it."""
        sites = (stream_of_site == target.stream_id) & self.push
        self.held_version[sites] = np.maximum(self.held_version[sites], self.latest_version)
        self.counters.forecasts_pushed += 1
        self.counters.forecast_bytes_pushed += self._latest_bytes

    def message(self) -> fleet_pb2.ConnectResponse:
        """The downlink message carrying the newest forecast (call only once one is published)."""
        assert self.latest is not None
        return fleet_pb2.ConnectResponse(forecast=self.latest)

    def poll(self, stream_id: int, after_version: int, stream_of_site: IntArray) -> fleet_pb2.ConnectResponse | None:
        """Answer a stream's poll: the newest forecast if newer than ``after_version`` (its sites now hold
        it), else None."""
        self.counters.polls += 1
        if self.latest is None or self.latest_version <= after_version:
            return None
        sites = stream_of_site == stream_id
        self.held_version[sites] = np.maximum(self.held_version[sites], self.latest_version)
        self.counters.polls_answered += 1
        return self.message()

    def ingest(self, plans: SitePlans, now_ms: int) -> PlanIngestResult:
        """Check and keep a batch of plans (see :func:`algorithms.fleet.plan_store.ingest_plans`); a valid plan
        also tells which version its site holds."""
        result = ingest_plans(self.parameters, self.plans, plans, latest_version=self.latest_version,
                              now_ms=now_ms)
        self.plans = result.store
        valid = result.reasons == ""
        rows = site_positions(self.parameters.site_ids, plans.site_ids[valid])
        np.maximum.at(self.held_version, rows, plans.forecast_version[valid])
        self.counters.plans_accepted += int(valid.sum())
        self.counters.plans_superseded += result.superseded
        self.counters.plans_quarantined.update(result.quarantined)
        return result

    def plans_response(self, site_ids: StrArray) -> fleet_pb2.GetPlansResponse:
        """The GetPlans answer for ``site_ids`` (all sites when empty): their plans and held versions."""
        from services.fleet_codec import plans_to_proto

        known_ids = self.parameters.site_ids
        rows = np.arange(len(known_ids)) if not len(site_ids) else site_positions(known_ids, np.unique(site_ids))
        rows = rows[rows >= 0]
        planned = rows[self.plans.planned[rows]]
        counters = self.counters
        return fleet_pb2.GetPlansResponse(
            plans=plans_to_proto(self.plans.plans(known_ids[planned], planned)),
            latest_version=self.latest_version, held_site_id=known_ids[rows].tolist(),
            held_version=self.held_version[rows].tolist(), forecasts_pushed=counters.forecasts_pushed,
            forecast_bytes_pushed=counters.forecast_bytes_pushed, polls=counters.polls,
            polls_answered=counters.polls_answered, plans_accepted=counters.plans_accepted,
            plans_quarantined=dict(counters.plans_quarantined))
