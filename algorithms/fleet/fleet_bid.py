"""A VPP node's aggregated site plans bid as ONE bidirectional battery unit (energy only).

The home batteries under a node plan themselves (:mod:`algorithms.fleet.plan_aggregate` sums their plans up
the asset graph, with bounds). The AutoBidder bids that aggregate like any battery: the aggregated plan
becomes an :class:`OptimisationResult` on the market's 5-minute grid (:func:`fleet_plan_result`), the
ordinary bid builder (:func:`algorithms.market.bid_builder.build_bid`) turns it into a price-contingent bid,
and :func:`build_fleet_bid` then caps every interval at what the fleet can be trusted to deliver and
validates the result. Steps:

1. **The unit** (:func:`fleet_unit_spec`): registered capacity = min(Σ max discharge, Σ max charge) of
   the member sites (the wire format has one capacity for both directions, and MAXAVAIL ≤ capacity is
   checked on both sides, so the honest figure is the one the fleet reaches in EITHER direction; a fleet
   whose inverters charge slower than they discharge loses the difference on the GEN side); storage =
   Σ capacity; minimum state of charge = the capacity-weighted backup reserve (= Σ reserve kWh);
   efficiencies capacity-weighted; ramp capability = full power in one minute, and at least 1 MW/min
   (home inverters go from full charge to full discharge within a second or two, so both are well
   within what the fleet does; bids carry whole MW/min, and a sub-MW fleet registered at its power
   per minute would bid 0 MW/min and be frozen by the market's ramp limit); the minimum ramp rate a
   bid may carry without a reason is the NER's lesser of 3 MW/min and 3 % of capacity per minute.
2. **The plan** (:func:`fleet_plan_result`): each plan interval's battery power is repeated on every
   5-minute dispatch interval it contains; ``gen_mw = max(battery power, 0)``, ``load_mw =
   max(−battery power, 0)`` — what the unit bids is the batteries' own power; household load and rooftop
   PV are behind the meters and not part of the unit. The stored energy follows the aggregated plan's
   state of charge, linear within each plan interval; the energy at the window's start is the first
   interval's end energy with that interval's planned power undone through the unit's efficiencies.
   No FCAS: the fleet unit bids energy only — home batteries' FCAS would need certified high-speed
   metering at every site, a later step.
3. **The cap.** After :func:`build_bid`, each interval's GEN side offers at most ``max(P + D_low, 0)``
   and the LOAD side at most ``max(−P + C_low, 0)``, with ``P`` the planned battery power (estimate,
   + discharge) and ``D_low`` / ``C_low`` the LOWER bounds of the discharge / charge flexibility: the
   planned discharge plus the extra discharge the fleet can give with the aggregation's confidence.
   (Flexibility is measured from the plan, so where the plan charges, stopping that charge uses part of
   the discharge flexibility: the planned charge counts as negative planned discharge.) Where a side
   holds more, bands are removed from the one least likely to be dispatched: GEN from the highest
   price down, LOAD from the lowest price up — both keep the planned MW (GEN's cheapest band, LOAD's
   dearest) and give up headroom first. Removing MW never breaks convexity (the effective bands only
   shrink); MAXAVAIL is set to the new band sum. All MW are whole kW, rounded down.
4. **Validation.** :func:`algorithms.market.bid_validation.validate_bid` (ENERGY only). A bid with violations
   is not returned: :class:`FleetBid` carries the violations and no bid, and the caller does not submit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from algorithms.common import nem_time
from algorithms.common.errors import InvalidRequestError
from algorithms.common.products import ENERGY
from algorithms.fleet.fleet_types import FloatArray, IntArray, SiteParameters
from algorithms.fleet.plan_aggregate import PlanAggregate
from algorithms.market.bid_builder import build_bid
from algorithms.market.bid_validation import Violation, validate_bid
from settings import BiddingSettings, MarketRules
from vpp.v1 import bid_pb2, common_pb2, worker_pb2

FLEET_ALGORITHM = common_pb2.AlgorithmRef(name="fleet-plan-aggregate", version="1")
"""Algorithm named on the OptimisationResult built from a node's aggregated site plans."""
NER_MIN_RAMP_MW_PER_MIN = 3.0
"""NER 3.8.3A: a bid's ramp rate may not be below the lesser of this and ..."""
NER_MIN_RAMP_FRACTION_PER_MIN = 0.03
"""... this fraction of the unit's capacity per minute (without a ramp rate reason)."""
MIN_REGISTERED_RAMP_MW_PER_MIN = 1.0
"""The smallest whole ramp rate (MW/min) a bid can carry that does not freeze the unit."""
_KW_PER_MW = 1000
_MINUTES_PER_HOUR = 60.0


class FleetBidError(InvalidRequestError):
    """A fleet unit or fleet bid that cannot be built from the inputs given (the message says why)."""


def _site_column(name: str, values: FloatArray, count: int) -> FloatArray:
    column = np.asarray(values, dtype=np.float64)
    if column.shape != (count,):
        raise FleetBidError(f"{name} has shape {column.shape}, expected ({count},)")
    if not bool(np.all(np.isfinite(column))):
        raise FleetBidError(f"{name} holds non-finite values")
    return column


def fleet_unit_of_sites(unit_id: str, region: str, parameters: SiteParameters) -> common_pb2.BatterySpec:
    """:func:`fleet_unit_spec` of the sites of ``parameters`` (their batteries and owners' reserves)."""
    return fleet_unit_spec(unit_id, region, parameters.capacity_kwh, parameters.max_discharge_kw,
                           parameters.max_charge_kw, parameters.charge_efficiency, parameters.discharge_efficiency,
                           parameters.backup_reserve_fraction)


def fleet_unit_spec(unit_id: str, region: str, capacity_kwh: FloatArray, max_discharge_kw: FloatArray,
                    max_charge_kw: FloatArray, charge_efficiency: FloatArray, discharge_efficiency: FloatArray,
                    reserve_fraction: FloatArray, *, mlf_gen: float = 1.0, mlf_load: float = 1.0,
                    min_ramp_rate_mw_per_min: float | None = None) -> common_pb2.BatterySpec:
    """The market registration of a node's home batteries as one bidirectional unit (module docstring, 1).

    Args:
        unit_id, region: the unit's market identity.
        capacity_kwh: usable capacity per member site (kWh, > 0).
        max_discharge_kw, max_charge_kw: inverter limits per site (kW, ≥ 0).
        charge_efficiency, discharge_efficiency: per site, (0, 1].
        reserve_fraction: each owner's backup reserve (fraction of capacity, 0–1).
        mlf_gen, mlf_load: the unit's marginal loss factors (> 0).
        min_ramp_rate_mw_per_min: the registered minimum ramp rate (MW/min); default the NER's lesser of
            3 MW/min and 3 % of the unit's capacity per minute.

    Returns:
        BatterySpec in MW, MWh and fractions: power = min(Σ discharge, Σ charge) / 1000, energy = Σ
        capacity / 1000, SoC limits [capacity-weighted reserve, 1], capacity-weighted efficiencies,
        ramp = power per minute, at least 1 MW/min.

    Raises:
        FleetBidError: no sites, arrays of different lengths, non-finite or out-of-range values.
    """
    capacity = np.asarray(capacity_kwh, dtype=np.float64)
    count = len(capacity)
    if capacity.ndim != 1 or count == 0:
        raise FleetBidError("a fleet unit needs at least one site (capacity_kwh is empty or not 1-D)")
    capacity = _site_column("capacity_kwh", capacity, count)
    discharge_kw = _site_column("max_discharge_kw", max_discharge_kw, count)
    charge_kw = _site_column("max_charge_kw", max_charge_kw, count)
    eta_c = _site_column("charge_efficiency", charge_efficiency, count)
    eta_d = _site_column("discharge_efficiency", discharge_efficiency, count)
    reserve = _site_column("reserve_fraction", reserve_fraction, count)
    problems = [name for name, ok in (
        ("capacity_kwh > 0", bool(np.all(capacity > 0))),
        ("max_discharge_kw ≥ 0", bool(np.all(discharge_kw >= 0))),
        ("max_charge_kw ≥ 0", bool(np.all(charge_kw >= 0))),
        ("efficiencies in (0, 1]", bool(np.all((eta_c > 0) & (eta_c <= 1) & (eta_d > 0) & (eta_d <= 1)))),
        ("reserve_fraction in [0, 1]", bool(np.all((reserve >= 0) & (reserve <= 1)))),
        ("loss factors > 0", mlf_gen > 0 and mlf_load > 0),
    ) if not ok]
    if problems:
        raise FleetBidError(f"fleet unit {unit_id!r} needs {', '.join(problems)}")
    total_kwh = float(capacity.sum())
    power_mw = min(float(discharge_kw.sum()), float(charge_kw.sum())) / _KW_PER_MW
    if min_ramp_rate_mw_per_min is None:
        min_ramp_rate_mw_per_min = min(NER_MIN_RAMP_MW_PER_MIN, NER_MIN_RAMP_FRACTION_PER_MIN * power_mw)
    return common_pb2.BatterySpec(
        unit_id=unit_id,
        region=region,
        power_mw=power_mw,
        energy_mwh=total_kwh / _KW_PER_MW,
        charge_efficiency=float(eta_c @ capacity) / total_kwh,
        discharge_efficiency=float(eta_d @ capacity) / total_kwh,
        soc_min_fraction=min(float(reserve @ capacity) / total_kwh, 1.0),
        soc_max_fraction=1.0,
        mlf_gen=mlf_gen,
        mlf_load=mlf_load,
        ramp_rate_mw_per_min=max(power_mw, MIN_REGISTERED_RAMP_MW_PER_MIN),
        min_ramp_rate_mw_per_min=min_ramp_rate_mw_per_min,
    )


@dataclass(frozen=True)
class _NodePlan:
    """One node's plan figures per plan interval (MW, MWh), checked finite."""

    battery_power_mw: FloatArray
    state_of_charge_mwh: FloatArray
    discharge_flexibility_low_mw: FloatArray
    charge_flexibility_low_mw: FloatArray


def _node_plan(aggregate: PlanAggregate, node_index: int) -> _NodePlan:
    if not 0 <= node_index < aggregate.node_count:
        raise FleetBidError(f"node_index {node_index} outside 0..{aggregate.node_count - 1}")
    plan = _NodePlan(
        battery_power_mw=aggregate.battery_power_mw.estimate[node_index],
        state_of_charge_mwh=aggregate.state_of_charge_mwh.estimate[node_index],
        discharge_flexibility_low_mw=aggregate.discharge_flexibility_mw.lower[node_index],
        charge_flexibility_low_mw=aggregate.charge_flexibility_mw.lower[node_index],
    )
    finite = (np.isfinite(plan.battery_power_mw) & np.isfinite(plan.state_of_charge_mwh)
              & np.isfinite(plan.discharge_flexibility_low_mw) & np.isfinite(plan.charge_flexibility_low_mw))
    if not bool(finite.all()):
        bad = np.flatnonzero(~finite)
        first = nem_time.unix_ms_to_market(aggregate.interval_start_ms(int(bad[0])))
        raise FleetBidError(f"node {node_index}'s plan aggregate is not finite in {len(bad)} plan interval(s) "
                            f"(first starting {first:%Y-%m-%d %H:%M}): too few planned sites to estimate from")
    return plan


def _sub_intervals(aggregate: PlanAggregate, interval_minutes: int) -> int:
    if interval_minutes < 1 or aggregate.plan_interval_minutes % interval_minutes != 0:
        raise FleetBidError(f"plan intervals of {aggregate.plan_interval_minutes} min are not a whole number "
                            f"of {interval_minutes}-minute dispatch intervals")
    if aggregate.start_ms % (interval_minutes * 60_000) != 0:
        raise FleetBidError(f"the aggregate window starts off the {interval_minutes}-minute grid "
                            f"(start_ms {aggregate.start_ms})")
    return aggregate.plan_interval_minutes // interval_minutes


def fleet_initial_state_of_charge_mwh(aggregate: PlanAggregate, node_index: int, spec: common_pb2.BatterySpec) -> float:
    """Stored energy (MWh) of the node's batteries at the start of the aggregate's window.

    The first plan interval's end energy with its planned power undone through the unit's efficiencies:
    ``soc_end + gen·h/η_d − load·h·η_c`` (``h`` the plan interval in hours).
    """
    plan = _node_plan(aggregate, node_index)
    if not (0 < spec.charge_efficiency <= 1 and 0 < spec.discharge_efficiency <= 1):
        raise FleetBidError(f"unit {spec.unit_id!r} has efficiencies outside (0, 1]")
    hours = aggregate.plan_interval_minutes / _MINUTES_PER_HOUR
    power = float(plan.battery_power_mw[0])
    gen, load = max(power, 0.0), max(-power, 0.0)
    return float(plan.state_of_charge_mwh[0]) + gen * hours / spec.discharge_efficiency \
        - load * hours * spec.charge_efficiency


def fleet_plan_result(aggregate: PlanAggregate, node_index: int, spec: common_pb2.BatterySpec, *,
                      interval_minutes: int = 5) -> worker_pb2.OptimisationResult:
    """The node's aggregated plan as an OPTIMAL OptimisationResult on the dispatch grid (module docstring, 2).

    The first interval is the one ending ``interval_minutes`` after the window's start (market time,
    AEST); every plan interval becomes ``plan_interval_minutes / interval_minutes`` dispatch intervals
    with the same ``gen_mw`` / ``load_mw`` (MW) and the state of charge (MWh, end of each interval)
    interpolated linearly from the interval's start to its end. ``spec`` gives the efficiencies that
    recover the stored energy at the window's start. No FCAS schedules.

    Raises:
        FleetBidError: node index out of range, a window or plan interval off the dispatch grid, or
            non-finite figures (too few planned sites to estimate the node from).
    """
    repeat = _sub_intervals(aggregate, interval_minutes)
    plan = _node_plan(aggregate, node_index)
    power = np.repeat(plan.battery_power_mw, repeat)
    soc_end = plan.state_of_charge_mwh
    soc_start = np.concatenate([[fleet_initial_state_of_charge_mwh(aggregate, node_index, spec)], soc_end[:-1]])
    fraction = np.arange(1, repeat + 1) / repeat
    soc = (soc_start[:, None] + (soc_end - soc_start)[:, None] * fraction[None, :]).ravel()
    first = nem_time.unix_ms_to_market(aggregate.start_ms) + timedelta(minutes=interval_minutes)
    return worker_pb2.OptimisationResult(
        algorithm=FLEET_ALGORITHM,
        status=worker_pb2.RESULT_STATUS_OPTIMAL,
        status_reason=f"aggregated site plans on forecast v{aggregate.current_version}",
        first_interval=nem_time.to_timestamp(first),
        horizon_intervals=len(power),
        gen_mw=np.maximum(power, 0.0).tolist(),
        load_mw=np.maximum(-power, 0.0).tolist(),
        state_of_charge_mwh=soc.tolist(),
        solver="site plans",
    )


def deliverable_caps_mw(aggregate: PlanAggregate, node_index: int) -> tuple[FloatArray, FloatArray]:
    """GEN and LOAD caps per plan interval (MW, ≥ 0): ``max(P + D_low, 0)`` and ``max(−P + C_low, 0)``
    with ``P`` the planned battery power and ``D_low`` / ``C_low`` the flexibility lower bounds."""
    plan = _node_plan(aggregate, node_index)
    gen_cap = np.maximum(plan.battery_power_mw + plan.discharge_flexibility_low_mw, 0.0)
    load_cap = np.maximum(-plan.battery_power_mw + plan.charge_flexibility_low_mw, 0.0)
    return gen_cap, load_cap


def _keep_within(bands_kw: IntArray, cap_kw: IntArray, *, keep_low_prices_first: bool) -> IntArray:
    """Band kW kept under ``cap_kw`` per row, filling bands in price order from the kept end."""
    ordered = bands_kw if keep_low_prices_first else bands_kw[:, ::-1]
    before = np.cumsum(ordered, axis=1) - ordered
    kept: IntArray = np.clip(cap_kw[:, None] - before, 0, ordered)
    return kept if keep_low_prices_first else kept[:, ::-1]


@dataclass(frozen=True)
class _Trim:
    largest_cut_mw: float  # most MW taken off one side of one interval
    trimmed_intervals: int
    first_gen_mw: float
    first_load_mw: float


def _cap_energy_offers(bid: bid_pb2.Bid, gen_cap_mw: FloatArray, load_cap_mw: FloatArray, first_interval: datetime,
                       minutes: int, repeat: int) -> _Trim:
    """Cap the ENERGY GEN and LOAD period offers of ``bid`` in place (module docstring, 3)."""
    first_s = nem_time.to_timestamp(first_interval).seconds
    largest_cut_kw = 0
    trimmed: set[int] = set()
    firsts = {common_pb2.DIRECTION_GEN: 0.0, common_pb2.DIRECTION_LOAD: 0.0}
    for offer in bid.offers:
        if offer.product != ENERGY or offer.direction not in firsts:
            continue
        if len(offer.periods) == 0:
            continue
        is_gen = offer.direction == common_pb2.DIRECTION_GEN
        caps = gen_cap_mw if is_gen else load_cap_mw
        seconds = np.array([p.dispatch_interval.seconds for p in offer.periods], dtype=np.int64)
        step_s = minutes * 60
        dispatch_index = (seconds - first_s) // step_s
        plan_index = dispatch_index // repeat
        inside = ((seconds - first_s) % step_s == 0) & (dispatch_index >= 0) & (plan_index < len(caps))
        cap_mw = np.where(inside, caps[np.clip(plan_index, 0, len(caps) - 1)], 0.0)
        cap_kw = np.floor(cap_mw * _KW_PER_MW + 1e-6).astype(np.int64)
        bands_kw = np.rint(np.array([list(p.band_avail_mw) for p in offer.periods], dtype=np.float64)
                           * _KW_PER_MW).astype(np.int64)
        kept_kw = _keep_within(bands_kw, cap_kw, keep_low_prices_first=is_gen)
        cut = bands_kw.sum(axis=1) - kept_kw.sum(axis=1)
        largest_cut_kw = max(largest_cut_kw, int(cut.max(initial=0)))
        trimmed.update(np.flatnonzero(cut > 0).tolist())
        for period, row in zip(offer.periods, kept_kw, strict=True):
            period.band_avail_mw[:] = (row / _KW_PER_MW).tolist()
            period.max_avail_mw = int(row.sum()) / _KW_PER_MW
        firsts[offer.direction] = offer.periods[0].max_avail_mw
    return _Trim(largest_cut_kw / _KW_PER_MW, len(trimmed), firsts[common_pb2.DIRECTION_GEN],
                 firsts[common_pb2.DIRECTION_LOAD])


@dataclass(frozen=True)
class FleetBid:
    """The fleet unit's bid, or why there is none.

    Attributes:
        bid: the validated bid; None when it has violations (an invalid bid never leaves).
        violations: every violated rule (empty when valid).
        summary: one line for logs and the run's memo.
        plan: the node's plan on the dispatch grid the bid was built from (:func:`fleet_plan_result`), for
            the archive (its content hash is a natural ``plan_hash``).
        largest_cut_mw: the most MW taken off one side of one interval of the built bid to keep it within
            the fleet's deliverable bounds (0 when nothing had to go).
    """

    bid: bid_pb2.Bid | None
    violations: tuple[Violation, ...]
    summary: str
    largest_cut_mw: float
    plan: worker_pb2.OptimisationResult

    @property
    def is_valid(self) -> bool:
        """True when the bid may be submitted."""
        return self.bid is not None and not self.violations


def _explanation(aggregate: PlanAggregate, node_index: int, spec: common_pb2.BatterySpec, plan_hash: str,
                 dispatch_interval: datetime, plan_index: int, trim: _Trim, max_chars: int) -> str:
    power = float(aggregate.battery_power_mw.estimate[node_index, plan_index])
    action = (f"discharge {power:.3f} MW" if power > 0 else f"charge {-power:.3f} MW" if power < 0
              else "no battery dispatch")
    text = (f"Fleet availability rebid from {dispatch_interval:%H:%M}: {spec.unit_id} plan "
            f"{plan_hash[:8] or 'unhashed'} aggregates {int(aggregate.expected_sites[node_index]):,} home batteries "
            f"({int(aggregate.current_version_sites[node_index, plan_index]):,} on forecast "
            f"v{aggregate.current_version}, {int(aggregate.stale_version_sites[node_index, plan_index]):,} older, "
            f"{int(aggregate.estimated_sites[node_index, plan_index]):,} estimated) and sets {action}; offers at most "
            f"{trim.first_gen_mw:.3f} MW GEN / {trim.first_load_mw:.3f} MW LOAD, the fleet's deliverable "
            f"lower bounds")
    return text if len(text) <= max_chars else text[: max(max_chars - 3, 0)] + "..."


def build_fleet_bid(aggregate: PlanAggregate, node_index: int, spec: common_pb2.BatterySpec,
                    bidding: BiddingSettings, rules: MarketRules, *, dispatch_interval: datetime,
                    offer_time: datetime, version: int, plan_hash: str, event_time: datetime | None = None,
                    daily_band_prices: Mapping[tuple[str, int], Sequence[float]] | None = None) -> FleetBid:
    """Bid node ``node_index``'s aggregated plan as the unit ``spec`` (energy only; module docstring).

    ``dispatch_interval``: first interval of the bid (interval-ending AEST), inside the aggregate's window;
    ``offer_time`` (AEST) decides DAILY or REBID; ``version`` and ``plan_hash`` as for
    :func:`build_bid`; ``event_time`` (REBID) defaults to ``offer_time``; ``daily_band_prices`` (the
    prices in force for the day, $/MWh) let the validator check rule V4 too.

    Returns:
        :class:`FleetBid`: the bid when it passes :func:`validate_bid`, else no bid and the violations.

    Raises:
        FleetBidError: the window does not contain ``dispatch_interval``, or the node's figures cannot be
            bid (off-grid window, non-finite estimates); ValueError from :func:`build_bid` for ladders or a
            unit no bid can be made for.
    """
    minutes = rules.interval_minutes
    repeat = _sub_intervals(aggregate, minutes)
    plan = fleet_plan_result(aggregate, node_index, spec, interval_minutes=minutes)
    first_interval = nem_time.from_timestamp(plan.first_interval)
    offset = (dispatch_interval - first_interval) / timedelta(minutes=minutes)
    if offset != int(offset) or not 0 <= offset < plan.horizon_intervals:
        last = first_interval + timedelta(minutes=minutes * (plan.horizon_intervals - 1))
        raise FleetBidError(f"dispatch interval {dispatch_interval:%Y-%m-%d %H:%M} is not a dispatch interval of "
                            f"the aggregate's window {first_interval:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M}")
    initial_soc = fleet_initial_state_of_charge_mwh(aggregate, node_index, spec)
    bid = build_bid(plan, spec, bidding, rules, dispatch_interval=dispatch_interval, offer_time=offer_time,
                    version=version, fcas_products=(), initial_state_of_charge_mwh=initial_soc, plan_hash=plan_hash,
                    event_time=event_time)
    gen_cap, load_cap = deliverable_caps_mw(aggregate, node_index)
    trim = _cap_energy_offers(bid, gen_cap, load_cap, first_interval, minutes, repeat)
    plan_index = int(offset) // repeat
    if bid.entry_type == bid_pb2.ENTRY_TYPE_REBID:
        bid.rebid_explanation = _explanation(aggregate, node_index, spec, plan_hash, dispatch_interval, plan_index,
                                             trim, rules.rebid_explanation_max_chars)
    violations = tuple(validate_bid(bid, spec, rules, products=[ENERGY],
                                    daily_band_prices=daily_band_prices))
    intervals = len(bid.offers[0].periods) if bid.offers else 0
    head = (f"{spec.unit_id} {'REBID' if bid.entry_type == bid_pb2.ENTRY_TYPE_REBID else 'DAILY'} v{version} from "
            f"{dispatch_interval:%Y-%m-%d %H:%M}, {intervals} intervals: planned battery power "
            f"{float(aggregate.battery_power_mw.estimate[node_index, plan_index]):+.3f} MW, first interval "
            f"GEN ≤ {trim.first_gen_mw:.3f} MW / LOAD ≤ {trim.first_load_mw:.3f} MW; ")
    trimmed = (f"trimmed to the deliverable bounds in {trim.trimmed_intervals} interval(s), at most "
               f"{trim.largest_cut_mw:.3f} MW" if trim.largest_cut_mw > 0 else "nothing trimmed")
    if violations:
        reasons = "; ".join(str(v) for v in violations[:3]) + ("; ..." if len(violations) > 3 else "")
        return FleetBid(bid=None, violations=violations, largest_cut_mw=trim.largest_cut_mw, plan=plan,
                        summary=f"{head}{trimmed}; INVALID, not submitted: {reasons}")
    return FleetBid(bid=bid, violations=(), largest_cut_mw=trim.largest_cut_mw, plan=plan,
                    summary=f"{head}{trimmed}; valid")
