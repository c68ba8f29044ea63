"""Replay from the live archive: the recorded inputs of live AutoBidder cycles, run again through the pure
algorithms, compared with what each live cycle decided.

Every live cycle (``workflows/autobidder.py`` with the activities of ``activities/cycle.py``) archives its
inputs and outputs as immutable protobuf under the cycle's id (:mod:`archive.store`), with these labels:

* ``market-snapshot`` — the MarketSnapshot each fetch used (the last one is the one the cycle went on with);
* ``forecast-request/<product>`` and ``forecast-result/<product>`` — one ForecastRequest and its
  ForecastResult per product (the result is archived by the result relay);
* ``optimisation-request`` and ``optimisation-result/`` — the OptimisationRequest over every forecast and
  its OptimisationResult (the plan);
* ``bid`` — the bid that passed validation (absent when the bid in force stood or no bid was valid);
  ``bid-rejected/<plan|safe>``, ``bid-acknowledgement`` and ``market-outcome`` are not replayed.

:func:`replay_archived_cycles` loads each cycle (:func:`load_archived_cycle`, the only I/O) and replays it
(:func:`replay_cycle`, pure apart from the handlers it is given, which are pure):

1. **Forecast** — each archived ForecastRequest is answered by the handler the worker pools serve
   (:func:`algorithms.registry.default_registry`) for the recorded algorithm, or for the override, in which
   case the request's algorithm ref is rewritten (and its inputs hash recomputed).
2. **Optimise** — the archived OptimisationRequest is answered the same way. It keeps the archived
   forecasts unless the forecaster is overridden; then they are replaced by the replayed forecasts, so a
   new forecaster is judged by the plan it leads to.
3. **Bid** — :func:`algorithms.market.bid_decision.decide_bid`, the decision the ``build_and_validate_bid``
   activity makes (:func:`rebuild_bid`). The battery is the archived request's (with any SoC hold the
   cycle applied); band ladders and market rules are ``settings``'; the bid's first interval is the
   plan's, its offer time and version the archived bid's; FCAS products are those of the archived
   snapshot. The database the live activity reads is not archived, so no bid in force is known (the bid
   is always built, never suppressed as "no material change") and V4 checks only the entry type.

Each result is compared with the archived one: forecasts by their largest absolute price difference
($/MWh, FCAS $/MW/h) per product; the plan by its objective ($) and first-interval MW; the bid by the
band availabilities (MW) of its first dispatch interval. "Identical" means equal apart from compute time
(``compute_ms``; ``solve_ms`` and the inputs hash of a plan) and, for a bid, apart from the plan hash and
rebid explanation (which name the plan by its content hash, and so its solve time).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypeVar

import numpy as np
from google.protobuf.message import Message

from algorithms.common.content_hash import with_inputs_hash
from algorithms.common.errors import InvalidRequestError
from algorithms.common.nem_time import from_timestamp
from algorithms.market.bid_decision import BidDecision, StandingBid, decide_bid
from algorithms.market.daily_bid import DailyBidsInForce
from algorithms.market.operator_controls import EffectiveControls
from algorithms.market.rebid import material_changes
from algorithms.registry import HandlerRegistry, default_registry
from archive import Archive, ArchiveEntry, ArchiveError, archive_key
from archive.store import KEY_PREFIX
from settings import Settings
from vpp.v1 import bid_pb2, common_pb2, market_data_pb2, worker_pb2

SNAPSHOT_LABEL = "market-snapshot"
FORECAST_REQUEST_PREFIX = "forecast-request/"
FORECAST_RESULT_PREFIX = "forecast-result/"
OPTIMISATION_REQUEST_LABEL = "optimisation-request"
OPTIMISATION_RESULT_LABEL = "optimisation-result/"
BID_LABEL = "bid"
DEFAULT_BID_VERSION = 1
_SIDES = {common_pb2.DIRECTION_GEN: "GEN", common_pb2.DIRECTION_LOAD: "LOAD"}

M = TypeVar("M", bound=Message)


class ArchiveReplayError(ValueError):
    """An archived cycle that cannot be replayed as recorded (missing or mistyped objects); says why."""


# --------------------------------------------------------------------------------------------------
# What a cycle archived
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchivedCycle:
    """The archived inputs and outputs of one live cycle that a replay needs.

    ``forecast_requests`` / ``forecast_results`` are keyed by product, in the snapshot's product order.
    When a stage was retried, the request and result kept are those the next stage used (see
    :func:`load_archived_cycle`). ``bid`` is the bid that passed validation (None: none was archived).
    """

    cycle_id: str
    snapshot: market_data_pb2.MarketSnapshot | None
    forecast_requests: dict[str, worker_pb2.ForecastRequest]
    forecast_results: dict[str, worker_pb2.ForecastResult]
    optimisation_request: worker_pb2.OptimisationRequest | None
    optimisation_result: worker_pb2.OptimisationResult | None
    bid: bid_pb2.Bid | None
    bid_key: str | None

    @property
    def products(self) -> tuple[str, ...]:
        """Products of the cycle: the snapshot's, else those forecast (in archive order)."""
        if self.snapshot is not None and self.snapshot.products:
            return tuple(self.snapshot.products)
        return tuple(self.forecast_requests)

    @property
    def dispatch_interval(self) -> datetime | None:
        """The interval the cycle bid for (interval-ending AEST): the first interval of its requests."""
        if self.optimisation_request is not None and self.optimisation_request.HasField("first_interval"):
            return from_timestamp(self.optimisation_request.first_interval)
        first = next(iter(self.forecast_requests.values()), None)
        return from_timestamp(first.first_interval) if first is not None and first.HasField(
            "first_interval") else None


def _typed(message: Message, kind: type[M], key: str) -> M:
    if not isinstance(message, kind):
        raise ArchiveReplayError(f"archive object {key} is a {message.DESCRIPTOR.full_name}, "
                                 f"not a {kind.DESCRIPTOR.full_name}")
    return message


def _load_all(archive: Archive, entries: Iterable[ArchiveEntry], kind: type[M]) -> list[M]:
    return [_typed(archive.get(entry.key), kind, entry.key) for entry in entries]


def _matching(candidates: Sequence[M], inputs_hash: str | None) -> M | None:
    """The last candidate with ``inputs_hash`` (the last of all when none matches or no hash is wanted)."""
    matches = [c for c in candidates if inputs_hash is not None and getattr(c, "inputs_hash", None) == inputs_hash]
    pool = matches or list(candidates)
    return pool[-1] if pool else None


def _by_label(entries: Sequence[ArchiveEntry], label: str) -> list[ArchiveEntry]:
    return [entry for entry in entries if entry.label == label]


def _products_in_order(entries: Sequence[ArchiveEntry], snapshot: market_data_pb2.MarketSnapshot | None,
                       ) -> list[str]:
    archived = list(dict.fromkeys(e.label.removeprefix(FORECAST_REQUEST_PREFIX) for e in entries
                                  if e.label.startswith(FORECAST_REQUEST_PREFIX)))
    ordered = [p for p in (snapshot.products if snapshot is not None else []) if p in archived]
    return ordered + [p for p in archived if p not in ordered]


def _plan_used(archive: Archive, entries: Sequence[ArchiveEntry],
               bid: bid_pb2.Bid | None) -> worker_pb2.OptimisationResult | None:
    """The plan the bid names by its content hash (the plan the cycle bid from), else the last archived."""
    plan_entries = _by_label(entries, OPTIMISATION_RESULT_LABEL)
    named = [e for e in plan_entries if bid is not None and bid.plan_hash and e.key == KEY_PREFIX + bid.plan_hash]
    chosen = (named or plan_entries)[-1:]
    return _load_all(archive, chosen, worker_pb2.OptimisationResult)[0] if chosen else None


def load_archived_cycle(archive: Archive, cycle_id: str) -> ArchivedCycle:
    """Read the archived snapshot, requests, results and bid of ``cycle_id`` (see the module docstring).

    The plan is the one the archived bid names (by content hash), the optimisation request the one with
    the plan's inputs hash, the forecasts those that request carries (they were read from the archive),
    and each forecast request the one with its forecast's inputs hash; otherwise the last archived.
    Raises ArchiveReplayError when an object has an unexpected type, ArchiveError when one cannot be read.
    """
    entries = archive.list_cycle(cycle_id)
    snapshots = _load_all(archive, _by_label(entries, SNAPSHOT_LABEL), market_data_pb2.MarketSnapshot)
    snapshot = snapshots[-1] if snapshots else None
    bid_entries = _by_label(entries, BID_LABEL)[-1:]
    bid = _load_all(archive, bid_entries, bid_pb2.Bid)[0] if bid_entries else None
    plan = _plan_used(archive, entries, bid)
    optimisation = _matching(
        _load_all(archive, _by_label(entries, OPTIMISATION_REQUEST_LABEL), worker_pb2.OptimisationRequest),
        plan.inputs_hash if plan is not None else None)
    used = {f.product: f for f in optimisation.forecasts} if optimisation is not None else {}
    requests: dict[str, worker_pb2.ForecastRequest] = {}
    results: dict[str, worker_pb2.ForecastResult] = {}
    for product in _products_in_order(entries, snapshot):
        result = used.get(product)
        if result is None:
            result = _matching(_load_all(archive, _by_label(entries, FORECAST_RESULT_PREFIX + product),
                                         worker_pb2.ForecastResult), None)
        request = _matching(_load_all(archive, _by_label(entries, FORECAST_REQUEST_PREFIX + product),
                                      worker_pb2.ForecastRequest),
                            result.inputs_hash if result is not None else None)
        if request is not None:
            requests[product] = request
        if result is not None:
            results[product] = result
    return ArchivedCycle(cycle_id=cycle_id, snapshot=snapshot, forecast_requests=requests,
                         forecast_results=results, optimisation_request=optimisation, optimisation_result=plan,
                         bid=bid, bid_key=bid_entries[0].key if bid_entries else None)


def replayable_cycle_ids(archive: Archive) -> list[str]:
    """Every archived cycle that recorded at least one forecast request, sorted."""
    return [cycle_id for cycle_id in archive.list_cycles()
            if any(e.label.startswith(FORECAST_REQUEST_PREFIX) for e in archive.list_cycle(cycle_id))]


# --------------------------------------------------------------------------------------------------
# Comparisons (pure)
# --------------------------------------------------------------------------------------------------


def algorithm_text(ref: common_pb2.AlgorithmRef) -> str:
    """``"name vVERSION"`` of an algorithm ref (``"<unnamed>"`` when it names none)."""
    return f"{ref.name} v{ref.version}" if ref.name else "<unnamed>"


def _status_text(status: int) -> str:
    known = status in worker_pb2.ResultStatus.values()
    return worker_pb2.ResultStatus.Name(status).removeprefix("RESULT_STATUS_") if known else str(status)  # type: ignore[arg-type]


def _without(message: M, *names: str) -> M:
    copy = type(message)()
    copy.CopyFrom(message)
    for name in names:
        copy.ClearField(name)
    return copy


def max_abs_diff(replayed: Sequence[float], archived: Sequence[float]) -> float:
    """Largest absolute difference of two equally long series (same units as the values).

    NaN in both at the same position counts as equal; NaN in one only, or different lengths, is ``inf``;
    two empty series differ by 0.
    """
    a = np.asarray(replayed, dtype=np.float64)
    b = np.asarray(archived, dtype=np.float64)
    if a.shape != b.shape:
        return math.inf
    if a.size == 0:
        return 0.0
    both_nan = np.isnan(a) & np.isnan(b)
    if bool(np.any(np.isnan(a) ^ np.isnan(b))):
        return math.inf
    return float(np.max(np.where(both_nan, 0.0, np.abs(a - b))))


@dataclass(frozen=True)
class ForecastComparison:
    """One product's replayed forecast against the archived one.

    ``max_abs_diff`` is the largest price difference ($/MWh, FCAS $/MW/h) over every interval and
    quantile (``inf`` when the shapes differ or either side is missing). ``identical``: the replayed
    result equals the archived one apart from ``compute_ms``. ``failure`` says why no forecast was made.
    """

    product: str
    algorithm: str
    archived_algorithm: str
    max_abs_diff: float
    identical: bool
    status: str
    archived_status: str
    failure: str | None = None


def compare_forecasts(product: str, replayed: worker_pb2.ForecastResult | None,
                      archived: worker_pb2.ForecastResult | None, *, algorithm: str,
                      failure: str | None = None) -> ForecastComparison:
    """Compare a replayed forecast of ``product`` (None: it failed with ``failure``) with the archived one."""
    diff, identical = math.inf, False
    if replayed is not None and archived is not None:
        diff = max_abs_diff(replayed.price, archived.price)
        identical = _without(replayed, "compute_ms") == _without(archived, "compute_ms")
    return ForecastComparison(
        product=product, algorithm=algorithm,
        archived_algorithm=algorithm_text(archived.algorithm) if archived is not None else "<not archived>",
        max_abs_diff=diff, identical=identical,
        status=_status_text(replayed.status) if replayed is not None else "NONE",
        archived_status=_status_text(archived.status) if archived is not None else "NONE",
        failure=failure)


@dataclass(frozen=True)
class PlanComparison:
    """The replayed plan against the archived one (replayed − archived).

    ``objective_diff_dollars`` ($); ``first_interval_net_mw_diff`` the difference of gen − load (MW) in
    the plan's first interval and ``first_interval_fcas_mw_diff`` the largest FCAS enablement difference
    there (MW), both None when either plan has no intervals; ``max_abs_mw_diff`` the largest gen, load or
    FCAS difference (MW) over the whole horizon (``inf`` when the shapes differ). ``identical``: equal
    apart from ``solve_ms`` and the inputs hash (which follows the forecasts' compute times when the
    forecaster is replayed).
    """

    algorithm: str
    archived_algorithm: str
    status: str
    archived_status: str
    objective_diff_dollars: float
    first_interval_net_mw_diff: float | None
    first_interval_fcas_mw_diff: float | None
    max_abs_mw_diff: float
    identical: bool


def _fcas_schedules(plan: worker_pb2.OptimisationResult) -> dict[str, list[float]]:
    return {schedule.product: list(schedule.enablement_mw) for schedule in plan.fcas}


def _first(values: Sequence[float]) -> float:
    return float(values[0]) if len(values) else 0.0


def compare_plans(replayed: worker_pb2.OptimisationResult,
                  archived: worker_pb2.OptimisationResult) -> PlanComparison:
    """Compare a replayed plan with the archived one (MW, $; see :class:`PlanComparison`)."""
    replayed_fcas, archived_fcas = _fcas_schedules(replayed), _fcas_schedules(archived)
    products = sorted(set(replayed_fcas) | set(archived_fcas))
    has_first = len(replayed.gen_mw) > 0 and len(archived.gen_mw) > 0 and len(replayed.load_mw) > 0 \
        and len(archived.load_mw) > 0
    net_diff = ((replayed.gen_mw[0] - replayed.load_mw[0]) - (archived.gen_mw[0] - archived.load_mw[0])
                if has_first else None)
    fcas_diff = (max((abs(_first(replayed_fcas.get(p, [])) - _first(archived_fcas.get(p, []))) for p in products),
                     default=0.0) if has_first else None)
    mw_diffs = [max_abs_diff(replayed.gen_mw, archived.gen_mw), max_abs_diff(replayed.load_mw, archived.load_mw)]
    mw_diffs += [max_abs_diff(replayed_fcas.get(p, []), archived_fcas.get(p, [])) for p in products]
    return PlanComparison(
        algorithm=algorithm_text(replayed.algorithm), archived_algorithm=algorithm_text(archived.algorithm),
        status=_status_text(replayed.status), archived_status=_status_text(archived.status),
        objective_diff_dollars=replayed.objective_dollars - archived.objective_dollars,
        first_interval_net_mw_diff=net_diff, first_interval_fcas_mw_diff=fcas_diff,
        max_abs_mw_diff=max(mw_diffs),
        identical=_without(replayed, "solve_ms", "inputs_hash") == _without(archived, "solve_ms", "inputs_hash"))


@dataclass(frozen=True)
class BidComparison:
    """The replayed bid against the archived bid for the same first dispatch interval.

    ``first_interval_bands_equal``: every offer (ENERGY GEN and LOAD, each FCAS product) has the same
    band availabilities (MW) in the bid's first dispatch interval; ``first_interval_band_max_abs_diff_mw``
    the largest difference there (``inf`` when an offer is missing on one side); ``offer_differences``
    names each differing offer. ``material_changes`` are the differences :func:`algorithms.market.rebid.
    material_changes` would rebid for. ``identical``: equal apart from plan hash and rebid explanation.
    """

    first_interval_bands_equal: bool
    first_interval_band_max_abs_diff_mw: float
    offer_differences: tuple[str, ...]
    material_changes: tuple[str, ...]
    identical: bool


def _offer_label(offer: bid_pb2.ProductOffer) -> str:
    side = _SIDES.get(offer.direction)
    return f"{offer.product}/{side}" if side else offer.product


def first_interval_bands(bid: bid_pb2.Bid) -> dict[str, tuple[float, ...]]:
    """Band availabilities (MW) of every offer in the bid's first dispatch interval, keyed by
    ``"PRODUCT"`` or ``"PRODUCT/GEN|LOAD"``; an offer with no period for that interval maps to ()."""
    first = bid.dispatch_interval.seconds
    bands: dict[str, tuple[float, ...]] = {}
    for offer in bid.offers:
        period = next((p for p in offer.periods if p.dispatch_interval.seconds == first), None)
        bands[_offer_label(offer)] = tuple(period.band_avail_mw) if period is not None else ()
    return bands


def bid_decision(bid: bid_pb2.Bid) -> bid_pb2.Bid:
    """The bid without its plan hash and rebid explanation: what it offers, not which plan it names."""
    return _without(bid, "plan_hash", "rebid_explanation")


def compare_bids(replayed: bid_pb2.Bid, archived: bid_pb2.Bid, tolerance_mw: float) -> BidComparison:
    """Compare a replayed bid with the archived one (MW; ``tolerance_mw`` for material changes)."""
    new, old = first_interval_bands(replayed), first_interval_bands(archived)
    differences: list[str] = []
    largest = 0.0
    for label in list(new) + [label for label in old if label not in new]:
        diff = max_abs_diff(new.get(label, ()), old.get(label, ())) if label in new and label in old else math.inf
        largest = max(largest, diff)
        if new.get(label) != old.get(label):
            differences.append(f"{label}: {list(old.get(label, ()))} -> {list(new.get(label, ()))} MW")
    same_interval = replayed.dispatch_interval == archived.dispatch_interval
    if not same_interval:
        differences.insert(0, f"first interval {from_timestamp(archived.dispatch_interval):%Y-%m-%d %H:%M} -> "
                              f"{from_timestamp(replayed.dispatch_interval):%Y-%m-%d %H:%M}")
    return BidComparison(
        first_interval_bands_equal=same_interval and not differences,
        first_interval_band_max_abs_diff_mw=largest if same_interval else math.inf,
        offer_differences=tuple(differences),
        material_changes=tuple(material_changes(replayed, archived, tolerance_mw)),
        identical=bid_decision(replayed) == bid_decision(archived))


# --------------------------------------------------------------------------------------------------
# Replaying one cycle
# --------------------------------------------------------------------------------------------------


def rebuild_bid(plan: worker_pb2.OptimisationResult, battery: common_pb2.BatterySpec, settings: Settings, *,
                dispatch_interval: datetime, offer_time: datetime, version: int, products: Sequence[str],
                initial_state_of_charge_mwh: float, standing_bid: StandingBid | None = None,
                daily_band_prices: Mapping[tuple[str, int], Sequence[float]] | None = None,
                controls: EffectiveControls | None = None,
                daily_bids: DailyBidsInForce | None = None) -> BidDecision:
    """The ``build_and_validate_bid`` activity's decision for ``plan``:
    :func:`algorithms.market.bid_decision.decide_bid` (band ladders and rules from ``settings``).

    ``dispatch_interval`` (interval-ending AEST) and ``offer_time`` (AEST) place the bid, ``products``
    are the snapshot's (ENERGY and the FCAS names), ``initial_state_of_charge_mwh`` the stored energy (MWh) at the
    start of the plan. The archive keeps neither the bid in force nor the day's band prices nor the
    operator's controls (the archived battery already carries a SoC hold), so a replay of the archive
    decides without them: no bid in force (the bid is always built, never suppressed as "no material
    change") and V4 checks only the entry type; ``standing_bid``, ``daily_band_prices`` and ``controls``
    give them when they are known. Nor does it keep which DAILY bids were in force: ``daily_bids`` gives
    them (None: no DAILY bid is decided and the configured ladder is used).
    """
    return decide_bid(plan, standing_bid=standing_bid, controls=controls or EffectiveControls(), battery=battery,
                      bidding=settings.bidding, rules=settings.market, products=products,
                      daily_band_prices=daily_band_prices, dispatch_interval=dispatch_interval,
                      offer_time=offer_time, version=version, initial_state_of_charge_mwh=initial_state_of_charge_mwh,
                      plan_hash=archive_key(plan).removeprefix("sha256:"), daily_bids=daily_bids)


@dataclass(frozen=True)
class CycleReplay:
    """One archived cycle replayed: per-stage comparisons and what the replay produced.

    ``forecasts`` has one comparison per archived forecast request; ``plan`` is None when the cycle
    archived no optimisation request and result or the replay made no plan; ``bid`` is None when there was
    no archived bid or replayed bid to compare. ``failure`` says why a stage could not be replayed.
    ``replayed_*`` are the replay's own results (not part of equality).
    """

    cycle_id: str
    dispatch_interval: datetime | None
    forecast_algorithm: str
    optimiser_algorithm: str
    forecasts: tuple[ForecastComparison, ...]
    plan: PlanComparison | None
    bid: BidComparison | None
    bid_source: str
    bid_violations: tuple[str, ...]
    archived_bid_key: str | None
    failure: str | None
    replayed_forecasts: dict[str, worker_pb2.ForecastResult] = field(default_factory=dict, compare=False)
    replayed_plan: worker_pb2.OptimisationResult | None = field(default=None, compare=False)
    replayed_bid: bid_pb2.Bid | None = field(default=None, compare=False)

    @property
    def forecast_max_abs_diff(self) -> float:
        """The largest forecast price difference of the cycle ($/MWh or $/MW/h; 0 with no forecasts)."""
        return max((f.max_abs_diff for f in self.forecasts), default=0.0)

    @property
    def reproduced(self) -> bool:
        """No failure, every forecast and the plan identical, and the bid identical when one was compared."""
        return (self.failure is None and all(f.identical for f in self.forecasts)
                and self.plan is not None and self.plan.identical
                and (self.bid is None or self.bid.identical)
                and (self.bid is not None or self.archived_bid_key is None))


def with_algorithm(request: M, algorithm: common_pb2.AlgorithmRef) -> M:
    """A copy of a worker request naming ``algorithm``, with its inputs hash recomputed."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.algorithm.CopyFrom(algorithm)  # type: ignore[attr-defined]
    return with_inputs_hash(copy)


def with_forecasts(request: worker_pb2.OptimisationRequest,
                   forecasts: Iterable[worker_pb2.ForecastResult]) -> worker_pb2.OptimisationRequest:
    """A copy of an optimisation request over ``forecasts`` (ordered by product, as the cycle orders
    them), with its inputs hash recomputed."""
    copy = worker_pb2.OptimisationRequest()
    copy.CopyFrom(request)
    del copy.forecasts[:]
    copy.forecasts.extend(sorted(forecasts, key=lambda f: f.product))
    return with_inputs_hash(copy)


def _run(registry: HandlerRegistry, kind: str, request: Message, result_type: type[M]) -> M:
    ref: common_pb2.AlgorithmRef = request.algorithm  # type: ignore[attr-defined]
    result = registry.resolve(kind, ref.name, ref.version)(request)
    if not isinstance(result, result_type):
        raise InvalidRequestError(f"the {kind} handler {algorithm_text(ref)} answered a "
                                  f"{type(result).__name__}, not a {result_type.DESCRIPTOR.full_name}")
    return result


def _replay_forecasts(cycle: ArchivedCycle, registry: HandlerRegistry,
                      override: common_pb2.AlgorithmRef | None,
                      ) -> tuple[dict[str, worker_pb2.ForecastResult], list[ForecastComparison]]:
    results: dict[str, worker_pb2.ForecastResult] = {}
    comparisons: list[ForecastComparison] = []
    for product, archived_request in cycle.forecast_requests.items():
        request = with_algorithm(archived_request, override) if override is not None else archived_request
        failure: str | None = None
        try:
            results[product] = _run(registry, "forecast", request, worker_pb2.ForecastResult)
        except InvalidRequestError as error:
            failure = str(error)
        comparisons.append(compare_forecasts(product, results.get(product), cycle.forecast_results.get(product),
                                             algorithm=algorithm_text(request.algorithm), failure=failure))
    return results, comparisons


def _offer_time_and_version(cycle: ArchivedCycle) -> tuple[datetime, int]:
    """The archived bid's offer time (AEST) and version; without one, the latest forecast decision time
    and version 1."""
    if cycle.bid is not None:
        return from_timestamp(cycle.bid.offer_time), cycle.bid.version
    decisions = [from_timestamp(r.decision_time) for r in cycle.forecast_requests.values()
                 if r.HasField("decision_time")]
    if not decisions:
        raise ArchiveReplayError(f"cycle {cycle.cycle_id} archived no bid and no forecast decision time")
    return max(decisions), DEFAULT_BID_VERSION


def _optimisation_request(cycle: ArchivedCycle, forecasts: Mapping[str, worker_pb2.ForecastResult],
                          forecast_override: common_pb2.AlgorithmRef | None,
                          optimiser_override: common_pb2.AlgorithmRef | None) -> worker_pb2.OptimisationRequest:
    request = cycle.optimisation_request
    if request is None:
        raise ArchiveReplayError(f"cycle {cycle.cycle_id} archived no optimisation request")
    if forecast_override is not None:
        missing = sorted(set(cycle.forecast_requests) - set(forecasts))
        if missing:
            raise ArchiveReplayError(f"no replayed forecast for {', '.join(missing)}: cannot optimise")
        request = with_forecasts(request, forecasts.values())
    return with_algorithm(request, optimiser_override) if optimiser_override is not None else request


def replay_cycle(cycle: ArchivedCycle, settings: Settings, registry: HandlerRegistry, *,
                 forecast_algorithm: common_pb2.AlgorithmRef | None = None,
                 optimiser_algorithm: common_pb2.AlgorithmRef | None = None) -> CycleReplay:
    """Replay one archived cycle through ``registry``'s handlers and compare with what it archived.

    ``forecast_algorithm`` / ``optimiser_algorithm`` replace the recorded algorithm (see the module
    docstring). A stage that cannot run (unknown algorithm, invalid request, nothing archived) ends the
    replay of the cycle with its reason in ``failure``; the earlier stages' comparisons are kept. A failed
    forecast of the recorded algorithm is reported the same way, but the plan is still replayed from the
    archived forecasts.
    """
    forecasts, forecast_comparisons = _replay_forecasts(cycle, registry, forecast_algorithm)
    recorded_forecasters = [r.algorithm for r in cycle.forecast_requests.values()]
    recorded_optimiser = [cycle.optimisation_request.algorithm] if cycle.optimisation_request is not None else []
    replay = CycleReplay(
        cycle_id=cycle.cycle_id, dispatch_interval=cycle.dispatch_interval,
        forecast_algorithm=_stage_algorithm(forecast_algorithm, recorded_forecasters),
        optimiser_algorithm=_stage_algorithm(optimiser_algorithm, recorded_optimiser),
        forecasts=tuple(forecast_comparisons), plan=None, bid=None, bid_source="none", bid_violations=(),
        archived_bid_key=cycle.bid_key, failure=None, replayed_forecasts=forecasts)
    failed = [f for f in forecast_comparisons if f.failure is not None]
    forecast_failure = f"forecast {failed[0].product}: {failed[0].failure}" if failed else None
    if forecast_failure is not None and forecast_algorithm is not None:
        return _failed(replay, forecast_failure)  # the plan would need the failed forecasts
    try:
        request = _optimisation_request(cycle, forecasts, forecast_algorithm, optimiser_algorithm)
        plan = _run(registry, "optimisation", request, worker_pb2.OptimisationResult)
        offer_time, version = _offer_time_and_version(cycle)
    except (InvalidRequestError, ArchiveReplayError) as error:
        return _failed(replay, str(error))
    replay = _with(replay, replayed_plan=plan,
                   plan=compare_plans(plan, cycle.optimisation_result) if cycle.optimisation_result else None)
    built = rebuild_bid(plan, request.battery, settings, dispatch_interval=from_timestamp(request.first_interval),
                        offer_time=offer_time, version=version, products=cycle.products,
                        initial_state_of_charge_mwh=request.initial_state_of_charge_mwh)
    compared = (compare_bids(built.bid, cycle.bid, settings.bidding.rebid_materiality_mw)
                if built.bid is not None and cycle.bid is not None else None)
    return _with(replay, replayed_bid=built.bid, bid=compared, bid_source=built.candidate or "none",
                 bid_violations=built.violations, failure=forecast_failure)


def _stage_algorithm(override: common_pb2.AlgorithmRef | None, recorded: Sequence[common_pb2.AlgorithmRef]) -> str:
    if override is not None:
        return algorithm_text(override)
    names = sorted({algorithm_text(ref) for ref in recorded})
    return ", ".join(names) if names else "<none>"


def _with(replay: CycleReplay, **changes: object) -> CycleReplay:
    return replace(replay, **changes)  # type: ignore[arg-type]


def _failed(replay: CycleReplay, reason: str) -> CycleReplay:
    return _with(replay, failure=reason)


# --------------------------------------------------------------------------------------------------
# Replaying the archive
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveReplayReport:
    """Every replayed cycle and the totals over them ($/MWh, $, MW).

    ``forecast_algorithm`` / ``optimiser_algorithm`` name the overrides (None: the recorded versions).
    """

    cycles: tuple[CycleReplay, ...]
    forecast_algorithm: str | None
    optimiser_algorithm: str | None

    @property
    def failed_cycles(self) -> int:
        """Cycles whose replay could not run to the end."""
        return sum(c.failure is not None for c in self.cycles)

    @property
    def forecasts_compared(self) -> int:
        """Forecasts replayed with an archived result to compare against."""
        return sum(1 for c in self.cycles for f in c.forecasts if f.failure is None and f.archived_status != "NONE")

    @property
    def forecasts_identical(self) -> int:
        """Replayed forecasts identical to the archived ones (apart from compute time)."""
        return sum(f.identical for c in self.cycles for f in c.forecasts)

    @property
    def forecast_max_abs_diff(self) -> float:
        """The largest forecast price difference over every cycle ($/MWh or $/MW/h)."""
        return max((c.forecast_max_abs_diff for c in self.cycles), default=0.0)

    @property
    def plans_compared(self) -> int:
        """Plans replayed with an archived plan to compare against."""
        return sum(c.plan is not None for c in self.cycles)

    @property
    def plans_identical(self) -> int:
        """Replayed plans identical to the archived ones (apart from solve time and inputs hash)."""
        return sum(c.plan is not None and c.plan.identical for c in self.cycles)

    @property
    def max_abs_objective_diff_dollars(self) -> float:
        """The largest plan objective difference over every cycle ($)."""
        return max((abs(c.plan.objective_diff_dollars) for c in self.cycles if c.plan is not None), default=0.0)

    @property
    def max_abs_first_interval_net_mw_diff(self) -> float:
        """The largest first-interval net MW (gen − load) difference of the plans (MW)."""
        return max((abs(c.plan.first_interval_net_mw_diff) for c in self.cycles
                    if c.plan is not None and c.plan.first_interval_net_mw_diff is not None), default=0.0)

    @property
    def bids_compared(self) -> int:
        """Replayed bids with an archived bid to compare against."""
        return sum(c.bid is not None for c in self.cycles)

    @property
    def bids_first_interval_equal(self) -> int:
        """Replayed bids whose first-interval band availabilities equal the archived bid's."""
        return sum(c.bid is not None and c.bid.first_interval_bands_equal for c in self.cycles)

    @property
    def bids_identical(self) -> int:
        """Replayed bids identical to the archived ones (apart from plan hash and rebid explanation)."""
        return sum(c.bid is not None and c.bid.identical for c in self.cycles)

    @property
    def reproduced(self) -> bool:
        """At least one cycle replayed, and every cycle reproduced (see :attr:`CycleReplay.reproduced`)."""
        return bool(self.cycles) and all(c.reproduced for c in self.cycles)

    def summary(self) -> str:
        """One line of totals for operators."""
        return (f"{len(self.cycles)} cycles ({self.failed_cycles} failed): forecasts identical "
                f"{self.forecasts_identical}/{self.forecasts_compared}, max diff {self.forecast_max_abs_diff:.6g}; "
                f"plans identical {self.plans_identical}/{self.plans_compared}, max objective diff "
                f"${self.max_abs_objective_diff_dollars:,.2f}, max first-interval diff "
                f"{self.max_abs_first_interval_net_mw_diff:.3f} MW; bids first interval equal "
                f"{self.bids_first_interval_equal}/{self.bids_compared}")


def _check_override(label: str, ref: common_pb2.AlgorithmRef | None) -> None:
    if ref is not None and not (ref.name and ref.version):
        raise ValueError(f"{label} override must name an algorithm and a version, got {algorithm_text(ref)!r} "
                         f"v{ref.version!r}")


def replay_archived_cycles(archive: Archive, settings: Settings, *, cycle_ids: Sequence[str] | None = None,
                           forecast_algorithm: common_pb2.AlgorithmRef | None = None,
                           optimiser_algorithm: common_pb2.AlgorithmRef | None = None,
                           registry: HandlerRegistry | None = None) -> ArchiveReplayReport:
    """Replay archived live cycles (every cycle that archived a forecast request, or ``cycle_ids`` in
    that order) through the algorithms the worker pools serve and compare with what each cycle decided.

    ``forecast_algorithm`` / ``optimiser_algorithm`` replay with another registered algorithm or version
    instead of the recorded one; ``registry`` serves the handlers (default
    :func:`algorithms.registry.default_registry`). ``settings`` gives the bid ladders and market rules. A
    cycle that cannot be read or replayed is reported with its reason, not raised. ValueError for an
    override without name or version.
    """
    _check_override("forecast_algorithm", forecast_algorithm)
    _check_override("optimiser_algorithm", optimiser_algorithm)
    handlers = registry if registry is not None else default_registry()
    ids = list(cycle_ids) if cycle_ids is not None else replayable_cycle_ids(archive)
    replays = [_replay_one(archive, settings, handlers, cycle_id, forecast_algorithm, optimiser_algorithm)
               for cycle_id in ids]
    return ArchiveReplayReport(
        cycles=tuple(replays),
        forecast_algorithm=algorithm_text(forecast_algorithm) if forecast_algorithm is not None else None,
        optimiser_algorithm=algorithm_text(optimiser_algorithm) if optimiser_algorithm is not None else None)


def _replay_one(archive: Archive, settings: Settings, registry: HandlerRegistry, cycle_id: str,
                forecast_algorithm: common_pb2.AlgorithmRef | None,
                optimiser_algorithm: common_pb2.AlgorithmRef | None) -> CycleReplay:
    try:
        cycle = load_archived_cycle(archive, cycle_id)
    except (ArchiveError, ArchiveReplayError) as error:
        return _unreadable(cycle_id, f"archive: {error}")
    if not cycle.forecast_requests:
        return _unreadable(cycle_id, f"cycle {cycle_id} archived no forecast request")
    return replay_cycle(cycle, settings, registry, forecast_algorithm=forecast_algorithm,
                        optimiser_algorithm=optimiser_algorithm)


def _unreadable(cycle_id: str, reason: str) -> CycleReplay:
    return CycleReplay(cycle_id=cycle_id, dispatch_interval=None, forecast_algorithm="<none>",
                       optimiser_algorithm="<none>", forecasts=(), plan=None, bid=None, bid_source="none",
                       bid_violations=(), archived_bid_key=None, failure=reason)
