"""Where a backtest's depth-limited revenue falls short of depth-limited perfect foresight, service by service.

For each FCAS service and each decided interval (interval-ending AEST, ``h`` hours long, the service's price
π in $/MW/h), the realised depth-limited enablement ``r`` (MW) is set against perfect foresight's ``p`` (MW, the
depth-limited benchmark of :func:`backtest.engine.perfect_foresight_plan` over the same intervals). Where
``r < p`` the missing MW ``d = p − r`` are attributed, in this order, to the first cause that explains them:

1. **not offered** — the bid in force offered less than ``p`` (MAXAVAIL ``a``): ``u = min(d, p − a)``, split into
   *the expected depth* (the plan's expected cap ``e`` for the interval was below ``p``: ``min(u, p − e)``) and
   *the plan's choice* (the rest: the plan had room under its expected depth and gave it to energy, another
   service or stored energy);
2. **offered above the price** — offered, but in bands priced above π: ``min(d − u, min(a, p) − m)``, ``m`` the MW
   priced at or below π;
3. **capped by depth** — offered at price but the region's depth cap ``c`` was below ``p`` (perfect foresight
   has the same cap, so this stays 0 unless the caps differ);
4. **headroom** — the rest: offered at price and under the cap, but the trapezium at the energy dispatched or
   joint capacity with the other services (regulation first) left no room.

Where ``r > p`` the realised side earned more than perfect foresight in that interval (it used the capacity
differently): the **surplus**. Per service, realised − perfect foresight = surplus − (not offered + above the
price + capped by depth + headroom), to the cent. Energy is reported as the two totals. Dollars = MW × π × h.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import timedelta

import numpy as np
import numpy.typing as npt

from algorithms.common.products import ENERGY
from algorithms.market.prices import DispatchPrices
from backtest.engine import BacktestResult, DecisionRecord, depth_caps_window, perfect_foresight_plan
from backtest.ledger import contiguous_runs
from backtest.runs import segment_market
from settings import Settings

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ServiceIntervals:
    """One FCAS service over consecutive decided intervals (arrays of one length): the price ($/MW/h), perfect
    foresight's and the realised depth-limited enablement (MW), what the bid in force offered (MAXAVAIL, and the
    part priced at or below the price, MW), the region's depth cap (MW) and the depth the plan expected (MW,
    ``inf`` where it planned as a price-taker)."""

    price: FloatArray
    perfect_mw: FloatArray
    realised_mw: FloatArray
    offered_mw: FloatArray
    offered_at_price_mw: FloatArray
    depth_cap_mw: FloatArray
    expected_cap_mw: FloatArray


@dataclass(frozen=True)
class ServiceGap:
    """One service's depth-limited revenue ($) realised and of perfect foresight, and the gap by cause ($,
    module docstring): realised − perfect = surplus − (the four causes)."""

    product: str
    realised_dollars: float
    perfect_dollars: float
    surplus_dollars: float
    not_offered_expected_depth_dollars: float
    not_offered_plan_dollars: float
    above_price_dollars: float
    capped_by_depth_dollars: float
    headroom_dollars: float

    @property
    def gap_dollars(self) -> float:
        """Perfect foresight − realised ($)."""
        return self.perfect_dollars - self.realised_dollars

    def __add__(self, other: ServiceGap) -> ServiceGap:
        if other.product != self.product:
            raise ValueError(f"cannot add {other.product} to {self.product}")
        values = {f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self) if f.name != "product"}
        return ServiceGap(product=self.product, **values)


def service_gap(product: str, intervals: ServiceIntervals, interval_hours: float) -> ServiceGap:
    """The :class:`ServiceGap` of ``product`` over ``intervals`` (``interval_hours`` hours each). Pure."""
    p = np.maximum(intervals.perfect_mw, 0.0)
    r = np.maximum(intervals.realised_mw, 0.0)
    value = np.where(np.isfinite(intervals.price), intervals.price, 0.0) * interval_hours
    missing = np.maximum(p - r, 0.0)
    not_offered = np.minimum(missing, np.maximum(p - intervals.offered_mw, 0.0))
    expected = np.where(np.isfinite(intervals.expected_cap_mw), intervals.expected_cap_mw, np.inf)
    by_expected_depth = np.minimum(not_offered, np.maximum(p - expected, 0.0))
    left = missing - not_offered
    above_price = np.minimum(left, np.maximum(np.minimum(intervals.offered_mw, p) - intervals.offered_at_price_mw,
                                              0.0))
    left = left - above_price
    cap = np.where(np.isfinite(intervals.depth_cap_mw), intervals.depth_cap_mw, np.inf)
    by_depth = np.minimum(left, np.maximum(np.minimum(intervals.offered_at_price_mw, p) - cap, 0.0))
    headroom = left - by_depth

    def dollars(mw: FloatArray) -> float:
        return math.fsum((mw * value).tolist())

    return ServiceGap(product=product, realised_dollars=dollars(r), perfect_dollars=dollars(p),
                      surplus_dollars=dollars(np.maximum(r - p, 0.0)),
                      not_offered_expected_depth_dollars=dollars(by_expected_depth),
                      not_offered_plan_dollars=dollars(not_offered - by_expected_depth),
                      above_price_dollars=dollars(above_price), capped_by_depth_dollars=dollars(by_depth),
                      headroom_dollars=dollars(headroom))


@dataclass(frozen=True)
class MonthGap:
    """A month and region's depth-limited gap: energy revenue ($) realised and of perfect foresight, the
    end-of-run charge ($, ≤ 0) and each FCAS service's :class:`ServiceGap`, in the data's product order."""

    month: str
    region: str
    realised_energy_dollars: float
    perfect_energy_dollars: float
    end_of_run_dollars: float
    services: tuple[ServiceGap, ...]

    @property
    def realised_dollars(self) -> float:
        """Energy + depth-limited FCAS + the end-of-run charge ($)."""
        return (self.realised_energy_dollars + self.end_of_run_dollars
                + math.fsum(s.realised_dollars for s in self.services))

    @property
    def perfect_dollars(self) -> float:
        """Perfect foresight, energy + depth-limited FCAS ($)."""
        return self.perfect_energy_dollars + math.fsum(s.perfect_dollars for s in self.services)


def _by_product(records: Sequence[DecisionRecord], product: str, attribute: str, missing: float) -> FloatArray:
    values: list[float] = []
    for record in records:
        held: Mapping[str, float] | None = getattr(record, attribute)
        values.append(missing if held is None else float(held.get(product, missing)))
    return np.asarray(values, dtype=np.float64)


def result_gaps(settings: Settings, market: DispatchPrices, result: BacktestResult,
                ) -> tuple[float, float, list[ServiceGap]]:
    """(realised energy $, perfect-foresight energy $, the services' gaps) of one backtest, against the
    depth-limited perfect foresight of each run of consecutive decided intervals (as the regimes table
    benchmarks it). Raises BacktestError where the data has no depth for the intervals."""
    hours = settings.market.interval_minutes / 60.0
    step = timedelta(minutes=settings.market.interval_minutes)
    records = list(result.records)
    position = {record.dispatch_interval: index for index, record in enumerate(records)}
    perfect_energy = 0.0
    gaps: dict[str, ServiceGap] = {}
    for first, count in contiguous_runs([record.dispatch_interval for record in records]):
        window = segment_market(market, result.region, first, count)
        plan, prices = perfect_foresight_plan(settings, window, result.region, first, count, True,
                                              depth_limited=True)
        caps = depth_caps_window(settings, window, result.region, first, count) or {}
        perfect_energy += float(np.sum(hours * prices[ENERGY] * (settings.battery.mlf_gen * plan.gen_mw
                                                                 - settings.battery.mlf_load * plan.load_mw)))
        chosen = [records[position[first + step * k]] for k in range(count)]
        for product, enabled in plan.fcas.items():
            intervals = ServiceIntervals(
                price=np.asarray(prices[product], dtype=np.float64),
                perfect_mw=np.asarray(enabled, dtype=np.float64),
                realised_mw=_by_product(chosen, product, "depth_fcas_enabled_by_product_mw", 0.0),
                offered_mw=_by_product(chosen, product, "fcas_offered_by_product_mw", 0.0),
                offered_at_price_mw=_by_product(chosen, product, "fcas_offered_at_price_by_product_mw", 0.0),
                depth_cap_mw=np.asarray(caps.get(product, np.full(count, np.inf)), dtype=np.float64),
                expected_cap_mw=_by_product(chosen, product, "expected_cap_by_product_mw", math.inf))
            gap = service_gap(product, intervals, hours)
            gaps[product] = gaps[product] + gap if product in gaps else gap
    realised_energy = math.fsum(record.energy_revenue_dollars for record in records)
    return realised_energy, perfect_energy, list(gaps.values())


def month_gap(settings: Settings, market: DispatchPrices, month: str, region: str,
              results: Sequence[BacktestResult], end_of_run_dollars: float) -> MonthGap:
    """The :class:`MonthGap` of a month's stretches (:func:`result_gaps` summed; ``end_of_run_dollars`` their
    end-of-run charge, $)."""
    energy = perfect = 0.0
    services: dict[str, ServiceGap] = {}
    for result in results:
        realised_energy, perfect_energy, gaps = result_gaps(settings, market, result)
        energy += realised_energy
        perfect += perfect_energy
        for gap in gaps:
            services[gap.product] = services[gap.product] + gap if gap.product in services else gap
    return MonthGap(month=month, region=region, realised_energy_dollars=energy, perfect_energy_dollars=perfect,
                    end_of_run_dollars=end_of_run_dollars, services=tuple(services.values()))


GAP_COLUMNS = ("month", "region", "service", "realised", "perfect foresight", "gap", "not offered: expected depth",
               "not offered: plan", "offered above price", "capped by depth", "headroom", "surplus")


def _money(value: float) -> str:
    return f"−${abs(value):,.0f}" if value < -0.5 else f"${abs(value):,.0f}"


def gap_rows(gap: MonthGap) -> list[tuple[str, ...]]:
    """The table rows of one month (:data:`GAP_COLUMNS`): energy (with the end-of-run charge), each service, the
    total. Dollars rounded to $1."""
    rows: list[tuple[str, ...]] = [(
        gap.month, gap.region, "ENERGY (with the end-of-run charge)",
        _money(gap.realised_energy_dollars + gap.end_of_run_dollars), _money(gap.perfect_energy_dollars),
        _money(gap.perfect_energy_dollars - gap.realised_energy_dollars - gap.end_of_run_dollars),
        "", "", "", "", "", "")]
    for service in gap.services:
        rows.append((gap.month, gap.region, service.product, _money(service.realised_dollars),
                     _money(service.perfect_dollars), _money(service.gap_dollars),
                     _money(service.not_offered_expected_depth_dollars), _money(service.not_offered_plan_dollars),
                     _money(service.above_price_dollars), _money(service.capped_by_depth_dollars),
                     _money(service.headroom_dollars), _money(service.surplus_dollars)))
    total = ServiceGap("all FCAS", *(math.fsum(getattr(s, f.name) for s in gap.services)
                                     for f in fields(ServiceGap) if f.name != "product"))
    rows.append((gap.month, gap.region, "all FCAS", _money(total.realised_dollars), _money(total.perfect_dollars),
                 _money(total.gap_dollars), _money(total.not_offered_expected_depth_dollars),
                 _money(total.not_offered_plan_dollars), _money(total.above_price_dollars),
                 _money(total.capped_by_depth_dollars), _money(total.headroom_dollars),
                 _money(total.surplus_dollars)))
    capture = gap.realised_dollars / gap.perfect_dollars if gap.perfect_dollars > 0 else math.nan
    rows.append((gap.month, gap.region, f"total (capture {capture:.1%})", _money(gap.realised_dollars),
                 _money(gap.perfect_dollars), _money(gap.perfect_dollars - gap.realised_dollars),
                 "", "", "", "", "", ""))
    return rows


def gap_markdown(gaps: Sequence[MonthGap]) -> str:
    """The gap table of ``gaps`` as Markdown (one block of rows per month)."""
    lines = ["| " + " | ".join(GAP_COLUMNS) + " |",
             "| " + " | ".join("---" if i < 3 else "---:" for i in range(len(GAP_COLUMNS))) + " |"]
    lines += ["| " + " | ".join(row) + " |" for gap in gaps for row in gap_rows(gap)]
    return "\n".join(lines) + "\n"

